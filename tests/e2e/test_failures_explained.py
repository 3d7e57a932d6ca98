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


def a_cast_failing_on_one_row(project) -> None:  # type: ignore[no-untyped-def]
    """The issue's model: loyalty_tier cast to an integer, which fails for the last customer only."""
    model = project / "models" / "braze_users.sql"
    failing = ("    case when c.customer_id = (select max(customer_id) from {{ ref('customers') }}) then 'gold' "
               "else '1' end::integer as loyalty_tier,")
    model.write_text(model.read_text().replace("    c.loyalty_tier,", failing))


CAST_FAILED = ("sync 'braze_users': model 'braze_users' (models/braze_users.sql) failed on the warehouse: "
               "Conversion Error: Could not convert string 'gold' to INT32")


def test_a_model_whose_cast_fails_on_one_row_is_named_by_plan_and_validate(cli, example_project, braze_env):
    a_cast_failing_on_one_row(example_project)
    code, out, err = cli("validate")                 # validate runs each model to its end, as plan does
    assert (code, out, err) == (1, "", f"error: {CAST_FAILED}\n")
    code, out, err = cli("plan")
    assert code == 1 and "unexpected" not in err and "please report it" not in err, err
    assert f"braze_users: not planned: {CAST_FAILED}" in out, out
    assert err.endswith(f"error: sync 'braze_users' was not planned: {CAST_FAILED}\n"), err
    code, out, err = cli("plan", "--json")
    failed = json.loads(out)["failed"]
    assert [(f["sync"], f["message"]) for f in failed] == [("braze_users", CAST_FAILED)], failed


def test_validate_reports_every_sync_whose_model_fails_to_run(cli, example_project, braze_env):
    """A duplicate key in one model and a failing cast in another: both at once, and no state is written."""
    a_cast_failing_on_one_row(example_project)
    model = example_project / "models" / "catalog_products.sql"
    model.write_text(f"select * from ({model.read_text()}) union all select * from ({model.read_text()}) limit 101")
    code, out, err = cli("validate")
    assert code == 1, out + err
    assert f"error: {CAST_FAILED}\n" in err
    assert "sync 'catalog_products': 1 duplicate primary key value(s)" in err, err
    assert not (example_project / ".reflow").exists()


def test_validate_says_how_many_rows_ran(cli, example_project):
    code, out, err = cli("validate")
    assert code == 0, err
    assert "every model renders, returns the columns its sync names and runs to its end (" in out, out
