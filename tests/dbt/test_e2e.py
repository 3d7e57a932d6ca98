"""The dbt_shop project end to end through the CLI against the sandbox, on dbt-duckdb and on
dbt-postgres: plan (with --dbt-build) → apply → no-change plan → mutation → plan with only the changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dbtshop import ShopCli, load_postgres, mutate

pytestmark = [pytest.mark.dbt, pytest.mark.e2e]

MARTS = {"braze_customers": ("dim_braze_customers", "customer_id"),
         "order_events": ("fct_order_events", "order_id")}


def mart_rows(project: Path, target: str, pg: dict[str, str] | None) -> dict[str, dict[str, dict[str, Any]]]:
    """Every mart as dbt built it, keyed by primary key, values made comparable."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for sync, (table, key) in MARTS.items():
        if target == "dev":
            con = duckdb.connect(str(project / "shop.duckdb"), read_only=True)
            try:
                cur = con.execute(f"SELECT * FROM main.{table}")
                cols = [d[0] for d in cur.description]
                rows = cur.fetchall()
            finally:
                con.close()
        else:
            import psycopg2

            assert pg is not None
            conn = psycopg2.connect(pg["dsn"])
            try:
                with conn.cursor() as c:
                    c.execute(f'SELECT * FROM "{pg["schema"]}"."{table}"')
                    cols = [d.name for d in c.description]
                    rows = c.fetchall()
            finally:
                conn.close()
        out[sync] = {}
        for row in rows:
            record = dict(zip(cols, row, strict=True))
            out[sync][str(record[key])] = {k: (float(v) if k in ("lifetime_value", "total") and v is not None
                                               else str(v)) for k, v in record.items()}
    return out


def expected_changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> tuple[int, int, int]:
    added = len(after.keys() - before.keys())
    removed = len(before.keys() - after.keys())
    changed = sum(1 for k in after.keys() & before.keys() if after[k] != before[k])
    return added, changed, removed


def plan(cli: ShopCli, *args: str) -> dict[str, Any]:
    code, out, err = cli("plan", "--json", *args)
    assert code == 0, err
    return {s["name"]: s for s in json.loads(out)["syncs"]}


def run_story(cli: ShopCli, project: Path, sandbox: Any, target: str, pg: dict[str, str] | None) -> None:
    # 1. first plan builds the dbt models the syncs read, then plans every row as added
    code, out, err = cli("plan", "--json", "--dbt-build")
    assert code == 0, err
    assert "dbt build --select +dim_braze_customers +fct_order_events: ok" in err
    first = {s["name"]: s for s in json.loads(out)["syncs"]}
    marts = mart_rows(project, target, pg)
    for sync, rows in marts.items():
        assert first[sync]["added"] == len(rows) > 0, sync
        assert first[sync]["total"] == len(rows)
        assert first[sync]["changed"] == first[sync]["removed"] == first[sync]["invalid"] == 0

    # 2. apply: Braze now holds exactly the marts
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    for cid, row in marts["braze_customers"].items():
        profile = sandbox.user(cid)
        assert profile is not None, cid
        assert profile.get("email") == row["email"]
        assert profile["custom_attributes"]["orders_count"] == int(row["orders_count"])
        assert profile["custom_attributes"]["lifetime_value"] == pytest.approx(row["lifetime_value"])
    sent = sorted(e["properties"]["order_id"] for e in sandbox.events())
    assert sent == sorted(marts["order_events"])

    # 3. nothing changed: nothing to send
    again = plan(cli)
    for sync, p in again.items():
        assert (p["added"], p["changed"], p["removed"], p["has_changes"]) == (0, 0, 0, False), sync
        assert p["unchanged"] == len(marts[sync])

    # 4. the raw data changes; dbt rebuilds; the plan holds exactly the changes
    mutate(project)
    if pg is not None:
        load_postgres(project, pg["dsn"], pg["raw"])
    code, out, err = cli("plan", "--json", "--dbt-build")
    assert code == 0, err
    changes = {s["name"]: s for s in json.loads(out)["syncs"]}
    after = mart_rows(project, target, pg)
    users_added, users_changed, users_removed = expected_changes(marts["braze_customers"], after["braze_customers"])
    assert users_added and users_changed and users_removed, "the mutation touches every kind of change"
    u = changes["braze_customers"]
    assert (u["added"], u["changed"], u["removed"]) == (users_added, users_changed, users_removed)
    assert u["unchanged"] == len(after["braze_customers"]) - users_added - users_changed
    events_added, events_changed, _ = expected_changes(marts["order_events"], after["order_events"])
    e = changes["order_events"]
    assert events_added > 0
    assert (e["added"], e["changed"], e["removed"]) == (events_added, events_changed, 0)

    # 5. and applying it brings Braze in step again
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    for cid, row in after["braze_customers"].items():
        assert sandbox.user(cid)["custom_attributes"]["orders_count"] == int(row["orders_count"])
    assert plan(cli)["braze_customers"]["has_changes"] is False


def test_dbt_duckdb_plan_apply_mutate(shop, braze_env, capsys):
    run_story(ShopCli(shop, capsys), shop, braze_env, "dev", None)
    # the user's target/ is never written: Reflow's dbt artifacts live in target/reflow/<target>
    assert sorted(p.name for p in (shop / "target").iterdir()) == ["reflow"]
    assert (shop / "target" / "reflow" / "dev" / "manifest.json").is_file()
    assert not (shop / "logs").exists()


@pytest.mark.postgres
def test_dbt_postgres_plan_apply_mutate(pg_shop, pg, braze_env, capsys):
    run_story(ShopCli(pg_shop, capsys, target="pg"), pg_shop, braze_env, "pg", pg)
    assert sorted(p.name for p in (pg_shop / "target").iterdir()) == ["reflow"]
    assert (pg_shop / "target" / "reflow" / "pg" / "manifest.json").is_file()
