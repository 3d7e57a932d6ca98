"""The Python API as an orchestrator calls it: `api.run` returns per-sync results with the CLI's exit codes
(0 ok, 3 undelivered rows, 4 blocked by a guard, 1 a failed sync); what stops the whole call raises a
ReflowError with a clean, scrubbed message; nothing is printed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cli_runner import warehouse_sql

from engine import api
from engine.errors import LockError, ProjectError, ReflowError
from engine.sandbox.testing import running_sandbox

pytestmark = pytest.mark.e2e


def test_run_returns_what_each_sync_sent_and_prints_nothing(example_project: Path, braze_env, capsys):
    result = api.run(example_project)
    assert result.exit_code == 0 and result.ok
    users = result.sync("braze_users")
    assert users.rows > 0 and users.acknowledged == users.rows and users.rejected == 0
    assert users.requests > 0 and users.data_points > 0
    assert {s.name for s in result.syncs} == {s.name for s in result.plan.syncs}
    assert braze_env.stats()["requests_total"] >= sum(s.requests for s in result.syncs)
    again = api.run(example_project, select=["braze_users"])
    assert again.exit_code == 0 and again.sync("braze_users").requests == 0
    assert capsys.readouterr() == ("", "")


def test_a_guard_blocks_with_exit_code_4(example_project: Path, braze_env):
    assert api.run(example_project, select=["braze_users"]).ok
    warehouse_sql(example_project, "UPDATE customers SET loyalty_tier = 'obsidian'")       # every profile
    before = braze_env.stats()["requests_total"]
    result = api.run(example_project, select=["braze_users"])
    assert result.exit_code == 4
    assert "max_changed_pct" in (result.sync("braze_users").blocked or ""), result
    assert braze_env.stats()["requests_total"] == before
    allowed = api.run(example_project, select=["braze_users"], allow_guards=["max_changed_pct"])
    assert allowed.exit_code == 0 and allowed.sync("braze_users").acknowledged > 0


def test_rejected_rows_give_exit_code_3(example_project: Path, monkeypatch):
    with running_sandbox(reject_external_ids=frozenset({"c_00001", "c_00002"})) as braze:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze.url)
        monkeypatch.setenv("BRAZE_API_KEY", braze.api_key)
        result = api.run(example_project, select=["braze_users"])
    assert result.exit_code == 3
    assert result.sync("braze_users").rejected == 2


def test_what_stops_the_call_is_a_reflow_error(example_project: Path, braze_env, tmp_path):
    with pytest.raises(ProjectError):
        api.run(tmp_path / "nowhere")
    with pytest.raises(ReflowError, match="matches no sync"):
        api.plan(example_project, select=["no_such_sync"])
    (example_project / ".reflow").mkdir()
    from engine.state.lock import StateLock

    held = StateLock(example_project / ".reflow" / "state.duckdb", "run")
    held.acquire()
    try:
        with pytest.raises(LockError, match="in use by another reflow run"):
            api.run(example_project)
    finally:
        held.release()


def test_a_read_only_plan_is_a_preview(example_project: Path, braze_env):
    preview = api.plan(example_project, read_only=True, select=["braze_users"])
    assert preview.status == "preview" and preview.syncs[0].counts.added > 0
    assert not (example_project / ".reflow" / "state.duckdb").exists()
    saved = api.plan(example_project, select=["braze_users"])
    assert saved.status == "planned" and json.dumps(saved.to_json())


def test_syncs_name_what_they_read(example_project: Path):
    found = {s.name: s for s in api.syncs(example_project, select=["tag:users"])}
    assert "braze_users" in found
    assert found["braze_users"].reads == (api.Upstream("braze_users", "reflow_model"),)
    assert found["braze_users"].object == "users"


def test_project_warnings_go_to_the_reflow_logger(example_project: Path, caplog, capsys, monkeypatch):
    file = example_project / "reflow_project.yml"
    monkeypatch.setenv("BRAZE_API_KEY", "k-123")
    file.write_text(file.read_text().replace("{{ env_var('BRAZE_API_KEY') }}", "k-123"))
    with caplog.at_level(logging.WARNING, logger="reflow"):
        api.syncs(example_project)
    assert capsys.readouterr() == ("", "")
    assert caplog.records and "k-123" not in caplog.text
