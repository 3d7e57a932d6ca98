"""A `send_all` first run holds its rows typed (`plan_rows.HeldRows` with `HeldSends`): the plan judges
each row's payload checks as it reads the model, `apply` renders the payloads before it sends. What the
plan shows and Braze receives must be what the row-by-row path (every row through `prepare`) gives, for
awkward rows too, and the held rows must come and go with their plans, whatever stops an apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
from braze_checks import model_rows, plan_json

from engine.state import DB, State

pytestmark = pytest.mark.e2e

# rows whose values the SQL checks cannot prove valid (the Python path plans them: a field left out,
# or the row invalid) beside plain ones
AWKWARD = """
    update customers set email = 'not an email' where customer_id = 'c_00003';
    update customers set country = 'XX' where customer_id = 'c_00004';
    update customers set first_name = repeat('é', 300) where customer_id = 'c_00005';
    update customers set dob = date '0001-01-01' - 1 where customer_id = 'c_00006';
    update customers set loyalty_tier = 'tier|' || chr(1) where customer_id = 'c_00007';
"""


def awkward(project: Path) -> None:
    con = duckdb.connect(str(project / "warehouse.duckdb"))
    try:
        con.execute(AWKWARD)
    finally:
        con.close()


def shown(cli: Any) -> dict[str, tuple[Any, ...]]:
    code, out, err = cli("show", "--sync", "braze_users", "--limit", "0", "--format", "json")
    assert code == 0, err
    return {r["key"]: (r["op"], r["status"], json.dumps(r["payload"], sort_keys=True), r.get("reason"))
            for r in json.loads(out)}


def tracked(sandbox: Any) -> int:
    """Requests the sandbox answered on /users/track."""
    return sum(sum(codes.values()) for endpoint, codes in sandbox.stats()["requests"].items()
               if endpoint.startswith("POST /users/track"))


def users_in_step(project: Path, sandbox: Any, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Braze's profiles hold what the users model says (as `assert_in_step` checks them), but for `skip`."""
    for row in model_rows(project, "braze_users"):
        if row["customer_id"] in skip:
            continue
        profile = sandbox.user(row["customer_id"])
        assert profile is not None, row["customer_id"]
        attrs = profile["custom_attributes"]
        assert (profile.get("email"), profile.get("first_name"), profile.get("country")) == (
            row["email"], row["first_name"], row["country"])
        assert (attrs["loyalty_tier"], attrs.get("orders_count"), attrs.get("preferences")) == (
            row["loyalty_tier"], row["orders_count"], row["preferences"])
        assert attrs.get("lifetime_value") == pytest.approx(row["lifetime_value"])


def held(project: Path) -> list[tuple[Any, ...]]:
    with State.open(project / ".reflow" / "state.duckdb", command="test", read_only=True) as state:
        return state.con.execute(f"select plan_id, sync, sends is not null from {DB}.plan_held").fetchall()


def snapshot(project: Path) -> dict[str, str]:
    with State.open(project / ".reflow" / "state.duckdb", command="test", read_only=True) as state:
        st = state.sync("braze_users")
        assert st is not None
        return dict(state.con.execute(f"select key, row_json from {st.table}").fetchall())


