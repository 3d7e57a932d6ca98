-- The product catalog, one item per product (ids are [A-Za-z0-9_-], as Braze catalogs require).
select
    product_id,
    name,
    category,
    price::double as price,
    in_stock,
    tags
from {{ ref('products') }}
