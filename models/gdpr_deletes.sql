-- Customers who asked to be forgotten: their Braze profiles are deleted.
select
    customer_id,
    min(requested_at) as requested_at
from {{ ref('gdpr_requests') }}
group by customer_id
