"""Runners on different machines (working folders) sharing one state in the bucket, as processes of their
own: two at once (one waits or is refused; nothing lost or sent twice), one killed with SIGKILL mid-apply
(the next goes on from its last upload; duplicates within the stated bound), a dead holder's lock forced
open, and an upload refused after the lock was lost (acknowledgements kept in the working copy)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from s3_bucket import S3, STATE_KEY, second_folder

from engine.state import State

pytestmark = pytest.mark.e2e


def start(project: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine", "--project-dir", str(project), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def order_event_counts(braze: Any) -> collections.Counter[str]:
    return collections.Counter(str(e["properties"]["order_id"]) for e in braze.events()
                               if e.get("name") == "order_placed")


def expected_orders(project: Path) -> int:
    import duckdb

    con = duckdb.connect(str(project / "warehouse.duckdb"), read_only=True)
    try:
        sql = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(project), "compile", "order_events"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        row = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()
    finally:
        con.close()
    assert row
    return int(row[0])


def wait_until(condition: Any, proc: subprocess.Popen[str], limit: float = 90) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, f"the run ended first: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def stored_acknowledged(s3: S3, tmp_path: Path, sync: str) -> int:
    """Rows of `sync` the uploaded state holds as acknowledged (its snapshot plus unfolded acks)."""
    copy = tmp_path / f"uploaded-{time.monotonic_ns()}.duckdb"
    copy.write_bytes(s3.get(STATE_KEY) or b"")
    with State.open(copy, command="test", read_only=True) as state:
        return state.snapshot_rows(sync)


def test_two_runners_at_once_one_waits_the_other_is_refused_nothing_sent_twice(
        remote_project: Path, s3: S3, slow_braze, tmp_path):
    first = start(remote_project, "run")
    wait_until(lambda: slow_braze.stats()["requests_total"] >= 3, first)
    refused = start(second_folder(remote_project, tmp_path, "b"), "run")
    waiting = start(second_folder(remote_project, tmp_path, "c"), "run", "--lock-timeout", "120")
    code, out, err = finish(refused)
    assert code == 1, out + err
    assert "locked by another reflow run" in err and f"pid {first.pid}" in err, err
    assert "reflow state unlock --force" in err and "Traceback" not in err
    code, out, err = finish(first)
    assert code == 0, out + err
    code, out, err = finish(waiting)
    assert code == 0, out + err
    assert "no changes" in out, out
    counts = order_event_counts(slow_braze)
    assert len(counts) == expected_orders(remote_project)          # nothing lost
    assert max(counts.values()) == 1                                # nothing sent twice
    assert s3.keys() == [STATE_KEY]


def test_a_runner_killed_mid_apply_the_next_goes_on_from_its_last_upload(
        remote_project: Path, s3: S3, slow_braze, tmp_path):
    one_request_at_a_time(remote_project)
    total = expected_orders(remote_project)
    first = start(remote_project, "run")
    wait_until(lambda: 0 < stored_or_zero(s3, tmp_path) and len(order_event_counts(slow_braze)) > total // 3, first)
    os.kill(first.pid, signal.SIGKILL)
    finish(first)
    time.sleep(1)           # the sandbox finishes the request in flight (its answer never reaches the runner)
    sent_by_first = sum(order_event_counts(slow_braze).values())
    uploaded = stored_acknowledged(s3, tmp_path, "order_events")
    lock = json.loads(s3.get(STATE_KEY + ".lock") or b"{}")
    assert lock.get("pid") == first.pid, "a killed runner's lock stays until it goes stale"

    # another machine: refused at once (naming the dead holder), then waits for the lock to go stale
    elsewhere = second_folder(remote_project, tmp_path)
    code, out, err = finish(start(elsewhere, "run"))
    assert code == 1 and lock["id"] in err, err
    code, out, err = finish(start(elsewhere, "run", "--lock-timeout", "60"))
    assert code == 0, out + err

    counts = order_event_counts(slow_braze)
    assert len(counts) == total                                     # nothing lost
    duplicates = sum(n - 1 for n in counts.values())
    # the bound the README states: what the dead runner sent after its last upload is sent again
    assert duplicates <= sent_by_first - uploaded, (duplicates, sent_by_first, uploaded)
    code, out, err = finish(start(elsewhere, "plan"))
    assert code == 0 and "no changes" in out.lower(), out + err


def one_request_at_a_time(project: Path) -> None:
    file = project / "reflow_project.yml"
    file.write_text(file.read_text().replace("    type: braze", "    type: braze\n    concurrency: 1", 1))


def stored_or_zero(s3: S3, tmp_path: Path) -> int:
    """The uploaded state's acknowledged order events, 0 before any upload (or one mid-write)."""
    if s3.get(STATE_KEY) is None:
        return 0
    try:
        return stored_acknowledged(s3, tmp_path, "order_events")
    except Exception:  # noqa: BLE001 - an object replaced while read: look again
        return 0


