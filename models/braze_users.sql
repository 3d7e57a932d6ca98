-- One row per active customer: the Braze profile, order aggregates, nested preferences.
-- Customers marked for deletion (GDPR) are left out; so are customers with fewer than
-- `min_orders` orders (a project var).
with order_totals as (
    select customer_id,
           count(*) as orders_count,
           sum(total) as lifetime_value,
           max(ordered_at) as last_order_at
    from {{ ref('orders') }}
    where status <> 'cancelled'
    group by customer_id
),

category_units as (
    select o.customer_id, p.category, sum(i.quantity) as units
    from {{ ref('order_items') }} as i
    join {{ ref('orders') }} as o on o.order_id = i.order_id
    join {{ ref('products') }} as p on p.product_id = i.product_id
    where o.status <> 'cancelled'
    group by o.customer_id, p.category
),

favourites as (
    select customer_id,
           list(category order by units desc, category)[1:3] as favourite_categories
    from category_units
    group by customer_id
)

select
    c.customer_id,
    c.email,
    c.first_name,
    c.last_name,
    c.phone,
    c.country,
    c.language,
    c.dob,
    c.gender,
    c.loyalty_tier,
    coalesce(t.lifetime_value, 0)::double as lifetime_value,
    coalesce(t.orders_count, 0)::integer as orders_count,
    t.last_order_at,
    c.preferences,
    f.favourite_categories,
    case
        when c.marketing_opt_in then 'opted_in'
        when not c.marketing_opt_in then 'unsubscribed'
        else 'subscribed'
    end as email_subscribe
from {{ ref('customers') }} as c
left join order_totals as t on t.customer_id = c.customer_id
left join favourites as f on f.customer_id = c.customer_id
where not c.deleted
  and c.customer_id not in (select customer_id from {{ ref('gdpr_requests') }})
  and coalesce(t.orders_count, 0) >= {{ var('min_orders', 1) }}
