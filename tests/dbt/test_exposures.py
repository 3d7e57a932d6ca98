"""`reflow dbt exposures`: one exposure per sync, accepted by `dbt parse` without a warning."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from dbtshop import ShopCli

from engine.warehouse.dbt import dbt_executable

pytestmark = pytest.mark.dbt


def dbt(shop: Path, *args: str) -> subprocess.CompletedProcess[str]:
    private = shop / "target" / "test"
    return subprocess.run(
        [*dbt_executable(), "--no-use-colors", *args, "--profiles-dir", str(shop),
         "--target-path", str(private), "--log-path", str(private / "logs")],
        cwd=shop, capture_output=True, text=True, check=False)


def test_exposures_written_into_the_dbt_project_parse_without_warnings(shop: Path, capsys) -> None:
    cli = ShopCli(shop, capsys)
    code, printed, err = cli("dbt", "exposures")
    assert code == 0, err
    code, _, err = cli("dbt", "exposures", "--write")
    assert code == 0, err
    path = shop / "models" / "_reflow" / "_reflow__exposures.yml"
    assert "wrote models/_reflow/_reflow__exposures.yml (2 exposure(s))" in err
    assert path.read_text() == printed

    doc = yaml.safe_load(printed)
    by_name = {e["name"]: e for e in doc["exposures"]}
    assert set(by_name) == {"reflow_braze_customers", "reflow_order_events"}
    users = by_name["reflow_braze_customers"]
    assert users["type"] == "application"
    assert users["owner"] == {"name": "Data Team", "email": "data@example.com"}
    assert users["depends_on"] == ["ref('dim_braze_customers')"]
    assert users["config"]["meta"]["reflow"]["declared_in"] == "syncs/braze_customers.yml"
    assert "syncs/braze_customers.yml" in users["description"]
    assert by_name["reflow_order_events"]["config"]["meta"]["reflow"]["declared_in"] == "models/marts/_marts.yml"

    parsed = dbt(shop, "parse", "--warn-error")
    output = parsed.stdout + parsed.stderr
    assert parsed.returncode == 0, output
    assert "warn" not in output.lower() and "deprecat" not in output.lower(), output

    listed = dbt(shop, "ls", "--select", "+exposure:reflow_*", "--resource-type", "model", "--output", "name",
                 "--quiet")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert sorted(listed.stdout.split()) == ["dim_braze_customers", "fct_order_events", "stg_shop__customers",
                                             "stg_shop__gdpr_requests", "stg_shop__orders"]


def test_exposures_need_a_dbt_project(example_project: Path, capsys) -> None:
    code, _, err = ShopCli(example_project, capsys)("dbt", "exposures")
    assert code == 1 and "needs a dbt project" in err
