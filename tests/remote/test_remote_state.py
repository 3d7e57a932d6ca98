"""A team's state in a bucket: each runner starts empty, downloads the state, holds the lock, uploads as it
goes; a second working folder (another machine) goes on from what the first uploaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_runner import Cli
from s3_bucket import S3, SECRET, STATE_KEY, second_folder, use_remote_state

pytestmark = pytest.mark.e2e


def test_a_run_keeps_its_state_in_the_bucket_and_another_folder_goes_on_from_it(
        remote_project: Path, s3: S3, braze_env, capsys, tmp_path):
    cli = Cli(remote_project, capsys)
    code, out, err = cli("run")
    assert code == 0, out + err
    assert s3.keys() == [STATE_KEY], "the state is uploaded; the lock is gone once the run ends"
    sent = braze_env.stats()["requests_total"]

    elsewhere = Cli(second_folder(remote_project, tmp_path), capsys)
    code, out, err = elsewhere("status")
    assert code == 0, err
    assert "never" not in out, out                       # the runs of the first folder, read from the bucket
    code, out, err = elsewhere("run")
    assert code == 0, out + err
    assert "no changes" in out, out
    assert braze_env.stats()["requests_total"] == sent   # nothing sent twice
    assert s3.keys() == [STATE_KEY]


def test_reads_take_no_lock_and_never_upload(remote_project: Path, s3: S3, braze_env, capsys, tmp_path):
    cli = Cli(remote_project, capsys)
    assert cli("plan")[0] == 0
    before = s3.get(STATE_KEY)
    s3.put(STATE_KEY + ".lock", json.dumps({"id": "someone", "host": "ci-7", "pid": 1, "command": "run"}).encode())
    reader = Cli(second_folder(remote_project, tmp_path), capsys)
    for command in (["status"], ["history"], ["show", "--limit", "3"], ["errors"]):
        code, out, err = reader(*command)
        assert code == 0, (command, out, err)
    assert s3.get(STATE_KEY) == before
    assert json.loads(s3.get(STATE_KEY + ".lock") or b"{}")["id"] == "someone"


def test_plan_waits_for_no_one_but_names_the_holder(remote_project: Path, s3: S3, braze_env, capsys):
    s3.put(STATE_KEY + ".lock", json.dumps({"id": "a1b2c3", "host": "runner-9", "pid": 4242, "command": "run",
                                            "started_at": "2026-01-01T00:00:00Z", "expiry": 600}).encode())
    code, out, err = Cli(remote_project, capsys)("plan")
    assert code == 1
    assert "locked by another reflow run" in err and "runner-9" in err and "4242" in err, err
    assert "reflow state unlock --force a1b2c3" in err, err
    assert "Traceback" not in err


def bad_setup(cli: Cli, braze: Any) -> str:
    """Run `reflow run`: it must stop before anything is sent, with one clear line; that line."""
    before = braze.stats()["requests_total"]        # the fixture's catalog creation
    code, out, err = cli("run")
    assert code == 1, out + err
    assert braze.stats()["requests_total"] == before, "nothing is sent before the state is reachable"
    assert "Traceback" not in err and SECRET not in out + err
    return err


def test_a_missing_bucket_is_named_before_anything_is_sent(example_project: Path, s3: S3, braze_env, capsys):
    use_remote_state(example_project, "s3://no-such-bucket-here/prod/state.duckdb")
    err = bad_setup(Cli(example_project, capsys), braze_env)
    assert "s3://no-such-bucket-here/prod/state.duckdb" in err and "does not exist" in err, err


def test_an_unreachable_store_is_named(remote_project: Path, s3: S3, braze_env, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    err = bad_setup(Cli(remote_project, capsys), braze_env)
    assert "cannot be reached" in err and "AWS_ENDPOINT_URL" in err and s3.url(STATE_KEY) in err, err


def test_wrong_credentials_are_named_never_shown(remote_project: Path, s3: S3, braze_env, capsys, monkeypatch):
    import requests

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG")
    requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"0", timeout=10)    # moto checks keys from now on
    try:
        err = bad_setup(Cli(remote_project, capsys), braze_env)
    finally:
        requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert "access was refused" in err and "AWS_SECRET_ACCESS_KEY" in err and s3.url(STATE_KEY) in err, err


def test_plain_http_needs_to_be_allowed(remote_project: Path, s3: S3, braze_env, capsys, monkeypatch):
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    err = bad_setup(Cli(remote_project, capsys), braze_env)
    assert "AWS_ALLOW_HTTP=true" in err, err


def test_credentials_in_the_url_are_refused(example_project: Path, s3: S3, capsys):
    use_remote_state(example_project, f"s3://AKIA:{SECRET}@{s3.bucket}/state.duckdb")
    code, out, err = Cli(example_project, capsys)("plan")
    assert code == 1 and "carries no credentials" in err, err
    assert SECRET not in out + err
