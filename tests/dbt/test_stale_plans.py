"""A plan binds the definition of what it read: a dbt model (or anything upstream) whose SQL changed
between `plan` and `apply` makes `apply` refuse the plan; data that changed does not."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbtshop import ShopCli, mutate

from engine.project import load_project
from engine.warehouse.dbt import DbtWarehouse

pytestmark = [pytest.mark.dbt, pytest.mark.e2e]

MART = Path("models") / "marts" / "dim_braze_customers.sql"
STAGING = Path("models") / "staging" / "stg_shop__orders.sql"


def rebuild(shop: Path, *models: str) -> None:
    """`dbt build` the models as a user would between plan and apply (Reflow's private target path)."""
    warehouse = DbtWarehouse(load_project(shop))
    try:
        warehouse.build(models)
    finally:
        warehouse.close()


def test_a_mart_changed_and_rebuilt_after_planning_refuses_the_plan(shop, braze_env, capsys):
    cli = ShopCli(shop, capsys)
    code, out, err = cli("plan", "--dbt-build")
    assert code == 0, out + err
    mart = shop / MART
    mart.write_text(mart.read_text().replace("c.email,", "upper(c.email) as email,", 1))
    rebuild(shop, "dim_braze_customers")
    code, out, err = cli("apply", "--yes")
    assert code == 1 and "plan is stale" in err and "braze_customers" in err, out + err
    assert braze_env.user("c_00001") is None                  # nothing was sent


def test_an_upstream_model_changed_refuses_the_plan(shop, braze_env, capsys):
    cli = ShopCli(shop, capsys)
    assert cli("plan", "--dbt-build")[0] == 0
    staging = shop / STAGING
    staging.write_text(staging.read_text().rstrip() + "\nwhere o.channel <> 'store'\n")
    code, out, err = cli("apply", "--yes")
    assert code == 1 and "plan is stale" in err, out + err
    assert braze_env.stats()["requests_total"] == 1           # only the fixture's catalog creation


def test_new_data_with_the_same_sql_keeps_the_plan_valid(shop, braze_env, capsys):
    cli = ShopCli(shop, capsys)
    assert cli("plan", "--dbt-build")[0] == 0
    mutate(shop)
    rebuild(shop, "dim_braze_customers", "fct_order_events")
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err                                # the plan binds its payloads, not the data
