"""Warehouse.definition(): what a plan's fingerprint adds for the model a sync reads.

It must change when the definition of that model or of anything upstream of it changes (dbt's
checksum: any edit of the file, a comment too), and must not change with the data (the plan binds
its payloads), with docs, or with models that are not upstream. A warm call runs no dbt."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from dbtshop import mutate, side_project

from engine.project import load_project
from engine.specs import load_syncs
from engine.warehouse.dbt import DbtWarehouse
from engine.warehouse.manifest import read_manifest

MARTS = ["dim_braze_customers", "fct_order_events"]
STAGING = Path("models") / "staging"


def definitions(project_dir: Path, warehouse: DbtWarehouse | None = None) -> dict[str, str]:
    """Every sync's definition, from a fresh warehouse (a new `reflow` process) unless one is given."""
    project = load_project(project_dir)
    warehouse = warehouse or DbtWarehouse(project)
    return {s.name: warehouse.definition(project, s) for s in load_syncs(project)}


def parsed(project_dir: Path) -> bool:
    """Did a fresh warehouse have to run `dbt parse` to read the manifest?"""
    warehouse = DbtWarehouse(load_project(project_dir))
    warehouse.manifest()
    return warehouse.parse_seconds is not None


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


@pytest.mark.dbt
def test_any_edit_of_the_model_changes_its_definition_and_undoing_it_restores_it(shop: Path) -> None:
    project = load_project(shop)
    warehouse = DbtWarehouse(project)
    base = definitions(shop, warehouse)
    assert set(base) == {"braze_customers", "order_events"} and all(len(d) == 64 for d in base.values())
    assert definitions(shop, warehouse) == base                 # a second call: the same text
    assert definitions(shop) == base and not parsed(shop)       # a new process: the same, no parse

    model = shop / "models" / "marts" / "dim_braze_customers.sql"
    original = model.read_text(encoding="utf-8")
    model.write_text(original + "-- reviewed by the data team\n", encoding="utf-8")
    commented = definitions(shop)
    # a comment is an edit: dbt's checksum is the file's text. order_events reads fct_order_events,
    # which is built from dim_braze_customers, so it changes too
    assert changed(base, commented) == {"braze_customers", "order_events"}

    model.write_text(original, encoding="utf-8")                # undone: the text decides, not the mtime
    assert definitions(shop) == base


@pytest.mark.dbt
def test_an_upstream_model_or_source_change_changes_every_sync_downstream(shop: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base = definitions(shop)
    edit(shop / STAGING / "stg_shop__gdpr_requests.sql", "from {{ source('shop', 'gdpr_requests') }}",
         "from {{ source('shop', 'gdpr_requests') }}\nwhere customer_id is not null")
    upstream = definitions(shop)
    assert changed(base, upstream) == {"braze_customers", "order_events"}

    monkeypatch.setenv("SHOP_RAW_SCHEMA", "raw")               # the sources now name other relations
    moved = definitions(shop)
    assert changed(upstream, moved) == {"braze_customers", "order_events"}


@pytest.mark.dbt
def test_docs_tests_and_models_that_are_not_upstream_leave_it_alone(shop: Path) -> None:
    base = definitions(shop)
    marts = shop / "models" / "marts"
    edit(marts / "_marts.yml", "description: Active customers with orders",
         "description: Customers with at least one order")
    edit(marts / "_marts.yml", "data_tests: [unique, not_null]", "data_tests: [unique]")
    (marts / "top_countries.sql").write_text(
        "select country, count(*) as customers from {{ ref('dim_braze_customers') }} group by country\n")
    assert definitions(shop) == base
    assert not parsed(shop)                                     # and those edits were parsed


@pytest.mark.dbt
def test_data_changes_and_rebuilds_do_not_change_it(shop: Path) -> None:
    warehouse = DbtWarehouse(load_project(shop))
    warehouse.build(MARTS)                   # its manifest holds compiled code, a parse's does not
    base = definitions(shop)

    mutate(shop)                             # new raw data, rebuilt with the same SQL
    DbtWarehouse(load_project(shop)).build(MARTS)
    assert definitions(shop) == base

    (shop / "models" / "staging" / "_sources.yml").touch()      # a plain `dbt parse` again
    assert parsed(shop)
    assert definitions(shop) == base


@pytest.mark.dbt
def test_an_edit_that_keeps_the_size_and_the_mtime_is_still_seen(shop: Path) -> None:
    base = definitions(shop)
    model = shop / STAGING / "stg_shop__customers.sql"
    stat = model.stat()
    edit(model, "lower(email)", "upper(email)")                 # same size
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))    # as `cp -p` or `rsync -t` would leave it
    assert not parsed(shop)                                     # the project fingerprint cannot see it...
    project = load_project(shop)
    warehouse = DbtWarehouse(project)
    after = {s.name: warehouse.definition(project, s) for s in load_syncs(project)}
    assert warehouse.parse_seconds is not None                  # ...the checksum check can: parse again
    assert changed(base, after) == {"braze_customers", "order_events"}


