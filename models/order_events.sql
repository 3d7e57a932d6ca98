-- One `order_placed` event per order (the order id is the event's key), for synced users only:
-- an event for a user who is not in Braze, or who asked to be deleted, would create a profile.
select
    o.order_id,
    o.customer_id,
    o.ordered_at,
    o.total::double as total,
    o.channel,
    sum(i.quantity)::integer as item_count
from {{ ref('orders') }} as o
join {{ ref('order_items') }} as i on i.order_id = o.order_id
where o.status <> 'cancelled'
  and o.customer_id in (select customer_id from {{ ref('braze_users') }})
group by o.order_id, o.customer_id, o.ordered_at, o.total, o.channel
