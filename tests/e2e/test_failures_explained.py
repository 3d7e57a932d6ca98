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


def test_an_apply_that_cannot_start_leaves_nothing_dangling(cli, braze_env, monkeypatch):
    """No API key: every sync fails before its first request, says why, and the plan can be applied
    again once the key is set (it is not left 'applying', no run stays 'running')."""
    code, out, err = cli("plan")
    assert code == 0, err
    monkeypatch.delenv("BRAZE_API_KEY")
    code, out, err = cli("apply", "--yes")
    assert code == 1, out + err
    assert "BRAZE_API_KEY" in out and "stopped:" in out
    code, out, _ = cli("history", "--json")
    runs = json.loads(out)
    assert runs and all(r["status"] == "failed" and "BRAZE_API_KEY" in (r["message"] or "") for r in runs)
    monkeypatch.setenv("BRAZE_API_KEY", braze_env.api_key)
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert braze_env.stats()["data_points"] > 0
    code, out, _ = cli("status")
    assert "running" not in out and "failed" not in out


def test_a_delete_of_a_profile_too_new_for_braze_to_see_is_asked_again(cli, example_project, monkeypatch):
    """/users/delete answers how many profiles it deleted, not which: fewer than sent means a profile
    did not exist, or was created too recently for Braze to see (it creates profiles asynchronously).
    The request is asked once more a few seconds later; what is still not deleted has no profile, and
    `reflow errors` says so."""
    import duckdb
    import requests

    from engine.demo import PRODUCTS_CATALOG
    from engine.sandbox.testing import running_sandbox

    with running_sandbox(visibility_delay_ms=1500) as sandbox:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
        requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
        assert cli("run", "--select", "braze_users")[0] == 0      # c_00010's profile: created just now
        con = duckdb.connect(str(example_project / "warehouse.duckdb"))
        con.execute("insert into gdpr_requests values ('c_00010', now()), ('nobody_ever', now())")
        con.execute("delete from gdpr_requests where customer_id not in ('c_00010', 'nobody_ever')")
        con.close()
        code, out, err = cli("run", "--select", "gdpr_deletes")
        assert code == 0, out + err
        assert sandbox.user("c_00010") is None                  # deleted on the second asking
        code, out, _ = cli("errors", "gdpr_deletes", "--json")
        notes = {r["key"]: r["reason"] for r in json.loads(out)}
        assert set(notes) == {"c_00010", "nobody_ever"}
        assert all("Braze deleted 1 of the 2 profiles of this request, twice asked" in n for n in notes.values())
        code, out, _ = cli("plan", "--select", "gdpr_deletes", "--json")
        assert not json.loads(out)["has_changes"]
