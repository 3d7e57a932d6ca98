"""The example project's warehouse: a small, deterministic shop (customers, products, orders),
and a mutation that changes it a little so incremental runs have something to show.

    python -m engine.example build  [--path warehouse.duckdb] [--customers 2000] [--seed 42]
    python -m engine.example mutate [--path warehouse.duckdb] [--step 1] [--seed 7]

Same arguments, same data: every value comes from `random.Random(seed)` and a fixed base time.
"""

from __future__ import annotations

import argparse
import os
import random
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from engine.errors import ReflowError, UserError, WarehouseError

BASE = datetime(2026, 1, 1)          # "now" of the generated history; never the wall clock
PRODUCTS = 100
DOMAINS = ("example.com", "example.net", "example.org")
FIRST = ("Olivia", "Liam", "Emma", "Noah", "Sofía", "Mateo", "Léa", "Lucas", "Mia", "Ben", "Hannah",
         "Jonas", "Yuki", "Haruto", "Chloé", "Louis", "Giulia", "Leonardo", "Ana", "João", "Zoë",
         "Ava", "Ethan", "Isla", "Oscar", "Amelia", "Jack", "Emily", "Daan", "Fenna", "Aiko", "Omar")
LAST = ("Smith", "Johnson", "García", "Müller", "Martin", "Rossi", "Silva", "Tanaka", "Brown",
        "Dubois", "Schmidt", "López", "Jones", "de Vries", "Wilson", "Sato", "O'Brien", "Costa",
        "Taylor", "Moreau", "Fischer", "Romano", "Walker", "Suzuki", "Kim", "Nguyen", "Hernández")
# country, language, weight, E.164 calling code + mobile prefix, remaining national digits
COUNTRIES = (("US", "en", 30, "+1", 10), ("GB", "en", 10, "+447", 9), ("CA", "en", 5, "+1", 10),
             ("DE", "de", 10, "+4915", 9), ("FR", "fr", 8, "+336", 8), ("ES", "es", 7, "+346", 8),
             ("MX", "es", 6, "+5255", 8), ("BR", "pt", 8, "+55119", 8), ("JP", "ja", 6, "+8190", 8),
             ("AU", "en", 5, "+614", 8), ("IT", "it", 3, "+393", 9), ("NL", "nl", 2, "+316", 8))
TIERS = ("bronze", "silver", "gold", "platinum")
CATEGORIES = ("apparel", "footwear", "outdoor", "home", "kitchen", "beauty", "electronics", "books")
NOUNS = {"apparel": ("Tee", "Hoodie", "Jacket"), "footwear": ("Sneaker", "Boot", "Sandal"),
         "outdoor": ("Tent", "Backpack", "Lantern"), "home": ("Lamp", "Throw", "Vase"),
         "kitchen": ("Skillet", "Kettle", "Knife Set"), "beauty": ("Serum", "Balm", "Cleanser"),
         "electronics": ("Headphones", "Speaker", "Charger"), "books": ("Cookbook", "Novel", "Atlas")}
ADJECTIVES = ("Classic", "Everyday", "Alpine", "Urban", "Coastal", "Nordic", "Pro", "Lite", "Heritage")
TAGS = ("new", "sale", "bestseller", "eco", "limited", "gift")

PREFERENCES = "STRUCT(channel VARCHAR, categories VARCHAR[], push BOOLEAN)"
TABLES = {
    "customers": [("customer_id", "VARCHAR"), ("first_name", "VARCHAR"), ("last_name", "VARCHAR"),
                  ("email", "VARCHAR"), ("phone", "VARCHAR"), ("country", "VARCHAR"),
                  ("language", "VARCHAR"), ("dob", "DATE"), ("gender", "VARCHAR"),
                  ("signup_at", "TIMESTAMP"), ("loyalty_tier", "VARCHAR"), ("newsletter_opt_in", "BOOLEAN"),
                  ("marketing_opt_in", "BOOLEAN"), ("preferences", PREFERENCES), ("deleted", "BOOLEAN"),
                  ("updated_at", "TIMESTAMP")],
    "products": [("product_id", "VARCHAR"), ("name", "VARCHAR"), ("category", "VARCHAR"),
                 ("price", "DECIMAL(10,2)"), ("currency", "VARCHAR"), ("in_stock", "BOOLEAN"),
                 ("tags", "VARCHAR[]")],
    "orders": [("order_id", "VARCHAR"), ("customer_id", "VARCHAR"), ("ordered_at", "TIMESTAMP"),
               ("status", "VARCHAR"), ("total", "DECIMAL(10,2)"), ("currency", "VARCHAR"),
               ("channel", "VARCHAR")],
    "order_items": [("order_id", "VARCHAR"), ("line_no", "INTEGER"), ("product_id", "VARCHAR"),
                    ("quantity", "INTEGER"), ("unit_price", "DECIMAL(10,2)")],
    "gdpr_requests": [("customer_id", "VARCHAR"), ("requested_at", "TIMESTAMP")],
}

