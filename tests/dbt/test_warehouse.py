"""The dbt warehouse on dbt-duckdb: manifest freshness, private artifacts, clear messages,
reflow models beside dbt (lite refs, dbt compile for macros), profiles/target resolution."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import pytest
from dbtshop import ShopCli, side_project

from engine.dbt_project import load_dbt_project
from engine.errors import ProjectError, RenderError, WarehouseError
from engine.project import load_project
from engine.warehouse import open_warehouse
from engine.warehouse.dbt import DbtWarehouse

pytestmark = pytest.mark.dbt


def test_manifest_is_parsed_once_then_only_after_dbt_files_change(shop: Path) -> None:
    project = load_project(shop)
    first = DbtWarehouse(project)
    assert first.relation_for("dim_braze_customers") == '"shop"."main"."dim_braze_customers"'
    assert first.source_for("shop", "orders") == '"shop"."main"."orders"'
    assert first.parse_seconds is not None              # cold: `dbt parse` ran
    print(f"\ndbt parse (cold, subprocess): {first.parse_seconds:.2f} s")

    again = DbtWarehouse(project)
    again.manifest()
    assert again.parse_seconds is None                  # nothing changed: the manifest is reused

    (shop / "syncs" / "braze_customers.yml").write_text((shop / "syncs" / "braze_customers.yml").read_text() + "\n")
    (shop / "reflow_project.yml").touch()
    edits_outside_dbt = DbtWarehouse(project)
    edits_outside_dbt.manifest()
    assert edits_outside_dbt.parse_seconds is None     # Reflow's own files are not dbt's

    time.sleep(0.01)
    model = shop / "models" / "staging" / "stg_shop__gdpr_requests.sql"
    model.write_text(model.read_text() + "-- edited\n")
    changed = DbtWarehouse(project)
    changed.manifest()
    assert changed.parse_seconds is not None            # a dbt model changed: parse again (partial)
    print(f"dbt parse (after an edit, subprocess): {changed.parse_seconds:.2f} s")

    # never the user's target/ or logs/
    assert sorted(p.name for p in (shop / "target").iterdir()) == ["reflow"]
    assert not (shop / "logs").exists()


def test_unbuilt_model_says_how_to_build_it(shop: Path, capsys) -> None:
    code, _, err = ShopCli(shop, capsys)("plan")
    assert code == 1
    assert ("dbt model 'dim_braze_customers' not built on target 'dev'" in err
            or "DuckDB file of dbt target 'dev'" in err), err
    assert "--dbt-build" in err and "Traceback" not in err


def test_failing_dbt_build_stops_the_run(shop: Path, capsys) -> None:
    model = shop / "models" / "marts" / "dim_braze_customers.sql"
    model.write_text(model.read_text().replace("c.first_name,", "c.no_such_column,"))
    code, out, err = ShopCli(shop, capsys)("run", "--dbt-build")
    assert code == 1
    assert "`dbt build --select +dim_braze_customers +fct_order_events` failed" in err
    assert "no_such_column" in err
    assert "Plan" not in out                            # nothing was planned or sent


def test_unknown_ref_and_ephemeral_models_are_explained(shop: Path) -> None:
    warehouse = DbtWarehouse(load_project(shop))
    with pytest.raises(RenderError, match=r"no dbt model, seed or snapshot named 'dim_braze_customer'.*did you mean 'dim_braze_customers'"):
        warehouse.relation_for("dim_braze_customer")
    with pytest.raises(RenderError, match=r"source\('shop', 'nope'\): not declared"):
        warehouse.source_for("shop", "nope")




def test_reflow_model_refs_resolve_to_dbt_relations_without_dbt_compile(shop: Path, capsys) -> None:
    side = side_project(shop, "select customer_id, email from {{ ref('dim_braze_customers') }} "
                              "where orders_count >= {{ var('min', 3) }}"
                              "{% if target.type == 'duckdb' %} and '{{ target.name }}' = 'dev'{% endif %}\n")
    cli = ShopCli(side, capsys)
    code, out, err = cli("compile", "vip")
    assert code == 0, err
    assert out.strip() == ('select customer_id, email from "shop"."main"."dim_braze_customers" '
                           "where orders_count >= 3 and 'dev' = 'dev'")
    assert not (shop / "target" / "reflow" / "dev" / "reflow_compiled.json").exists()
    # the dbt project's meta-declared sync belongs to this Reflow project too, located from here
    code, out, err = cli("ls")
    assert code == 0, err
    assert any(line.split()[0] == "order_events" and "../models/marts/_marts.yml" in line for line in out.splitlines())


def test_templates_needing_dbt_are_compiled_by_dbt(shop: Path, capsys) -> None:
    side = side_project(shop, "select {{ adapter.quote('customer_id') }}, email\n"
                              "from {{ ref('dim_braze_customers') }}\n")
    cli = ShopCli(side, capsys)
    code, out, err = cli("compile", "vip")
    assert code == 0, err
    assert out.strip() == 'select "customer_id", email\nfrom "shop"."main"."dim_braze_customers"'
    assert (shop / "target" / "reflow" / "dev" / "reflow_compiled.json").is_file()   # cached for next time

    (side / "models" / "vip_customers.sql").write_text("select {{ no_such_macro() }} from {{ ref('dim_braze_customers') }}\n")
    code, _, err = cli("compile", "vip")
    assert code == 1
    assert "models/vip_customers.sql: compiled through dbt, which failed" in err
    assert "'no_such_macro' is undefined" in err and "Traceback" not in err


def test_profiles_dir_and_target_resolution(shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = load_project(shop)
    dbt = load_dbt_project(project)
    assert (dbt.profiles_dir, dbt.target) == (shop, "dev")        # profiles.yml beside dbt_project.yml
    assert dbt.private_dir == shop / "target" / "reflow" / "dev"

    elsewhere = tmp_path / "profiles"
    elsewhere.mkdir()
    shutil.move(shop / "profiles.yml", elsewhere / "profiles.yml")
    monkeypatch.setenv("DBT_PROFILES_DIR", str(elsewhere))
    monkeypatch.setenv("SHOP_TARGET", "pg")                        # the profile's own default target
    assert (load_dbt_project(project).profiles_dir, load_dbt_project(project).target) == (elsewhere, "pg")
    monkeypatch.setenv("DBT_TARGET", "dev")
    assert load_dbt_project(project).target == "dev"
    chosen = dataclasses.replace(project, warehouse=dataclasses.replace(project.warehouse, target="pg"))
    assert load_dbt_project(chosen).target == "pg"                 # --target / project file first

    monkeypatch.delenv("DBT_TARGET")
    monkeypatch.setenv("DBT_PROFILES_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ProjectError, match="no profiles.yml in .*nowhere"):
        load_dbt_project(project)


def test_unknown_target_is_a_clear_error(shop: Path, capsys) -> None:
    code, _, err = ShopCli(shop, capsys, target="prod")("plan", "--dbt-build")
    assert code == 1 and "prod" in err and "Traceback" not in err


def test_without_dbt_installed_the_message_says_what_to_install(shop: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.warehouse.dbt.dbt_installed", lambda: False)
    with pytest.raises(ProjectError, match=r"install reflow\[dbt\]"):
        open_warehouse(load_project(shop))


def test_missing_dbt_project_file(shop: Path) -> None:
    os.remove(shop / "dbt_project.yml")
    with pytest.raises(ProjectError, match="no dbt_project.yml in"):
        open_warehouse(load_project(shop))


def test_missing_duckdb_file_says_build_first(shop: Path) -> None:
    os.remove(shop / "shop.duckdb")
    import duckdb

    warehouse = DbtWarehouse(load_project(shop))
    con = duckdb.connect()
    try:
        with pytest.raises(WarehouseError, match="does not exist; build the dbt project first"):
            warehouse.relation(con, 'select * from "shop"."main"."dim_braze_customers"', model="m")
    finally:
        con.close()


def test_a_broken_dbt_project_reports_dbt_parse_errors(shop: Path, capsys) -> None:
    model = shop / "models" / "staging" / "stg_shop__orders.sql"
    model.write_text(model.read_text() + "{{ ref('missing_model') }}\n")
    code, _, err = ShopCli(shop, capsys)("plan")
    assert code == 1
    assert "`dbt parse` failed" in err and "missing_model" in err and "Traceback" not in err


def test_ephemeral_models_are_refused_with_a_reason(shop: Path, capsys) -> None:
    marts = shop / "models" / "marts" / "dim_braze_customers.sql"
    marts.write_text("{{ config(materialized='ephemeral') }}\n" + marts.read_text())
    code, _, err = ShopCli(shop, capsys)("compile", "braze_customers")
    assert code == 1
    assert "dbt model 'dim_braze_customers' is ephemeral" in err and "materialize it as a view or a table" in err
