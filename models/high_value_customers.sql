-- The high-value cohort: gold and platinum customers who have a Braze profile (the braze_users sync's
-- rule: active, no GDPR request, at least `min_orders` orders). One row per member; the cohort sync
-- sends only who entered (a new row) and who left (a row gone since the last run). A member Braze has no user for would wait
-- for one (missing_users: wait), so the audience is modelled on the synced users.
select c.customer_id
from {{ ref('customers') }} as c
join (select customer_id from {{ ref('orders') }} where status <> 'cancelled'
      group by customer_id having count(*) >= {{ var('min_orders', 1) }}) as o using (customer_id)
where not c.deleted and c.loyalty_tier in ('gold', 'platinum')
  and c.customer_id not in (select customer_id from {{ ref('gdpr_requests') }})
