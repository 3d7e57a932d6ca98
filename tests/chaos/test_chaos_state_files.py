"""The state's files while `reflow apply` runs for real (a process of its own, against the sandbox):
the state file deleted, `.reflow/` deleted with a second runner trying its luck, and `status` /
`history` asked from another process.

An apply whose state file vanishes stops at its next commit (exit 1, not 0), says what Braze
acknowledged, and saves what it held: restoring that file loses nothing and sends nothing twice. The
lock is also held outside `.reflow/`, so deleting the folder lets no second run in.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
from braze_checks import assert_in_step
from faulty_sandbox import run_until_clean
from reflow_process import SLOW_CONCURRENCY as CONCURRENCY
from reflow_process import SLOW_LATENCY_MS as LATENCY_MS
from reflow_process import wait_for_requests

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]



def state_file(project: Path) -> Path:
    return project / ".reflow" / "state.duckdb"


def rescue_of(project: Path) -> Path:
    [saved] = (project / ".reflow").glob("state-rescued-*.duckdb")
    return saved


def restore_and_finish(cli, project: Path, faulty) -> None:  # type: ignore[no-untyped-def]
    """A scheduled run refuses to start over while the rescue waits; restored, the runs finish the job
    and every row reached Braze exactly once."""
    code, _, err = cli("run")
    assert code == 1 and "holds what a run saved" in err, err
    saved = rescue_of(project)
    assert cli("state", "restore", str(saved), "--yes")[0] == 0
    faulty.set()
    run_until_clean(cli)
    assert_in_step(project, faulty)              # exactly once: nothing was sent twice


def test_state_file_deleted_mid_apply_stops_it_and_its_rescue_loses_nothing(cli, slow_project, faulty, processes):
    faulty.set(latency_ms=LATENCY_MS)
    assert cli("plan")[0] == 0
    proc = processes.start(slow_project, "apply", "--yes")
    assert wait_for_requests(faulty, 10, proc), proc.communicate()
    state = state_file(slow_project)
    state.unlink()
    Path(f"{state}.wal").unlink(missing_ok=True)
    deleted_at = faulty.stats()["requests_total"]
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err, err
    assert f"the state file {state} was deleted while this apply ran: it stopped. Braze acknowledged" in err
    # it stopped at its next commit: only the requests in flight or awaiting their commit went out since
    assert faulty.stats()["requests_total"] - deleted_at <= 2 * CONCURRENCY
    assert f"`reflow state restore {rescue_of(slow_project)}`" in err
    restore_and_finish(cli, slow_project, faulty)
    failed = [r for r in json.loads(cli("history", "--json")[1]) if r["status"] == "failed"]
    assert len(failed) == 1 and "was deleted" in failed[0]["message"], failed


def test_state_folder_deleted_mid_apply_keeps_a_second_runner_out(cli, slow_project, faulty, processes):
    faulty.set(rate_limit=(1, 60.0))            # one /users/track request a minute: the apply waits
    assert cli("plan")[0] == 0
    first = processes.start(slow_project, "apply", "--yes")
    assert wait_for_requests(faulty, 2, first), first.communicate()    # the second one was told to wait
    shutil.rmtree(slow_project / ".reflow")      # state file, lock file and all

    second = processes.start(slow_project, "run")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 1, out + err
    assert f"in use by another reflow run (pid {first.pid} on" in err and "`reflow apply`" in err, err
    assert first.poll() is None, "the first run ended before the second one tried"
    sent = faulty.stats()["requests_total"]

    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=30)
    assert first.returncode == 1, out + err
    assert "was deleted while this apply ran: it stopped" in err and "Traceback" not in err, err
    assert faulty.stats()["requests_total"] == sent      # the second runner sent nothing
    restore_and_finish(cli, slow_project, faulty)


def test_status_and_history_while_an_apply_runs_name_it_and_its_progress(cli, slow_project, faulty, processes):
    faulty.set(latency_ms=LATENCY_MS)
    assert cli("plan", "--select", "purchases")[0] == 0       # one sync of many requests: sent while we look
    proc = processes.start(slow_project, "apply", "--yes")
    assert wait_for_requests(faulty, 10, proc), proc.communicate()

    deadline = time.monotonic() + 30
    while True:                 # the apply publishes its counts every half second
        code, out, err = cli("history", "--json")
        assert code == 0, err
        running = [r for r in json.loads(out) if r["status"] == "running"]
        if running and running[0]["acknowledged"] > 0:
            break
        assert proc.poll() is None and time.monotonic() < deadline, "no progress was published"
        time.sleep(0.05)
    assert running[0]["pid"] == proc.pid

    code, out, err = cli("status")
    assert code == 0, err
    assert f"`reflow apply` is running (pid {proc.pid} on" in out, out
    assert f"sending {running[0]['sync']}: " in out and " rows done, " in out, out
    row = next(line for line in out.splitlines() if line.startswith(running[0]["sync"] + " "))
    assert "running" in row, out
    code, out, _ = cli("history")
    assert code == 0 and "running" in out
    code, _, err = cli("errors")                 # the commands without a live view name the holder
    assert code == 1 and f"in use by another reflow run (pid {proc.pid} on" in err, err

    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    runs = json.loads(cli("history", "--json")[1])
    assert runs and all(r["status"] == "succeeded" for r in runs), runs
    assert not (slow_project / ".reflow" / "state.duckdb.status.json").exists()