def test_a_dead_holders_lock_is_forced_open(remote_project: Path, s3: S3, braze_env, tmp_path):
    s3.put(STATE_KEY + ".lock", json.dumps({"id": "dead00beef11", "host": "gone-runner", "pid": 99999,
                                            "command": "run", "expiry": 3600}).encode())
    code, out, err = finish(start(remote_project, "state", "unlock", "dead00beef11"))
    assert code == 1 and "--force" in err, err
    code, out, err = finish(start(remote_project, "state", "unlock", "--force", "not-this-one"))
    assert code == 1 and "gone-runner" in err and "nothing was removed" in err, err
    code, out, err = finish(start(remote_project, "state", "unlock", "--force", "dead00beef11"))
    assert code == 0, out + err
    assert "gone-runner" in out
    assert s3.get(STATE_KEY + ".lock") is None
    code, out, err = finish(start(remote_project, "run"))
    assert code == 0, out + err


def test_a_stale_lock_is_taken_over_by_a_waiting_run(remote_project: Path, s3: S3, braze_env):
    s3.put(STATE_KEY + ".lock", json.dumps({"id": "stale0000001", "host": "gone-runner", "pid": 99999,
                                            "command": "run", "expiry": 2}).encode())
    began = time.monotonic()
    code, out, err = finish(start(remote_project, "plan", "--lock-timeout", "30"))
    assert code == 0, out + err
    assert 2 <= time.monotonic() - began < 30
    assert s3.get(STATE_KEY + ".lock") is None


