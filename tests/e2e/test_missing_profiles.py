"""Rows whose user Braze may not have (braze-api.md §0.1): Braze answers success to an update-only
object for a user it does not know and keeps nothing, and never lets an alias-identified event or
purchase create its profile. Told through the CLI against the sandbox, which follows both rules and
makes new profiles visible to other endpoints only after a delay, as Braze does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from braze_checks import model_rows

from engine.sandbox.testing import SandboxHandle, running_sandbox

pytestmark = pytest.mark.e2e

FAST_EXPORT = "    export_rate_limit: 1000\n"       # the sandbox does not need Braze's 250/min here


@pytest.fixture
def slow_braze(example_project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxHandle]:
    """A sandbox where a new profile stays invisible to other endpoints for 600 ms."""
    with running_sandbox(visibility_delay_ms=600) as sandbox:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
        project_file = example_project / "reflow_project.yml"
        project_file.write_text(project_file.read_text() + FAST_EXPORT)
        yield sandbox


def edit_sync(project: Path, name: str, **destination: object) -> None:
    path = project / "syncs" / f"{name}.yml"
    doc = yaml.safe_load(path.read_text())
    doc["destination"].update(destination)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def create_profiles(sandbox: SandboxHandle, external_ids: list[str]) -> None:
    body = {"attributes": [{"external_id": x, "first_name": "Made elsewhere"} for x in external_ids]}
    r = requests.post(f"{sandbox.url}/users/track", json=body, headers=sandbox.headers, timeout=10)
    assert r.status_code == 201, r.text


def test_alias_events_create_their_profile_first_and_land_in_the_same_run(cli, example_project, slow_braze):
    edit_sync(example_project, "order_events", identifier={"user_alias": {"alias_name": "customer_id",
                                                                          "alias_label": "crm"}})
    code, out, err = cli("plan", "--select", "order_events")
    assert code == 0, out + err
    assert "alias profile is created first" in out, out
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    orders = model_rows(example_project, "order_events")
    customers = {o["customer_id"] for o in orders}
    events = slow_braze.events()
    assert len(events) == len(orders)
    owners = {e["braze_id"] for e in events}
    aliases = {slow_braze.user(braze_id=b)["user_aliases"][0]["alias_name"] for b in owners}
    assert aliases == customers
    assert all(u["external_id"] is None for u in slow_braze.users())      # alias-only profiles
    code, out, _ = cli("plan", "--select", "order_events", "--json")
    assert not json.loads(out)["has_changes"]


def test_update_only_rows_wait_for_their_profile_then_go(cli, example_project, slow_braze):
    edit_sync(example_project, "braze_users", mode="update")
    code, out, err = cli("plan", "--select", "braze_users")
    assert code == 0, out + err
    assert "missing_users: wait" in out, out
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err             # waiting is what the sync asks for, not a failure
    assert "waiting for the user's profile" in out, out
    assert slow_braze.users() == []          # nothing created, nothing sent to nobody
    customers = sorted(r["customer_id"] for r in model_rows(example_project, "braze_users"))
    total = len(customers)
    code, out, _ = cli("status")
    assert "waiting for profile" in out, out

    # three profiles appear in Braze (the app signed them up); only their rows go on the next run
    first = customers[:3]
    create_profiles(slow_braze, first)
    time.sleep(0.7)                          # past the sandbox's visibility delay
    code, out, err = cli("plan", "--select", "braze_users", "--json")
    [users] = json.loads(out)["syncs"]
    assert users["retry"] == total and any("waiting for what they need" in n for n in users["notes"])
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    for customer in first:
        profile = slow_braze.user(customer)
        assert profile["custom_attributes"] or profile.get("email"), profile    # the model's values landed
    assert len(slow_braze.users()) == 3
    code, out, _ = cli("status")
    line = next(x for x in out.splitlines() if x.startswith("braze_users"))
    assert line.split()[1:4] == ["3", "0", str(total - 3)], out     # 3 in the snapshot, the rest pending


def test_a_row_that_waited_too_long_is_sent_unchecked_and_listed(cli, example_project, slow_braze):
    edit_sync(example_project, "braze_users", mode="update", missing_users_max_wait="1s")
    assert cli("run", "--select", "braze_users")[0] == 0
    time.sleep(1.1)                          # the rows have now waited longer than they may
    code, out, err = cli("run", "--select", "braze_users")
    assert code == 0, out + err
    assert "sent with a note" in out, out
    code, out, _ = cli("errors", "braze_users", "--json")
    notes = json.loads(out)
    assert notes and all("sent without checking" in n["reason"] for n in notes)
    assert slow_braze.users() == []          # Braze kept nothing: update-only, as the note says
    code, out, _ = cli("plan", "--select", "braze_users", "--json")
    assert not json.loads(out)["has_changes"]


def test_missing_users_skip_sends_and_says_so(cli, example_project, slow_braze):
    edit_sync(example_project, "braze_users", mode="update", missing_users="skip")
    code, out, err = cli("plan", "--select", "braze_users")
    assert "missing_users: skip" in out and "recorded as sent" in out, out
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert slow_braze.users() == []
    assert not any(path.startswith("POST /users/export/ids") for path in slow_braze.stats()["requests"])
    code, out, _ = cli("plan", "--select", "braze_users", "--json")
    assert not json.loads(out)["has_changes"]


def test_a_lookup_braze_does_not_answer_leaves_rows_undelivered_not_waiting(cli, example_project, monkeypatch):
    """Braze was not asked (its lookups fail): nothing is known of the users, so the rows are undelivered
    (exit 3, `partial`) and their wait for a profile does not start."""
    with running_sandbox(fail_5xx_rate=1.0, seed=1) as sandbox:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
        project_file = example_project / "reflow_project.yml"
        project_file.write_text(project_file.read_text() + FAST_EXPORT + "    max_retries: 0\n")
        edit_sync(example_project, "braze_users", mode="update")
        code, out, err = cli("run", "--select", "braze_users")
        assert code == 3, out + err
        assert "looking up the user's profile failed" in out and "waiting for the user's profile" not in out, out
        code, out, _ = cli("history", "--json")
        [run] = [r for r in json.loads(out) if r["sync"] == "braze_users"]
        assert run["status"] == "partial", run
        assert not any(p.startswith("POST /users/track") for p in sandbox.stats()["requests"])


def test_switching_to_skip_says_so_for_rows_that_were_waiting(cli, example_project, slow_braze):
    edit_sync(example_project, "braze_users", mode="update")
    assert cli("run", "--select", "braze_users")[0] == 0          # every row waits: nobody is in Braze
    edit_sync(example_project, "braze_users", missing_users="skip")
    code, out, err = cli("plan", "--select", "braze_users", "--json")
    [users] = json.loads(out)["syncs"]
    assert users["retry"] and any(n.startswith("missing_users: skip") for n in users["notes"]), users["notes"]


def test_a_waiting_row_that_leaves_the_model_is_no_longer_pending(cli, example_project, slow_braze):
    import duckdb

    edit_sync(example_project, "braze_users", mode="update", missing_users_max_wait="1s")
    assert cli("run", "--select", "braze_users")[0] == 0
    customers = sorted(r["customer_id"] for r in model_rows(example_project, "braze_users"))
    gone = customers[:10]
    con = duckdb.connect(str(example_project / "warehouse.duckdb"))
    saved = con.execute("select * from customers where customer_id in (select unnest(?))", [gone]).fetchall()
    con.execute("delete from customers where customer_id in (select unnest(?))", [gone])
    con.close()
    assert cli("run", "--select", "braze_users")[0] == 0
    code, out, _ = cli("status")
    line = next(x for x in out.splitlines() if x.startswith("braze_users"))
    assert line.split()[3] == str(len(customers) - 10), out          # pending: only rows still in the model
    time.sleep(1.1)
    con = duckdb.connect(str(example_project / "warehouse.duckdb"))
    con.executemany("insert into customers values (" + ", ".join("?" * len(saved[0])) + ")", saved)
    con.close()
    # back in the model: they start waiting afresh, so they are looked up, not sent unchecked
    code, out, _ = cli("plan", "--select", "braze_users", "--json")
    assert code == 0
    code, out, _ = cli("show", "--sync", "braze_users", "--format", "json")
    rows = {r["key"]: r for r in json.loads(out)}
    assert all("sent without checking" not in (rows[k]["reason"] or "") for k in gone), [rows[k] for k in gone]
