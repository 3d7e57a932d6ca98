"""The example project synced to the sandbox through the CLI: what lands equals what the models say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

pytestmark = pytest.mark.e2e


def model_rows(project: Path, model: str) -> list[dict[str, Any]]:
    from engine.project import load_project
    from engine.render import render_model
    from engine.warehouse.duckdb import DuckDBWarehouse

    proj = load_project(project)
    wh = DuckDBWarehouse(proj)
    sql = render_model(proj, model, relation_for=wh.relation_for, source_for=wh.source_for).sql
    con = duckdb.connect(":memory:")
    wh.attach(con)
    cur = con.execute(f"select * from ({sql})")
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    con.close()
    return rows


def plan_json(cli: Any) -> dict[str, Any]:
    code, out, err = cli("plan", "--json")
    assert code == 0, err
    return json.loads(out)


def assert_in_step(project: Path, sandbox: Any) -> None:
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
    # events and purchases are append-only: every model row landed exactly once; rows that left the
    # model since (departed customers) stay in Braze as history
    sent_events = [e["properties"]["order_id"] for e in sandbox.events()]
    assert len(sent_events) == len(set(sent_events)), "no event recorded twice"
    assert {r["order_id"] for r in model_rows(project, "order_events")} <= set(sent_events)
    sent_lines: dict[str, int] = {}
    for p in sandbox.purchases():
        sent_lines[p["properties"]["order_id"]] = sent_lines.get(p["properties"]["order_id"], 0) + 1
    model_lines: dict[str, int] = {}
    for r in model_rows(project, "purchases"):
        model_lines[r["order_id"]] = model_lines.get(r["order_id"], 0) + 1
    assert all(sent_lines.get(k) == v for k, v in model_lines.items()), "each purchase line landed once"
    items = {i["id"]: i for i in sandbox.catalog_items("products") or []}
    products = {r["product_id"]: r for r in model_rows(project, "catalog_products")}
    assert set(items) == set(products)
    assert all(items[k]["price"] == pytest.approx(products[k]["price"]) for k in products)
    subs = model_rows(project, "newsletter_subscriptions")
    group = "5b7b9a4e-1c43-4e7a-9f3b-2d5f0c8e1a11"
    for r in subs:
        profile = sandbox.user(r["customer_id"])
        if profile is None:
            continue
        state = (profile.get("subscription_groups") or {}).get(group)
        assert state == ("subscribed" if r["subscribed"] else "unsubscribed"), r


def test_full_then_incremental_sync_lands_exactly(cli, braze_env, example_project):
    sandbox = braze_env
    first = plan_json(cli)
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    stats = sandbox.stats()
    assert stats["data_points"] == sum(s["data_points"] for s in first["syncs"])
    assert_in_step(example_project, sandbox)

    again = plan_json(cli)
    assert not again["has_changes"]
    before = sandbox.stats()["requests"]
    code, out, _ = cli("apply", "--yes")
    assert code == 0 and "no changes" in out
    assert sandbox.stats()["requests"] == before

    code, out, err = cli("example", "mutate")
    assert code == 0, err
    third = plan_json(cli)
    users = next(s for s in third["syncs"] if s["name"] == "braze_users")
    assert users["changed"] > 0 and users["added"] > 0
    dp_before = sandbox.stats()["data_points"]
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert sandbox.stats()["data_points"] - dp_before == sum(s["data_points"] for s in third["syncs"])
    assert_in_step(example_project, sandbox)


def test_changed_rows_send_only_changed_fields(cli, braze_env, example_project):
    sandbox = braze_env
    assert cli("plan")[0] == 0 and cli("apply", "--yes")[0] == 0
    con = duckdb.connect(str(example_project / "warehouse.duckdb"))
    con.execute("update customers set loyalty_tier = 'platinum' where customer_id = 'c_00002'")
    con.close()
    code, out, _ = cli("plan", "--select", "braze_users")
    assert code == 0
    assert "loyalty_tier: 1 row(s)" in out
    code, out, err = cli("show", "--sync", "braze_users", "--op", "changed", "--format", "json")
    rows = json.loads(out)
    if sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"] != "platinum":
        assert [r["payload"] for r in rows] == [{"external_id": "c_00002", "loyalty_tier": "platinum"}]
    code, out, err = cli("apply", "--yes")
    assert code == 0, err
    assert sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"] == "platinum"