def test_an_upload_refused_after_the_lock_was_lost_keeps_the_acknowledgements(
        remote_project: Path, s3: S3, slow_braze, tmp_path):
    total = expected_orders(remote_project)
    runner = start(remote_project, "run")
    wait_until(lambda: len(order_event_counts(slow_braze)) > total // 4, runner)
    # someone forced the lock open and another writer stored its own state
    s3.delete(STATE_KEY + ".lock")
    s3.put(STATE_KEY, b"another writer's state")
    code, out, err = finish(runner)
    assert code == 1, out + err
    assert "reflow state push --force" in err and "reflow state pull --force" in err, err
    assert "Traceback" not in err
    sent = order_event_counts(slow_braze)
    copy = next((remote_project / ".reflow" / "remote").glob("*/state.duckdb"))
    with State.open(copy, command="test", read_only=True) as state:
        kept = state.snapshot_rows("order_events")
    assert kept >= sum(sent.values()) - 2 * 4 * 75, "the acknowledged rows are kept in the working copy"
    assert s3.get(STATE_KEY) == b"another writer's state", "nothing was uploaded over the other writer"

    # the next run on this machine stops too, until someone reconciles
    code, out, err = finish(start(remote_project, "plan"))
    assert code == 1 and "reflow state push --force" in err, err
    code, out, err = finish(start(remote_project, "state", "push", "--force"))
    assert code == 0, out + err
    code, out, err = finish(start(second_folder(remote_project, tmp_path), "run"))
    assert code == 0, out + err
    counts = order_event_counts(slow_braze)
    assert len(counts) == total
    assert max(counts.values()) == 1, "every acknowledged row was kept: nothing sent twice"


def set_tier(project: Path, tier: str | None) -> None:
    """Every customer's loyalty tier in the example warehouse: `tier`, or back to what it was (None)."""
    import duckdb

    con = duckdb.connect(str(project / "warehouse.duckdb"))
    try:
        if tier is None:
            con.execute("UPDATE customers SET loyalty_tier = was_tier")
        else:
            if "was_tier" not in [r[0] for r in con.execute("DESCRIBE customers").fetchall()]:
                con.execute("ALTER TABLE customers ADD COLUMN was_tier VARCHAR")
                con.execute("UPDATE customers SET was_tier = loyalty_tier")
            con.execute("UPDATE customers SET loyalty_tier = ?", [tier])
    finally:
        con.close()


def test_a_runner_killed_before_its_first_upload_leaves_no_profile_out_of_step(
        example_project: Path, s3: S3, slow_braze, tmp_path):
    """A runner that sends profile changes and dies before any upload of its run: the next runner (in
    another folder, after the model reverted the change) must still know those rows may hold the new
    values in Braze, and send them again; not report `no changes` while Braze holds what it never
    recorded."""
    from s3_bucket import use_remote_state

    use_remote_state(example_project, s3.url(STATE_KEY), upload_every=300)     # no upload during the send
    one_request_at_a_time(example_project)
    code, out, err = finish(start(example_project, "run"))
    assert code == 0, out + err
    set_tier(example_project, "obsidian")
    runner = start(example_project, "run", "--allow-guard", "max_changed_pct", "--allow-guard", "max_removed_pct")
    wait_until(lambda: any(u.get("custom_attributes", {}).get("loyalty_tier") == "obsidian"
                           for u in slow_braze.users()), runner)
    os.kill(runner.pid, signal.SIGKILL)
    finish(runner)
    time.sleep(1)           # the request in flight lands
    assert any(u.get("custom_attributes", {}).get("loyalty_tier") == "obsidian" for u in slow_braze.users())

    elsewhere = second_folder(example_project, tmp_path)
    set_tier(elsewhere, None)           # the model changed back before the next run
    code, out, err = finish(start(elsewhere, "run", "--lock-timeout", "60"))
    assert code == 0, out + err
    out_of_step = [u["external_id"] for u in slow_braze.users()
                   if u.get("custom_attributes", {}).get("loyalty_tier") == "obsidian"]
    assert not out_of_step, f"{len(out_of_step)} profiles hold a value Reflow never recorded sending: {out_of_step[:3]}"


def test_a_paused_holder_whose_lock_was_taken_over_sends_nothing_more(
        example_project: Path, s3: S3, slow_braze, tmp_path):
    """A holder frozen (SIGSTOP: a VM paused, a stalled process) past its lock's expiry, while a waiting run
    takes the lock over, plans from a changed model and sends: once it wakes, the frozen holder must not
    send its older values over the new ones (Braze would hold what neither state records), and after the
    reconciliation its error advises, Braze holds what the model says."""
    from s3_bucket import use_remote_state

    remote_project = example_project
    use_remote_state(remote_project, s3.url(STATE_KEY), upload_every=300)      # no upload to find out first
    one_request_at_a_time(remote_project)
    code, out, err = finish(start(remote_project, "run"))
    assert code == 0, out + err
    set_tier(remote_project, "obsidian")
    frozen = start(remote_project, "run", "--allow-guard", "max_changed_pct", "--allow-guard", "max_removed_pct")
    wait_until(lambda: any(u.get("custom_attributes", {}).get("loyalty_tier") == "obsidian"
                           for u in slow_braze.users()), frozen)
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        elsewhere = second_folder(remote_project, tmp_path)
        set_tier(elsewhere, "platinum")         # the model moved on before the next run
        code, out, err = finish(start(elsewhere, "run", "--lock-timeout", "60", "--allow-guard", "max_changed_pct",
                                      "--allow-guard", "max_removed_pct"))
        assert code == 0, out + err
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    code, out, err = finish(frozen)
    assert code == 1 and "reflow state pull --force" in err, out + err
    assert "Traceback" not in err
    # the two histories the error tells apart: the stored state's, and this folder's working copy's
    code, out, err = finish(start(remote_project, "history", "--json", "--limit", "1000"))
    assert code == 0, out + err
    stored = {r["run_id"]: r["status"] for r in json.loads(out)}
    code, out, err = finish(start(remote_project, "history", "--json", "--limit", "1000", "--working-copy"))
    assert code == 0, out + err
    here = {r["run_id"]: r["status"] for r in json.loads(out)}
    assert set(stored) - set(here), (here, stored)           # the other folder's runs: stored only
    assert any(stored.get(run) != status for run, status in here.items()), (here, stored)   # this run's own end
    # the run that took over is the one to keep: drop the frozen run's working copy, as the error advises
    code, out, err = finish(start(remote_project, "state", "pull", "--force"))
    assert code == 0, out + err
    code, out, err = finish(start(elsewhere, "run"))
    assert code == 0, out + err
    tiers = collections.Counter(u.get("custom_attributes", {}).get("loyalty_tier") for u in slow_braze.users())
    assert set(tiers) == {"platinum"}, f"Braze holds values no state records: {tiers}"
