-- One Braze purchase per order line, for synced users only.
select
    i.order_id || '-' || cast(i.line_no as varchar) as purchase_key,
    o.customer_id,
    i.product_id,
    o.currency,
    i.unit_price::double as price,
    i.quantity,
    o.ordered_at as purchased_at,
    i.order_id
from {{ ref('order_items') }} as i
join {{ ref('orders') }} as o on o.order_id = i.order_id
where o.status <> 'cancelled'
  and o.customer_id in (select customer_id from {{ ref('braze_users') }})
