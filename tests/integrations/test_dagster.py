"""Dagster: `reflow_assets` gives one asset per sync, downstream of the model it reads, and materializing them
with Dagster's in-process executor runs the syncs against the Braze sandbox, with each sync's numbers on
its materialization. Runs in its own virtual environment (.ci/run: .venv-dagster); skipped without Dagster."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import warehouse_sql

dg = pytest.importorskip("dagster")

from engine.integrations.dagster import reflow_assets  # noqa: E402

pytestmark = pytest.mark.e2e


def materializations(result) -> dict[str, dict]:
    return {e.asset_key.to_user_string(): {k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


def test_one_asset_per_sync_downstream_of_its_model(example_project: Path):
    assets = reflow_assets(example_project)
    keys = {k.to_user_string() for k in assets.keys}
    syncs = {p.stem for p in (example_project / "syncs").glob("*.yml")}
    assert keys == {f"reflow/{name}" for name in syncs}
    users = dg.AssetKey(["reflow", "braze_users"])
    assert {d.asset_key for d in assets.specs_by_key[users].deps} == {dg.AssetKey(["braze_users"])}
    assert assets.specs_by_key[users].metadata["reflow/object"] == "users"


def test_materializing_runs_the_syncs_with_their_numbers(example_project: Path, braze_env):
    assets = reflow_assets(example_project, select=["tag:users"])
    result = dg.materialize([assets])
    assert result.success
    done = materializations(result)
    users = done["reflow/braze_users"]
    assert users["rows"] > 0 and users["acknowledged"] == users["rows"] and users["rejected"] == 0
    assert users["requests"] > 0 and users["data_points"] > 0 and users["pending"] == 0
    assert braze_env.stats()["requests_total"] > 1

    again = dg.materialize([assets], selection=[dg.AssetKey(["reflow", "braze_users"])])     # a subset
    assert again.success
    assert set(materializations(again)) == {"reflow/braze_users"}
    assert materializations(again)["reflow/braze_users"]["requests"] == 0        # nothing changed


def test_rejected_rows_are_on_the_materialization_and_the_step_succeeds(example_project: Path, monkeypatch, capsys):
    from engine.sandbox.testing import running_sandbox

    with running_sandbox(reject_external_ids=frozenset({"c_00001", "c_00003"})) as braze:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze.url)
        monkeypatch.setenv("BRAZE_API_KEY", braze.api_key)
        result = dg.materialize([reflow_assets(example_project, select=["braze_users"])])
    assert result.success                                  # exit code 3: a warning, not a failure
    users = materializations(result)["reflow/braze_users"]
    assert users["rejected"] == 2 and users["pending"] == 2 and users["acknowledged"] == users["rows"] - 2
    out, err = capsys.readouterr()
    assert "WARNING" in out + err and "rows were left undelivered (exit code 3)" in out + err


def test_a_guard_fails_the_step_and_materializes_nothing(example_project: Path, braze_env):
    assets = reflow_assets(example_project, select=["braze_users"])
    assert dg.materialize([assets]).success
    warehouse_sql(example_project, "UPDATE customers SET loyalty_tier = 'obsidian'")
    before = braze_env.stats()["requests_total"]
    result = dg.materialize([assets], raise_on_error=False)
    assert not result.success
    assert materializations(result) == {}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "guard" in str(failure.event_specific_data.error), failure
    logged = "\n".join(str(e) for e in result.all_events)
    assert braze_env.api_key not in logged
    assert braze_env.stats()["requests_total"] == before


def test_the_deploy_page_example_loads(example_project: Path):
    """docs/deploy.md's Dagster code location, pointed at this project, is a valid Definitions."""
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    [code] = [b for b in re.findall(r"^```python\n(.*?)^```$", page, re.MULTILINE | re.DOTALL) if "reflow_assets" in b]
    scope: dict = {}
    exec(compile(code.replace('"/opt/analytics"', repr(str(example_project))), "deploy.md", "exec"), scope)
    defs = scope["defs"]
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("reflow_daily") is not None