Row = dict[str, Any]


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Row]) -> None:
    """Insert many rows in one statement: each column is bound as one list and unnested in SQL."""
    if rows:
        select = ", ".join(f"unnest(?::{typ}[]) AS {name}" for name, typ in TABLES[table])
        con.execute(f"INSERT INTO {table} BY NAME SELECT {select}",
                    [[row[name] for row in rows] for name, _ in TABLES[table]])


def _money(cents: int) -> Decimal:
    return Decimal(cents) / 100


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _customer(rng: random.Random, n: int, signup_at: datetime) -> Row:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    country, language, _, prefix, digits = rng.choices(COUNTRIES, weights=[c[2] for c in COUNTRIES])[0]
    phone = None
    if rng.random() < 0.85:
        phone = prefix + str(rng.randint(2, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(digits - 1))
    dob = date(1950, 1, 1) + timedelta(days=rng.randrange(56 * 365))
    prefs = {"channel": rng.choice(("email", "push", "sms", "in_app")),
             "categories": sorted(rng.sample(CATEGORIES, rng.randint(0, 3))), "push": rng.random() < 0.6}
    marketing = rng.choices((True, False, None), weights=(55, 25, 20))[0]
    updated_at = signup_at + (BASE - signup_at) * rng.random() if signup_at < BASE else signup_at
    return {"customer_id": f"c_{n:05d}", "first_name": first, "last_name": last,
            "email": f"{_ascii(first)}.{_ascii(last)}{n}@{rng.choice(DOMAINS)}", "phone": phone,
            "country": country, "language": language, "dob": dob,
            "gender": rng.choices("MFONP", weights=(45, 45, 3, 3, 4))[0], "signup_at": signup_at,
            "loyalty_tier": rng.choices(TIERS, weights=(50, 30, 15, 5))[0],
            "newsletter_opt_in": rng.random() < 0.4, "marketing_opt_in": marketing, "preferences": prefs,
            "deleted": False, "updated_at": updated_at.replace(microsecond=0)}


def _product(rng: random.Random, n: int) -> Row:
    category = rng.choice(CATEGORIES)
    cents = rng.randint(4, 240) * 100 + rng.choice((0, 49, 99))
    return {"product_id": f"sku_{n:04d}", "name": f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS[category])}",
            "category": category, "price": _money(cents), "currency": "USD", "in_stock": rng.random() < 0.9,
            "tags": sorted(rng.sample(TAGS, rng.randint(0, 3)))}


def _order(rng: random.Random, customer_id: str, ordered_at: datetime,
           prices: dict[str, int]) -> tuple[Row, list[Row]]:
    """One order without its id (filled in later) and its items; the total is the sum of the items."""
    skus = rng.sample(sorted(prices), rng.choices((1, 2, 3, 4), weights=(40, 30, 20, 10))[0])
    quantities = [rng.choices((1, 2, 3, 4, 5), weights=(60, 20, 10, 6, 4))[0] for _ in skus]
    items = [{"line_no": line, "product_id": sku, "quantity": qty, "unit_price": _money(prices[sku])}
             for line, (sku, qty) in enumerate(zip(skus, quantities, strict=True), start=1)]
    order = {"customer_id": customer_id, "ordered_at": ordered_at.replace(microsecond=0),
             "status": rng.choices(("completed", "cancelled", "refunded"), weights=(92, 5, 3))[0],
             "total": _money(sum(q * prices[sku] for sku, q in zip(skus, quantities, strict=True))),
             "currency": "USD",
             "channel": rng.choices(("web", "ios", "android", "store"), weights=(45, 25, 20, 10))[0]}
    return order, items


def _store_orders(con: duckdb.DuckDBPyConnection, orders: list[tuple[Row, list[Row]]], first_id: int) -> int:
    """Number orders by time (then customer) from `first_id`, insert them and their items."""
    orders.sort(key=lambda o: (o[0]["ordered_at"], o[0]["customer_id"]))
    order_rows: list[Row] = []
    item_rows: list[Row] = []
    for n, (order, items) in enumerate(orders, start=first_id):
        order_id = f"o_{n:07d}"
        order_rows.append({"order_id": order_id, **order})
        item_rows.extend({"order_id": order_id, **item} for item in items)
    _insert(con, "orders", order_rows)
    _insert(con, "order_items", item_rows)
    return len(item_rows)