@pytest.mark.dbt
def test_macros_vars_env_vars_config_and_seeds_upstream_are_part_of_it(shop: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (shop / "macros").mkdir()
    macro = shop / "macros" / "gdpr.sql"
    macro.write_text("{% macro gdpr_filter() %}customer_id is not null{% endmacro %}\n")
    (shop / "seeds").mkdir()
    seed = shop / "seeds" / "gdpr_manual.csv"
    seed.write_text("customer_id\nc_00001\n")
    (shop / STAGING / "stg_shop__gdpr_requests.sql").write_text(
        "select customer_id, requested_at\n"
        "from {{ source('shop', 'gdpr_requests') }}\n"
        "where {{ gdpr_filter() }} and {{ var('gdpr_since_days', 0) }} >= 0\n"
        "  and '{{ env_var('SHOP_GDPR_REGION', 'eu') }}' <> ''\n"
        "union all\n"
        "select customer_id, null from {{ ref('gdpr_manual') }}\n")
    project_file = shop / "dbt_project.yml"
    project_file.write_text(project_file.read_text() + "\nvars:\n  gdpr_since_days: 30\n  unrelated: 1\n")
    current = definitions(shop)

    def expect(changes: set[str], what: str) -> None:
        nonlocal current
        after = definitions(shop)
        assert changed(current, after) == changes, what
        current = after

    both = {"braze_customers", "order_events"}
    edit(macro, "is not null", "<> ''")
    expect(both, "a macro the model calls")
    edit(project_file, "gdpr_since_days: 30", "gdpr_since_days: 90")
    expect(both, "a var the model reads")
    edit(project_file, "unrelated: 1", "unrelated: 2")
    expect(set(), "a var nothing upstream reads")
    monkeypatch.setenv("SHOP_GDPR_REGION", "us")
    expect(both, "an env var the model reads")
    edit(project_file, "+materialized: view", "+materialized: table")
    expect(both, "materialized")
    seed.write_text("customer_id\nc_00002\n")
    expect(both, "a seed's CSV (its checksum)")



@pytest.mark.dbt
def test_a_reflow_model_over_dbt_models_covers_the_dbt_nodes_it_reads(shop: Path) -> None:
    side = side_project(shop, "select customer_id, email from {{ ref('dim_braze_customers') }} "
                              "where orders_count >= 3\n")
    base = definitions(side)["vip"]
    assert base != ""
    edit(side / "models" / "vip_customers.sql", ">= 3", ">= 5")
    assert definitions(side)["vip"] == base          # its own SQL is in the plan's fingerprint already
    edit(shop / STAGING / "stg_shop__customers.sql", "lower(email)", "trim(lower(email))")
    assert definitions(side)["vip"] != base          # a dbt model it reads, two levels up

    (side / "models" / "vip_customers.sql").write_text("select 'c_1' as customer_id, 'a@b.c' as email\n")
    assert definitions(side)["vip"] == ""            # reads nothing from dbt


@pytest.mark.dbt
def test_a_warm_call_is_cheap_and_runs_no_dbt(shop: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    definitions(shop)                                            # cold: `dbt parse`
    cold = time.perf_counter() - started

    def no_dbt(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"dbt ran: {args}")

    monkeypatch.setattr(subprocess, "run", no_dbt)
    project = load_project(shop)
    syncs = load_syncs(project)
    started = time.perf_counter()
    warehouse = DbtWarehouse(project)                            # as `reflow apply` opens it
    first = [warehouse.definition(project, s) for s in syncs]
    new_process = time.perf_counter() - started
    started = time.perf_counter()
    again = [warehouse.definition(project, s) for s in syncs]
    same_process = time.perf_counter() - started
    assert again == first
    print(f"\ndefinition() of {len(syncs)} syncs: cold {cold:.2f} s (dbt parse), warm in a new process "
          f"{new_process * 1000:.1f} ms, again {same_process * 1000:.1f} ms")
    assert new_process < 2.0 and same_process < 0.5             # generous: measured ~6 ms and ~1 ms


def test_upstream_and_macros_walk_the_whole_graph_once(tmp_path: Path) -> None:
    """Manifest.upstream/macros_of on a hand-written manifest (no dbt): transitive, cycle-safe, and
    ids the manifest lacks (disabled nodes) are kept as None."""
    def node(uid: str, nodes: list[str], macros: tuple[str, ...] = ()) -> dict[str, object]:
        return {"name": uid.split(".")[-1], "resource_type": uid.split(".")[0], "package_name": "p",
                "checksum": {"name": "sha256", "checksum": uid}, "raw_code": f"select 1 -- {uid}",
                "config": {"materialized": "table", "tags": ["x"], "unique_key": None},
                "depends_on": {"nodes": nodes, "macros": list(macros)}}

    data = {
        "metadata": {"project_name": "p"},
        "nodes": {"model.p.mart": node("model.p.mart", ["model.p.stg", "seed.p.map"], ["macro.p.m1"]),
                  "model.p.stg": node("model.p.stg", ["source.p.raw.t", "model.p.gone"]),
                  "seed.p.map": node("seed.p.map", []),
                  "model.p.other": node("model.p.other", ["model.p.stg"])},
        "sources": {"source.p.raw.t": {"name": "t", "resource_type": "source", "source_name": "raw",
                                       "relation_name": '"db"."raw"."t"'}},
        "macros": {"macro.p.m1": {"macro_sql": "{% macro m1() %}{{ m2() }}{% endmacro %}",
                                  "depends_on": {"macros": ["macro.p.m2"]}},
                   "macro.p.m2": {"macro_sql": "{% macro m2() %}{{ m1() }}{% endmacro %}",
                                  "depends_on": {"macros": ["macro.p.m1"]}}},
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    manifest = read_manifest(path)
    up = manifest.upstream(["model.p.mart"])
    assert sorted(up) == ["model.p.gone", "model.p.mart", "model.p.stg", "seed.p.map", "source.p.raw.t"]
    assert up["model.p.gone"] is None and up["source.p.raw.t"] is not None
    mart = up["model.p.mart"]
    assert mart is not None and mart.checksum == "sha256:model.p.mart"
    assert dict(mart.settings) == {"materialized": "table"}        # tags are not the result; None is unset
    assert sorted(manifest.macros_of(n for n in up.values() if n)) == ["macro.p.m1", "macro.p.m2"]


def test_a_duckdb_warehouse_has_nothing_to_add(example_project: Path) -> None:
    from engine.warehouse.duckdb import DuckDBWarehouse

    project = load_project(example_project)
    warehouse = DuckDBWarehouse(project)
    assert {warehouse.definition(project, s) for s in load_syncs(project)} == {""}
