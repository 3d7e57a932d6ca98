"""Shared checks for end-to-end tests: what the models say vs what landed in the sandbox.

Used by tests/e2e (exactly once), tests/chaos and tests/reliability (faults, interruptions), which
also need the extra copies of append-only rows (events, purchases) to compare with a bound; and
`rows_as_sent`, a plan's rows as shown and as sent, by the fast-path tests of tests/unit.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

SUBSCRIPTION_GROUP = "5b7b9a4e-1c43-4e7a-9f3b-2d5f0c8e1a11"


def model_rows(project: Path, model: str) -> list[dict[str, Any]]:
    """Rows of a model of the project, as the planner would read them."""
    from engine.project import load_project
    from engine.warehouse.duckdb import DuckDBWarehouse

    proj = load_project(project)
    wh = DuckDBWarehouse(proj)
    sql = wh.render(proj, model).sql
    con = duckdb.connect(":memory:")
    wh.attach(con)
    cur = con.execute(f"select * from ({sql})")
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    con.close()
    return rows


def plan_json(cli: Any, *args: str) -> dict[str, Any]:
    code, out, err = cli("plan", "--json", *args)
    assert code == 0, err
    return json.loads(out)


@dataclass(frozen=True)
class Extras:
    """Copies beyond the first of append-only rows, by order id (events) and order id (purchase lines)."""

    events: Counter[str]
    purchases: Counter[str]

    @property
    def total(self) -> int:
        return sum(self.events.values()) + sum(self.purchases.values())


def append_only_extras(project: Path, sandbox: Any) -> Extras:
    """Every model event/purchase landed at least once; returns the extra copies (0 when exactly once)."""
    sent_events = Counter(e["properties"]["order_id"] for e in sandbox.events())
    model_events = {r["order_id"] for r in model_rows(project, "order_events")}
    missing = model_events - set(sent_events)
    assert not missing, f"{len(missing)} event(s) never landed, e.g. {sorted(missing)[:3]}"
    sent_lines = Counter(p["properties"]["order_id"] for p in sandbox.purchases())
    model_lines = Counter(r["order_id"] for r in model_rows(project, "purchases"))
    short = {k for k, n in model_lines.items() if sent_lines.get(k, 0) < n}
    assert not short, f"{len(short)} order(s) miss purchase lines, e.g. {sorted(short)[:3]}"
    # rows that left the model since (departed customers) stay in Braze as history: only count
    # copies beyond one per model row
    events = Counter({k: n - 1 for k, n in sent_events.items() if n > 1})
    purchases = Counter({k: sent_lines[k] - n for k, n in model_lines.items() if sent_lines[k] > n})
    return Extras(events, purchases)


def assert_in_step(project: Path, sandbox: Any, *, exactly_once: bool = True) -> Extras:
    """Profiles, deletions, catalog items and subscription states equal what the models say;
    events and purchases all landed, exactly once unless `exactly_once=False` (the extras are returned).
    """
    users = {r["customer_id"]: r for r in model_rows(project, "braze_users")}
    for cid, row in users.items():
        profile = sandbox.user(cid)
        assert profile is not None, cid
        attrs = profile["custom_attributes"]
        assert profile.get("email") == row["email"]
        assert profile.get("first_name") == row["first_name"]
        assert profile.get("country") == row["country"]
        assert attrs["loyalty_tier"] == row["loyalty_tier"]
        assert attrs.get("orders_count") == row["orders_count"]
        assert attrs.get("lifetime_value") == pytest.approx(row["lifetime_value"])
        assert attrs.get("preferences") == row["preferences"]
    deleted = {r["customer_id"] for r in model_rows(project, "gdpr_deletes")}
    assert all(sandbox.user(cid) is None for cid in deleted)
    extras = append_only_extras(project, sandbox)
    if exactly_once:
        assert not extras.events, f"events recorded twice: {dict(list(extras.events.items())[:5])}"
        assert not extras.purchases, f"purchase lines recorded twice: {dict(list(extras.purchases.items())[:5])}"
    items = {i["id"]: i for i in sandbox.catalog_items("products") or []}
    products = {r["product_id"]: r for r in model_rows(project, "catalog_products")}
    assert set(items) == set(products), sorted(set(items) ^ set(products))
    assert all(items[k]["price"] == pytest.approx(products[k]["price"]) for k in products)
    for r in model_rows(project, "newsletter_subscriptions"):
        profile = sandbox.user(r["customer_id"])
        assert profile is not None, r
        state = (profile.get("subscription_groups") or {}).get(SUBSCRIPTION_GROUP)
        assert state == ("subscribed" if r["subscribed"] else "unsubscribed"), r
    return extras


def rows_as_sent(state: Any, plan: Any) -> list[tuple[Any, ...]]:
    """The plan's rows (key, op, status, channel, item, data points, reason) as the plan shows them and,
    the same, as apply sends them: a first run's rows held by the plan are written as plan rows first."""
    from engine.state import DB
    from engine.state.plan_rows import SyncRows

    query = "select key, op, status, channel, item, data_points, reason from {} where plan_id = ? order by seq"
    if not plan.syncs:           # the sync failed: the plan has no rows (nothing held either)
        assert not state.con.execute(f"select count(*) from {DB}.plan_held").fetchone()[0]
        return state.con.execute(query.format(f"{DB}.plan_rows"), [plan.plan_id]).fetchall()
    table = SyncRows.of(state.con, plan.plan_id, plan.syncs[0])
    shown = state.con.execute(query.format(table.rows), [plan.plan_id]).fetchall()
    table.release_held()
    sent = state.con.execute(query.format(f"{DB}.plan_rows"), [plan.plan_id]).fetchall()
    assert shown == sent
    return sent
