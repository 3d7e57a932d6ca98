"""The diff away from Reflow (`diff: hashes | warehouse`, #14) through the CLI against the sandbox, on
dbt-postgres (a real server) and dbt-duckdb: the same story as test_e2e (first run, no change, a
mutation with exactly its changes, Braze in step), then what only these locations can get wrong —
the mirror dropped by hand, a mirror the send did not update (a crash between the two), a switch of
location (re-hashed once, nothing sent), a mapping change — and how much travelled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from dbtshop import ShopCli, load_postgres, mutate
from test_e2e import mart_rows, plan, run_story

pytestmark = [pytest.mark.dbt, pytest.mark.e2e]


def set_diff(project: Path, location: str, mirror_schema: str | None = None) -> None:
    path = project / "reflow_project.yml"
    data = yaml.safe_load(path.read_text())
    data["warehouse"]["diff"] = location
    if mirror_schema:
        data["warehouse"]["mirror_schema"] = mirror_schema
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def pg_rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.commit()
        conn.close()


def nothing_to_send(p: dict[str, dict[str, Any]]) -> None:
    for name, s in p.items():
        assert (s["added"], s["changed"], s["removed"], s["to_send"], s["has_changes"]) == (0, 0, 0, 0, False), name


def braze_calls(sandbox: Any) -> int:
    return int(sandbox.stats()["requests_total"])


@pytest.mark.postgres
@pytest.mark.parametrize("location", ["hashes", "warehouse"])
def test_postgres_story_in_each_location(pg_shop, pg, braze_env, capsys, location):
    set_diff(pg_shop, location, pg["schema"])
    cli = ShopCli(pg_shop, capsys, target="pg")
    run_story(cli, pg_shop, braze_env, "pg", pg)
    after = plan(cli)
    for name, s in after.items():
        assert s["read"]["diff"] == location, (name, s["read"])
        assert s["read"]["bytes"] is not None and s["read"]["bytes"] >= 0
        # nothing changed: only (key, hash) pairs travelled (hashes), or nothing but the empty delta (warehouse)
        if location == "warehouse":
            assert s["read"]["rows"] == 0, s["read"]
        else:
            assert s["read"]["rows"] == s["total"], s["read"]


@pytest.mark.postgres
def test_postgres_mirror_dropped_or_left_behind_is_rebuilt_and_nothing_is_resent(pg_shop, pg, braze_env, capsys):
    set_diff(pg_shop, "warehouse", pg["schema"])
    cli = ShopCli(pg_shop, capsys, target="pg")
    # a read-only plan (a pull request's preview) writes nothing to the warehouse: no mirror yet
    code, out, err = cli("plan", "--json", "--dbt-build", "--read-only")
    assert code == 0, err
    for s in json.loads(out)["syncs"]:
        assert (s["read"]["diff"], s["read"]["asked"]) == ("hashes", "warehouse"), s["read"]
        assert "read-only" in s["read"]["note"]
    assert pg_rows(pg["dsn"], f"SELECT to_regclass('\"{pg['schema']}\".reflow_mirror_syncs')") == [(None,)]
    code, out, err = cli("run")
    assert code == 0, out + err
    table = f'"{pg["schema"]}"."reflow_mirror__braze_customers"'
    held = pg_rows(pg["dsn"], f"SELECT count(*) FROM {table}")[0][0]
    assert held == len(mart_rows(pg_shop, "pg", pg)["braze_customers"])

    # dropped by hand: the next plan rebuilds it from the snapshot and plans nothing
    pg_rows(pg["dsn"], f"DROP TABLE {table}")
    calls = braze_calls(braze_env)
    nothing_to_send(plan(cli))
    assert pg_rows(pg["dsn"], f"SELECT count(*) FROM {table}")[0][0] == held

    # a send whose mirror update never happened (the process died between the two): the mirror records an
    # older digest, so the update is refused and the next plan rebuilds it; nothing lost, nothing sent twice
    mutate(pg_shop)
    load_postgres(pg_shop, pg["dsn"], pg["raw"])
    code, out, err = cli("plan", "--json", "--dbt-build")
    assert code == 0, err
    changed = {s["name"]: s for s in json.loads(out)["syncs"]}
    assert changed["braze_customers"]["has_changes"]
    pg_rows(pg["dsn"], f"UPDATE \"{pg['schema']}\".reflow_mirror_syncs SET digest = 'left-behind'")
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    stale = pg_rows(pg["dsn"], f"SELECT digest FROM \"{pg['schema']}\".reflow_mirror_syncs "
                               "WHERE sync = 'braze_customers'")
    assert stale == [("left-behind",)]
    sent = braze_calls(braze_env)
    assert sent > calls
    nothing_to_send(plan(cli))
    assert braze_calls(braze_env) == sent
    digest = pg_rows(pg["dsn"], f"SELECT digest FROM \"{pg['schema']}\".reflow_mirror_syncs "
                                "WHERE sync = 'braze_customers'")[0][0]
    assert digest != "left-behind"
    after = mart_rows(pg_shop, "pg", pg)["braze_customers"]
    for cid, row in after.items():
        assert braze_env.user(cid)["custom_attributes"]["orders_count"] == int(row["orders_count"])


@pytest.mark.postgres
def test_postgres_switching_location_rehashes_once_and_sends_nothing(pg_shop, pg, braze_env, capsys):
    cli = ShopCli(pg_shop, capsys, target="pg")
    code, out, err = cli("run", "--dbt-build")
    assert code == 0, out + err
    calls = braze_calls(braze_env)
    for location in ("hashes", "warehouse", "local", "warehouse"):
        set_diff(pg_shop, location, pg["schema"])
        code, out, err = cli("run")
        assert code == 0, out + err
        nothing_to_send(plan(cli))
        assert braze_calls(braze_env) == calls, location


@pytest.mark.postgres
def test_postgres_mapping_change_is_a_change_in_the_warehouse_location(pg_shop, pg, braze_env, capsys):
    set_diff(pg_shop, "warehouse", pg["schema"])
    cli = ShopCli(pg_shop, capsys, target="pg")
    code, out, err = cli("run", "--dbt-build")
    assert code == 0, out + err
    spec = pg_shop / "syncs" / "braze_customers.yml"
    data = yaml.safe_load(spec.read_text())
    fields = data["destination"]["fields"]
    old = next(f for f in fields if f not in ("email", "external_id"))
    fields[f"{old}_renamed"] = fields.pop(old)
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    p = plan(cli, "--select", "braze_customers")["braze_customers"]
    rows = len(mart_rows(pg_shop, "pg", pg)["braze_customers"])
    assert p["changed"] > 0 and p["changed"] <= rows
    assert any(f["field"] == f"{old}_renamed" for f in p["fields"]), p["fields"]


def test_duckdb_story_with_hashes(shop, braze_env, capsys):
    set_diff(shop, "hashes")
    cli = ShopCli(shop, capsys)
    run_story(cli, shop, braze_env, "dev", None)
    for name, s in plan(cli).items():
        assert s["read"]["diff"] == "hashes" and s["read"]["bytes"] is None, (name, s["read"])


def test_duckdb_warehouse_location_says_it_reads_pairs_in_process(shop, braze_env, capsys):
    set_diff(shop, "warehouse")
    cli = ShopCli(shop, capsys)
    run_story(cli, shop, braze_env, "dev", None)
    for s in plan(cli).values():
        assert s["read"]["diff"] == "hashes" and s["read"]["asked"] == "warehouse"
        assert "no mirror to keep" in s["read"]["note"]


@pytest.mark.postgres
@pytest.mark.parametrize("location", ["local", "hashes", "warehouse"])
def test_postgres_baseline_first_run_in_each_location(pg_shop, pg, braze_env, capsys, location):
    """`first_run: baseline` holds the first run's rows typed (nothing sent, no JSON written by the plan):
    `show` renders them, `apply` records them (and, for `warehouse`, writes every key to the mirror), the
    next plan plans nothing, and a change afterwards sends exactly the changed rows."""
    set_diff(pg_shop, location, pg["schema"])
    spec = pg_shop / "syncs" / "braze_customers.yml"
    spec.write_text(spec.read_text() + "first_run: baseline\n")
    cli = ShopCli(pg_shop, capsys, target="pg")
    first = plan(cli, "--dbt-build")
    marts = mart_rows(pg_shop, "pg", pg)["braze_customers"]
    u = first["braze_customers"]
    assert (u["baseline"], u["total"], u["to_send"], u["read"]["diff"]) == (len(marts), len(marts), 0, location), u
    code, out, err = cli("show", "--sync", "braze_customers", "--limit", "0", "--format", "jsonl")
    assert code == 0, err
    shown = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(shown) == len(marts) and {r["status"] for r in shown} == {"baseline"}
    one = next(r for r in shown if r["key"] == sorted(marts)[0])
    assert one["new"]["email"] == marts[one["key"]]["email"]
    assert one["new"]["orders_count"] == int(marts[one["key"]]["orders_count"])

    calls = braze_calls(braze_env)
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    for cid in marts:       # a baseline sends nothing (order_events, sent, may have made the profile)
        profile = braze_env.user(cid) or {}
        assert "email" not in profile and "orders_count" not in profile.get("custom_attributes", {}), profile
    nothing = plan(cli)["braze_customers"]
    assert (nothing["added"], nothing["changed"], nothing["removed"], nothing["has_changes"]) == (0, 0, 0, False)
    if location == "warehouse":
        table = f'"{pg["schema"]}"."reflow_mirror__braze_customers"'
        assert pg_rows(pg["dsn"], f"SELECT count(*) FROM {table}")[0][0] == len(marts)

    mutate(pg_shop)
    load_postgres(pg_shop, pg["dsn"], pg["raw"])
    changed = plan(cli, "--dbt-build")["braze_customers"]
    after = mart_rows(pg_shop, "pg", pg)["braze_customers"]
    moved = [k for k in after if k in marts and after[k] != marts[k]]
    assert changed["changed"] == len(moved) and changed["added"] == len(set(after) - set(marts))
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert braze_calls(braze_env) > calls
    recounted = [k for k in moved if after[k]["orders_count"] != marts[k]["orders_count"]]
    assert recounted, "the mutation changes some orders_count"
    for cid in recounted:       # only the changed fields are sent
        assert braze_env.user(cid)["custom_attributes"]["orders_count"] == int(after[cid]["orders_count"])


@pytest.mark.postgres
@pytest.mark.parametrize("location", ["hashes", "warehouse"])
def test_postgres_float_aggregates_plan_nothing_when_nothing_changed(pg_shop, pg, braze_env, capsys, location):
    """A view summing float8 per customer over 200k rows: PostgreSQL runs it serially at its own costs, so
    its sums are the same bits on every run. A sceptical review found Reflow's parallel hashing (a lower
    parallel_tuple_cost for the hash queries, since reverted) parallelising the model's aggregate too:
    the sums changed in their last bits between runs, and ~10k of 50k unchanged rows were re-sent on
    every no-change plan."""
    pg_rows(pg["dsn"], f'create table "{pg["raw"]}".orders_f as select (g % 50000) + 1 as cust, '
                       f'(random() * 100)::float8 as amount from generate_series(1, 200000) g; '
                       f'analyze "{pg["raw"]}".orders_f')
    (pg_shop / "models" / "marts" / "cust_totals.sql").write_text(
        "{{ config(materialized='view') }}\n"
        "select cust as id, 'c' || cust as ext, sum(amount) as total, avg(amount) as mean\n"
        "from \"{{ env_var('SHOP_RAW_SCHEMA') }}\".orders_f group by cust\n")
    (pg_shop / "syncs" / "cust_totals.yml").write_text(yaml.safe_dump({
        "name": "cust_totals", "model": "cust_totals", "primary_key": "id", "diff": location,
        "destination": {"connection": "braze", "object": "users", "identifier": {"external_id": "ext"},
                        "fields": {"total": "total", "mean": "mean"}}}, sort_keys=False))
    set_diff(pg_shop, "local", pg["schema"])
    cli = ShopCli(pg_shop, capsys, target="pg")
    code, out, err = cli("run", "--dbt-build", "--select", "cust_totals")
    assert code == 0, out + err
    calls = braze_calls(braze_env)
    for _ in range(2):
        code, out, err = cli("run", "--select", "cust_totals")
        assert code == 0, out + err
        nothing_to_send(plan(cli, "--select", "cust_totals"))
    assert braze_calls(braze_env) == calls
