-- Newsletter subscription state for every synced user.
select
    c.customer_id,
    c.newsletter_opt_in as subscribed
from {{ ref('customers') }} as c
where c.customer_id in (select customer_id from {{ ref('braze_users') }})
