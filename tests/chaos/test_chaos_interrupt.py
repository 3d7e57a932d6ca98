"""Interrupting `reflow apply` for real (a subprocess against the sandbox): Ctrl-C, Ctrl-C twice, kill -9.

Ctrl-C stops taking batches, waits for those in flight, records them, releases the lock and exits
130: everything Braze received is in the snapshot and the next plan holds exactly the rest.
A second Ctrl-C exits at once; kill -9 at random moments: the next runs finish the job and extra
copies of events stay within what was in flight (2 x concurrency requests of at most 75 rows).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from braze_checks import assert_in_step, model_rows, plan_json
from faulty_sandbox import run_until_clean
from reflow_process import SLOW_CONCURRENCY as CONCURRENCY
from reflow_process import SLOW_LATENCY_MS as LATENCY_MS
from reflow_process import Processes, wait_for_requests

from engine.state import State

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

TRACK_LIMIT = 75


@pytest.fixture
def start(processes: Processes) -> Callable[..., subprocess.Popen[str]]:
    return processes.start


def snapshot_keys(project: Path, sync: str) -> set[str]:
    with State.open(project / ".reflow" / "state.duckdb", command="test", read_only=True) as state:
        st = state.sync(sync)
        return {r[0] for r in state.con.execute(f"select key from {st.table}").fetchall()} if st else set()


def test_ctrl_c_finishes_in_flight_batches_records_them_and_exits_130(cli, slow_project, faulty, start):
    faulty.set(latency_ms=LATENCY_MS)
    assert cli("plan")[0] == 0
    proc = start(slow_project, "apply", "--yes")
    assert wait_for_requests(faulty, 25, proc), proc.communicate()   # well into order_events
    sent_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    stopped_after = time.monotonic() - sent_at
    assert proc.returncode == 130, out + err
    assert "finishing the batches in flight" in err and "Traceback" not in err, err
    assert stopped_after < 10 * LATENCY_MS / 1000, f"took {stopped_after:.1f}s to stop"

    code, out, err = cli("status")                 # the lock was released
    assert code == 0, err
    runs = json.loads(cli("history", "--json")[1])
    interrupted = [r for r in runs if r["status"] == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0]["acknowledged"] > 0, runs

    # everything Braze received was recorded, and nothing more
    received = {e["properties"]["order_id"] for e in faulty.events()}
    assert received and received == snapshot_keys(slow_project, "order_events")
    lines = Counter(p["properties"]["order_id"] for p in faulty.purchases())
    assert Counter(k.rsplit("-", 1)[0] for k in snapshot_keys(slow_project, "purchases")) == lines
    # the next plan holds exactly the rest: as added rows, or as retries for rows of a batch that the stop
    # caught before it was sent (not attempted: pending, and planned again)
    plan = {s["name"]: s for s in plan_json(cli)["syncs"]}
    events = {r["order_id"] for r in model_rows(slow_project, "order_events")}
    assert plan["order_events"]["added"] + plan["order_events"]["retry"] == len(events - received) > 0
    assert not plan["braze_users"]["has_changes"]
    faulty.set()
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert_in_step(slow_project, faulty)           # exactly once: nothing was sent twice


def test_second_ctrl_c_exits_at_once_and_is_still_safe(cli, slow_project, faulty, start):
    faulty.set(latency_ms=LATENCY_MS * 4)
    # one big sync, so both signals land mid-send (not between syncs, where the first alone ends it)
    assert cli("plan", "--select", "purchases")[0] == 0
    proc = start(slow_project, "apply", "--yes")
    assert wait_for_requests(faulty, 20, proc), proc.communicate()
    # requests go out and come back in lockstep; half a latency later, both slots are mid-request
    time.sleep(LATENCY_MS * 4 / 2000)
    sent_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert "second interrupt: exiting now" in err and "Traceback" not in err, err
    assert time.monotonic() - sent_at < LATENCY_MS * 4 / 1000, "the second Ctrl-C did not exit at once"

    assert cli("status")[0] == 0                   # the OS released the lock
    faulty.set()
    run_until_clean(cli)
    extras = assert_in_step(slow_project, faulty, exactly_once=False)
    assert extras.total <= 2 * CONCURRENCY * TRACK_LIMIT, extras


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing(cli, slow_project, faulty, start, record_property):
    trials = 8
    rng = random.Random(2024)
    faulty.set(latency_ms=60)
    killed_mid_apply = 0
    outcomes: list[int] = []
    for trial in range(trials):
        if trial:
            assert cli("example", "mutate", "--step", str(trial))[0] == 0
        assert cli("plan")[0] == 0
        before = faulty.stats()["requests_total"]
        proc = start(slow_project, "apply", "--yes")
        if wait_for_requests(faulty, before + rng.randint(1, 12), proc):
            time.sleep(rng.uniform(0, 0.1))
            if proc.poll() is None:
                killed_mid_apply += 1
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        outcomes.append(proc.returncode)
        assert cli("status")[0] == 0               # no stale lock
    assert killed_mid_apply >= trials // 2, f"only {killed_mid_apply} kills landed mid-apply: {outcomes}"
    faulty.set()
    run_until_clean(cli)
    extras = assert_in_step(slow_project, faulty, exactly_once=False)
    bound = killed_mid_apply * 2 * CONCURRENCY * TRACK_LIMIT
    measured = {"kills_mid_apply": killed_mid_apply, "extra_copies": extras.total, "bound": bound}
    record_property("kill9", json.dumps(measured))
    print("kill9", json.dumps(measured))
    assert extras.total <= bound, measured


def test_sigterm_during_a_long_rate_limit_wait_exits_promptly(cli, slow_project, faulty, start):
    """Braze asks for a minute's wait (a 429 with its reset 60 s away): a scheduler's SIGTERM must not
    wait for it (before, the process slept out the window, inviting the scheduler's SIGKILL)."""
    faulty.set(rate_limit=(1, 60.0))               # one /users/track request a minute
    assert cli("plan")[0] == 0
    proc = start(slow_project, "apply", "--yes")
    assert wait_for_requests(faulty, 2, proc), proc.communicate()    # the second one was told to wait
    time.sleep(0.5)
    sent_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert time.monotonic() - sent_at < 5, "the rate-limit wait did not end on SIGTERM"
    runs = json.loads(cli("history", "--json")[1])
    assert any(r["status"] == "interrupted" for r in runs) and not any(r["status"] == "running" for r in runs)