def test_a_held_first_run_plans_and_sends_what_the_row_by_row_path_does(cli, braze_env, example_project,
                                                                       monkeypatch):
    """Counts, every row's status, payload and reason, Braze's profiles and the snapshot: the same with
    the rows held as with every row through `prepare` (awkward rows included)."""
    awkward(example_project)
    first = plan_json(cli, "--select", "braze_users")
    [sync] = first["syncs"]
    assert held(example_project) == [(first["plan_id"], "braze_users", True)]
    rows_held = shown(cli)
    code, out, err = cli("apply", "--yes")
    assert code == 3 and "4 rows sent without a field" in out, out + err     # 3: a row invalid
    assert held(example_project) == []          # written as plan rows before the send
    users_in_step(example_project, braze_env, skip={f"c_{i:05d}" for i in range(3, 8)})
    recorded = snapshot(example_project)

    from engine.destinations.braze.destination import BrazeDestination

    shutil.rmtree(example_project / ".reflow")
    monkeypatch.setattr(BrazeDestination, "sql_items", lambda self, columns, **_: None)
    again = plan_json(cli, "--select", "braze_users")
    assert held(example_project) == []          # no SQL payloads: nothing is held
    [row_by_row] = again["syncs"]
    for count in ("added", "invalid", "data_points", "requests"):
        assert sync[count] == row_by_row[count], count
    assert rows_held == shown(cli)
    assert cli("apply", "--yes")[0] == code
    assert snapshot(example_project) == recorded
    statuses = {k: v[1] for k, v in rows_held.items()}
    reasons = {k: v[3] for k, v in rows_held.items() if v[3]}
    assert {"c_00003", "c_00004", "c_00005"} <= set(reasons) and set(statuses.values()) >= {"send"}, reasons


def test_a_held_first_run_shows_its_payloads_in_key_order(cli, braze_env, example_project):
    plan = plan_json(cli, "--select", "braze_users")
    [sync] = plan["syncs"]
    keys = [s["key"] for s in sync["samples"]["added"]]
    assert keys == sorted(keys) and keys[0] == "c_00001", keys
    assert all(s["payload"]["external_id"] == s["key"] for s in sync["samples"]["added"])
    code, out, _ = cli("show", "--sync", "braze_users", "--key", "c_00010", "--format", "json")
    [row] = json.loads(out)
    assert row["status"] == "send" and row["payload"]["external_id"] == "c_00010"


def test_a_blocked_held_plan_sends_nothing_and_a_held_plan_sends_what_it_planned(cli, braze_env, example_project):
    """A guard that blocks the sync: nothing is released, nothing sent. A model changed between plan and
    apply: apply sends the plan's rows as planned (the plan binds what is sent), the next plan the change."""
    path = example_project / "syncs" / "braze_users.yml"
    path.write_text(path.read_text().replace("guards:\n", "guards:\n  max_added: 5\n"))
    plan_json(cli, "--select", "braze_users")
    code, out, err = cli("apply", "--yes")
    assert code != 0 and tracked(braze_env) == 0, out + err
    assert len(held(example_project)) == 1
    path.write_text(path.read_text().replace("  max_added: 5\n", ""))
    plan_json(cli, "--select", "braze_users")
    planned = braze_env and model_rows(example_project, "braze_users")
    con = duckdb.connect(str(example_project / "warehouse.duckdb"))
    con.execute("update customers set first_name = 'Changed' where customer_id = 'c_00002'")
    con.close()
    assert cli("apply", "--yes")[0] == 0
    first_name = next(r["first_name"] for r in planned if r["customer_id"] == "c_00002")
    assert braze_env.user("c_00002")["first_name"] == first_name != "Changed"
    [users] = plan_json(cli, "--select", "braze_users")["syncs"]
    assert (users["added"], users["changed"]) == (0, 1)
    assert cli("apply", "--yes")[0] == 0
    users_in_step(example_project, braze_env)
    assert braze_env.user("c_00002")["first_name"] == "Changed"


def test_an_apply_stopped_after_the_rows_are_released_loses_nothing(cli, braze_env, example_project,
                                                                   monkeypatch):
    """The held rows are written as plan rows, then the apply dies before its first request: the rows
    were not sent; the next plan plans them again and its apply lands every one."""
    from engine import runner

    def dying(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt("killed after the release, before the send")

    plan_json(cli, "--select", "braze_users")
    with monkeypatch.context() as patched:
        patched.setattr(runner, "_send", dying)
        cli("apply", "--yes")
    assert held(example_project) == [] and tracked(braze_env) == 0
    replan = plan_json(cli, "--select", "braze_users")
    assert replan["syncs"][0]["added"] + replan["syncs"][0]["retry"] > 0
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    users_in_step(example_project, braze_env)
