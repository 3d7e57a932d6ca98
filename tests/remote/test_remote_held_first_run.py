"""A held `send_all` first run on a remote state (found by a sceptical run): the runner's first upload
of the run must hold the rows it is about to send as plan rows, so that a runner killed mid-send, before
its next upload, is recovered from (every row of its plan possibly sent), not forgotten."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from braze_checks import model_rows
from s3_bucket import STATE_KEY, second_folder, use_remote_state
from test_remote_runners import finish, one_request_at_a_time, start, wait_until

pytestmark = pytest.mark.e2e


def test_a_remote_runner_killed_during_a_held_first_run_leaves_no_profile_unknown(example_project: Path, s3: Any,
                                                                                   slow_braze: Any, tmp_path: Path):
    """First run of braze_users (held send_all) on a remote state that uploads only at the run's start
    and end: the runner is killed once profiles landed. Another folder's runner recovers the dead run;
    customers whose profiles landed then leave the model are unset (on_removed: unset). Before the fix
    the run's first upload held the rows unreleased: recovery found none of them, and the next run
    planned a fresh first run, leaving the departed customers' profiles in Braze, unknown to the state."""
    use_remote_state(example_project, s3.url(STATE_KEY), upload_every=300)     # no upload during the send
    one_request_at_a_time(example_project)
    runner = start(example_project, "run", "--select", "braze_users")
    wait_until(lambda: len(slow_braze.users()) > 0, runner)
    os.kill(runner.pid, signal.SIGKILL)
    finish(runner)
    time.sleep(1)           # the request in flight lands
    landed = {u["external_id"] for u in slow_braze.users()}
    assert landed

    elsewhere = second_folder(example_project, tmp_path)
    con = duckdb.connect(str(elsewhere / "warehouse.duckdb"))
    con.execute("UPDATE customers SET deleted = true WHERE customer_id IN (SELECT unnest(?))", [sorted(landed)[:3]])
    con.close()
    gone = landed - {r["customer_id"] for r in model_rows(elsewhere, "braze_users")}
    assert len(gone) == 3
    code, out, err = finish(start(elsewhere, "run", "--select", "braze_users", "--lock-timeout", "60",
                                  "--allow-guard", "max_removed_pct", "--allow-guard", "max_changed_pct"))
    assert code in (0, 3), out + err
    kept = [k for k in sorted(gone) if (slow_braze.user(k) or {}).get("custom_attributes", {}).get("loyalty_tier")]
    assert not kept, f"profiles sent by the dead run, gone from the model, left as sent: {kept}\n{out}"
