-- The high-value cohort: active customers in the gold or platinum loyalty tier. One row per member;
-- the cohort sync sends only who entered (a new row) and who left (a row gone since the last run).
select customer_id
from {{ ref('customers') }}
where not deleted and loyalty_tier in ('gold', 'platinum')
