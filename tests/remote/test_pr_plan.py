"""A pull request's plan, as CI posts it: `reflow plan --read-only --format markdown` on a fresh runner reads
production's state from the bucket while a scheduled run holds the lock, shows the field-level diff the
change causes, and leaves the stored state, the lock and any runner's working copy exactly as they were."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cli_runner import Cli, warehouse_sql
from s3_bucket import S3, STATE_KEY, second_folder

pytestmark = pytest.mark.e2e

HOLDER = {"id": "f00dfeed", "host": "prod-runner-3", "pid": 77, "command": "run",
          "started_at": "2026-01-01T00:00:00Z", "expiry": 600}


def etag(s3: S3, key: str) -> str:
    return str(s3.client.head_object(Bucket=s3.bucket, Key=key)["ETag"])


def files_of(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def change_a_field(project: Path) -> None:
    """What a pull request's model change does to the rows: one field of a few users moves."""
    warehouse_sql(project, "UPDATE customers SET loyalty_tier = 'obsidian' WHERE customer_id <= 'c_00005'")


def test_a_pr_plan_reads_the_locked_production_state_and_changes_nothing(
        remote_project: Path, s3: S3, braze_env, capsys, tmp_path, monkeypatch):
    runner = Cli(remote_project, capsys)
    code, out, err = runner("run")
    assert code == 0, out + err
    s3.put(STATE_KEY + ".lock", json.dumps(HOLDER).encode())     # the next scheduled run is sending now
    stored, lock = etag(s3, STATE_KEY), etag(s3, STATE_KEY + ".lock")
    working = files_of(remote_project / ".reflow")

    pr = second_folder(remote_project, tmp_path, "pull-request")     # a fresh CI runner with the PR's checkout
    change_a_field(pr)
    monkeypatch.delenv("BRAZE_API_KEY")             # a pull request's job is given no Braze key: none is needed
    code, out, err = Cli(pr, capsys)("plan", "--read-only", "--format", "markdown")
    assert code == 0, out + err
    assert "### Reflow plan (preview)" in out, out
    assert "update `loyalty_tier` for 5 Braze users" in out, out
    assert "| braze_users | `loyalty_tier` | 5 |" in out, out        # the field-level diff
    assert "nothing was locked, saved or uploaded" in out, out
    assert "locked by another" not in err, err

    assert etag(s3, STATE_KEY) == stored, "the stored state is not uploaded"
    assert etag(s3, STATE_KEY + ".lock") == lock, "the other run's lock is untouched"
    assert s3.keys() == [STATE_KEY, STATE_KEY + ".lock"], "no other object"
    assert files_of(remote_project / ".reflow") == working, "the runner's working copy is untouched"

    # on the runner's own machine too: its working copy and sidecar stay as they were, no private copy is left
    change_a_field(remote_project)
    code, out, err = runner("plan", "--read-only", "--format", "json")
    assert code == 0, out + err
    plan = json.loads(out)
    assert plan["status"] == "preview" and plan["totals"]["changed"] == 5, plan["totals"]
    assert files_of(remote_project / ".reflow") == working
    assert etag(s3, STATE_KEY) == stored


def test_a_pr_plan_without_production_state_plans_everything_as_new(remote_project: Path, s3: S3, braze_env, capsys):
    code, out, err = Cli(remote_project, capsys)("plan", "--read-only")
    assert code == 0, out + err
    assert "read-only preview" in out, out
    assert s3.keys() == [], "nothing is created in the bucket"


def test_a_read_only_plan_of_a_local_state_leaves_the_file_alone(example_project: Path, braze_env, capsys):
    cli = Cli(example_project, capsys)
    assert cli("run")[0] == 0
    before = files_of(example_project / ".reflow")
    change_a_field(example_project)
    code, out, err = cli("plan", "--read-only", "--format", "markdown")
    assert code == 0, out + err
    assert "update `loyalty_tier` for 5 Braze users" in out, out
    assert files_of(example_project / ".reflow") == before
    code, out, err = cli("apply", "--yes")          # the preview was saved nowhere: there is nothing new to apply
    assert code == 1 and "applied" in err, out + err
