"""Rows left undelivered say why, everywhere a user looks: apply's output, `status` and `history`."""

from __future__ import annotations

import json
import socket

import pytest

pytestmark = pytest.mark.e2e


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_braze_is_named_in_apply_status_and_history(cli, example_project, monkeypatch):
    port = closed_port()
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("BRAZE_API_KEY", "test-key")
    project_file = example_project / "reflow_project.yml"
    project_file.write_text(project_file.read_text() + "    max_retries: 0\n")
    code, out, err = cli("run", "--select", "braze_users")
    assert code == 3, out + err
    reason = f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert "why: not sent: " in out and reason in out, out

    code, out, err = cli("status")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("braze_users"))
    assert reason in line and "partial" in line, out

    code, out, err = cli("history", "--json")
    [run] = [r for r in json.loads(out) if r["sync"] == "braze_users"]
    assert run["status"] == "partial" and reason in (run["message"] or ""), run

    code, out, _ = cli("plan", "--select", "braze_users", "--json")
    [users] = json.loads(out)["syncs"]
    assert users["retry"] == users["total"] and users["added"] == 0     # every row tried, none lost