def _counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


def build_warehouse(path: Path, *, customers: int = 2000, seed: int = 42) -> dict[str, int]:
    """(Re)create the example warehouse at `path`; returns row counts per table.

    Written to a temporary file and renamed, so a crash never leaves half a warehouse."""
    if customers < 1:
        raise UserError(f"--customers must be at least 1 (got {customers})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    for stale in (tmp, Path(f"{tmp}.wal")):
        stale.unlink(missing_ok=True)
    rng = random.Random(seed)
    span = int((BASE - datetime(2022, 1, 1)).total_seconds())
    people = [_customer(rng, n, BASE - timedelta(seconds=rng.randrange(span)))
              for n in range(1, customers + 1)]
    products = [_product(rng, n) for n in range(1, PRODUCTS + 1)]
    prices = {p["product_id"]: int(p["price"] * 100) for p in products}
    orders = []
    for person in people:
        signup_at = person["signup_at"]
        for _ in range(0 if rng.random() < 0.03 else rng.randint(1, 14)):
            orders.append(_order(rng, person["customer_id"], signup_at + (BASE - signup_at) * rng.random(), prices))
    requests = []
    for i in sorted(rng.sample(range(customers), min(5, customers))):   # asked to be forgotten
        people[i]["deleted"] = True
        requests.append({"customer_id": people[i]["customer_id"],
                         "requested_at": BASE - timedelta(days=rng.randint(1, 20), seconds=rng.randrange(86400))})
    try:
        with duckdb.connect(str(tmp)) as con:
            for table, cols in TABLES.items():
                con.execute(f"CREATE TABLE {table} ({', '.join(f'{n} {t}' for n, t in cols)})")
            con.execute("ALTER TABLE customers ALTER COLUMN deleted SET DEFAULT false")
            con.execute("BEGIN")
            _insert(con, "customers", people)
            _insert(con, "products", products)
            _store_orders(con, orders, 1)
            _insert(con, "gdpr_requests", requests)
            con.execute("COMMIT")
            counts = _counts(con)
            con.execute("CHECKPOINT")
        Path(f"{path}.wal").unlink(missing_ok=True)
        os.replace(tmp, path)
    except duckdb.Error as exc:
        tmp.unlink(missing_ok=True)
        raise WarehouseError(f"could not build the example warehouse at {path}: {exc}") from exc
    return counts


def _change(rng: random.Random, row: tuple[Any, ...], step: int) -> tuple[Any, ...]:
    """One or two realistic edits to a customer: tier, email, a preference, newsletter opt-in."""
    _, tier, email, prefs, newsletter = row
    prefs = dict(prefs)
    for what in rng.sample(("tier", "email", "push", "newsletter"), rng.randint(1, 2)):
        if what == "tier":
            i = TIERS.index(tier)
            tier = TIERS[i + 1] if i == 0 or (i < 3 and rng.random() < 0.7) else TIERS[i - 1]
        elif what == "email":
            local, domain = email.split("@")
            email = f"{local.split('+')[0]}+s{step}@{rng.choice([d for d in DOMAINS if d != domain])}"
        elif what == "push":
            prefs["push"] = not prefs["push"]
        else:
            newsletter = not newsletter
    return tier, email, prefs, newsletter


def _next_number(con: duckdb.DuckDBPyConnection, column: str, tables: Sequence[str]) -> int:
    """One past the highest number used in ids like `c_00042` anywhere, so no id is ever reused."""
    union = " UNION ALL ".join(f"SELECT {column} FROM {t}" for t in tables)
    sql = f"SELECT coalesce(max(CAST(split_part({column}, '_', 2) AS INTEGER)), 0) + 1 FROM ({union})"
    return int(con.execute(sql).fetchone()[0])  # type: ignore[index]


def mutate_warehouse(path: Path, *, seed: int = 7, step: int = 1) -> dict[str, int]:
    """Change the warehouse a little, deterministically for (seed, step, current data).

    About 3% of customers edit a field or two, 1% leave, 0.5% arrive (with a first order), orders
    grow by about 2%, two products change price, one is removed and one added, and two customers
    ask to be deleted (GDPR). Returns what changed."""
    path = Path(path)
    if not path.exists():
        raise WarehouseError(f"no warehouse at {path}: build it first (`reflow example build`)")
    rng = random.Random(seed * 1_000_003 + step)
    day = BASE + timedelta(days=step)

    def at() -> datetime:
        return day + timedelta(seconds=rng.randrange(86400))

    try:
        with duckdb.connect(str(path)) as con:
            con.execute("BEGIN")
            next_customer = _next_number(con, "customer_id", ("customers", "orders", "gdpr_requests"))
            next_sku = _next_number(con, "product_id", ("products", "order_items"))
            next_order = _next_number(con, "order_id", ("orders",))
            n_orders = int(con.execute("SELECT count(*) FROM orders").fetchone()[0])  # type: ignore[index]

            # customers: some edit their profile, some leave, two ask for deletion, a few arrive
            active = [r[0] for r in con.execute(
                "SELECT customer_id FROM customers WHERE NOT deleted ORDER BY customer_id").fetchall()]
            n = len(active)
            k_removed, k_changed = max(1, round(n * 0.01)), max(1, round(n * 0.03))
            picked = rng.sample(active, min(n, k_removed + k_changed + 2))
            removed, changed = picked[:k_removed], picked[k_removed:k_removed + k_changed]
            gdpr = picked[k_removed + k_changed:]
            rows = con.execute("SELECT customer_id, loyalty_tier, email, preferences, newsletter_opt_in "
                               "FROM customers WHERE list_contains(?, customer_id) ORDER BY customer_id",
                               [changed]).fetchall()
            for row in rows:
                con.execute(f"UPDATE customers SET loyalty_tier = ?, email = ?, preferences = ?::{PREFERENCES}, "
                            "newsletter_opt_in = ?, updated_at = ? WHERE customer_id = ?",
                            [*_change(rng, row, step), at(), row[0]])
            con.execute("DELETE FROM customers WHERE list_contains(?, customer_id)", [removed])
            con.execute("UPDATE customers SET deleted = true, updated_at = ? WHERE list_contains(?, customer_id)",
                        [day, gdpr])
            _insert(con, "gdpr_requests", [{"customer_id": c, "requested_at": at()} for c in sorted(gdpr)])
            arrivals = [_customer(rng, next_customer + i, at()) for i in range(max(1, round(n * 0.005)))]
            _insert(con, "customers", arrivals)

            # products: two change price, one is discontinued, one is launched
            skus = [r[0] for r in con.execute("SELECT product_id FROM products ORDER BY product_id").fetchall()]
            discontinued, *repriced = rng.sample(skus, 3)
            for sku in repriced:
                con.execute("UPDATE products SET price = round(price * ?, 2) WHERE product_id = ?",
                            [rng.choice((0.85, 0.9, 1.1, 1.2)), sku])
            con.execute("DELETE FROM products WHERE product_id = ?", [discontinued])
            _insert(con, "products", [_product(rng, next_sku)])

            # orders: every arrival buys once, and ~2% more orders from customers who stayed
            prices = {sku: int(p * 100) for sku, p in con.execute("SELECT product_id, price FROM products").fetchall()}
            left = set(removed) | set(gdpr)
            staying = [c for c in active if c not in left]
            buyers = [a["customer_id"] for a in arrivals]
            buyers += rng.choices(staying, k=max(1, round(n_orders * 0.02))) if staying else []
            orders = [_order(rng, c, at(), prices) for c in buyers]
            new_items = _store_orders(con, orders, next_order)
            con.execute("COMMIT")
    except duckdb.Error as exc:
        raise WarehouseError(f"could not mutate the example warehouse at {path}: {exc}") from exc
    return {"changed_customers": len(rows), "removed_customers": len(removed),
            "new_customers": len(arrivals), "new_gdpr_requests": len(gdpr), "new_orders": len(orders),
            "new_order_items": new_items, "repriced_products": len(repriced), "removed_products": 1,
            "new_products": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.example", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="(re)create the example warehouse")
    build.add_argument("--path", type=Path, default=Path("warehouse.duckdb"))
    build.add_argument("--customers", type=int, default=2000)
    build.add_argument("--seed", type=int, default=42)
    mutate = sub.add_parser("mutate", help="change the example warehouse a little")
    mutate.add_argument("--path", type=Path, default=Path("warehouse.duckdb"))
    mutate.add_argument("--step", type=int, default=1)
    mutate.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            result = build_warehouse(args.path, customers=args.customers, seed=args.seed)
        else:
            result = mutate_warehouse(args.path, seed=args.seed, step=args.step)
    except ReflowError as exc:
        print(f"error: {exc.message}")
        return 1
    print(f"{args.command} {args.path}: " + ", ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
