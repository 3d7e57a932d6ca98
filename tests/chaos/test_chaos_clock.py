"""The clock jumping between real `reflow` processes (libfaketime), against the sandbox: plans, runs and
their pruning follow the sequence the state file assigns, the clock is only displayed.

Each command is a `reflow` process with libfaketime preloaded (FAKETIME=SPEC): plans made a day ahead, then two days behind, then with
the clock jumping to 2030 and back to 2001. The plan made last is the one `apply` uses (an older one is
refused as stale), the plan just saved keeps its rows although ten "newer" ones (by the clock) exist,
`history` lists runs in the order they ran whatever their times, and Braze ends equal to the models
with every event exactly once. Ordered by the clock, the plan made two days behind would be neither
the latest (apply would pick a superseded plan and refuse) nor kept (pruned as it was saved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from braze_checks import assert_in_step

from engine.state import State
from engine.state.plan_rows import SyncRows
from engine.state.plans import load_plan

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

# libfaketime, preloaded into each `reflow` process: the library the `libfaketime` package (a dev
# dependency, from the package index) ships prebuilt. Debian's faketime 0.9.10 cannot serve Python (a timed
# wait hangs, or time.sleep fails with EINVAL when the monotonic clock is left alone). Only the wall clock
# moves, as when a clock is set wrong or jumps (the monotonic clock never does).
PROBE = ("import datetime, threading, time; time.sleep(0.01); threading.Event().wait(0.01); "
         "threading.Lock().acquire(timeout=0.01); print(datetime.datetime.now(datetime.UTC).year)")


def library() -> Path | None:
    try:
        import libfaketime
    except ImportError:
        return None
    found = Path(libfaketime.__file__).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"
    return found if found.is_file() else None


def faketime(spec: str) -> dict[str, str]:
    """The environment of a process whose wall clock reads `spec` (libfaketime's FAKETIME syntax)."""
    lib = library()
    assert lib is not None, "libfaketime is required under CI (pip install -e '.[dev]' installs it)"
    return {**os.environ, "LD_PRELOAD": str(lib), "FAKETIME": spec, "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_NO_CACHE": "1"}


def faketime_problem() -> str | None:
    if library() is None:
        return "libfaketime (the Python package shipping the library) is not installed"
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE], env=faketime("@2001-01-01 00:00:00"),
                              capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "libfaketime hangs a Python timed wait"
    if proc.returncode != 0 or proc.stdout.strip() != "2001":
        return f"libfaketime cannot move the clock of Python: {proc.stdout.strip()} {proc.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module", autouse=True)
def working_faketime() -> None:
    """Skip without a libfaketime that works here, except under CI (the dev extras install it): there, fail."""
    problem = faketime_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)


AHEAD, BEHIND = "+1d", "-2d"
IN_2030, IN_2001 = "@2030-01-01 00:00:00", "@2001-01-01 00:00:00"


class Reflow:
    """`reflow --project-dir PROJECT ...` as its own process, its wall clock at SPEC."""

    def __init__(self, project: Path) -> None:
        self.project = project

    def __call__(self, spec: str, *args: str) -> tuple[int, str, str]:
        proc = subprocess.run([sys.executable, "-m", "engine", *args[:1], "--project-dir", str(self.project),
                               *args[1:]], env=faketime(spec), capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stdout, proc.stderr

    def ok(self, spec: str, *args: str) -> str:
        code, out, err = self(spec, *args)
        assert code == 0, f"reflow {' '.join(args)} under faketime {spec!r}: exit {code}\n{out}\n{err}"
        return out

    def plan(self, spec: str, *args: str) -> dict[str, Any]:
        plan: dict[str, Any] = json.loads(self.ok(spec, "plan", "--json", *args))
        return plan

    def history(self, spec: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = json.loads(self.ok(spec, "history", "--json", "--limit", "500"))
        return runs


def plan_rows(project: Path, plan_id: str) -> int:
    """The plan's rows, a first run's held ones included (`SyncRows.rows`)."""
    with State.open(project / ".reflow" / "state.duckdb", command="test", read_only=True) as state:
        plan = load_plan(state, plan_id)
        return sum(SyncRows.of(state.con, plan_id, sp).count(["true"], []) for sp in plan.syncs)


def test_faketime_moves_the_clock_of_a_python_process():
    """The premise: libfaketime shifts what Python's datetime reads in a child process, and only that."""
    for spec, check in [(AHEAD, "d.days == 1"), (BEHIND, "d.days == -2"), (IN_2030, "t.year == 2030")]:
        code = ("import datetime as dt, sys, time; t = dt.datetime.fromtimestamp(time.time(), dt.UTC); "
                f"d = t - dt.datetime.fromtimestamp(float(sys.argv[1]), dt.UTC); assert {check}, t")
        subprocess.run([sys.executable, "-c", code, str(time.time())], env=faketime(spec), check=True, timeout=60)


def test_plans_and_runs_follow_the_state_as_the_clock_jumps_between_commands(example_project, braze_env):
    reflow = Reflow(example_project)
    ran: list[list[dict[str, Any]]] = []              # the runs of each apply/run, as history showed them then

    def new_runs(spec: str, plan_id: str) -> None:
        seen = {r["run_id"] for group in ran for r in group}
        group = [r for r in reflow.history(spec) if r["run_id"] not in seen]
        assert group and all(r["plan_id"] == plan_id for r in group), group   # the plan expected, nothing else
        ran.append(group)

    # ten plans a day ahead, then one two days behind: by the clock the ten are "newer"
    ahead = [reflow.plan(AHEAD, "--select", "braze_users")["plan_id"] for _ in range(10)]
    behind = reflow.plan(BEHIND)
    assert behind["plan_id"] not in ahead
    total = sum(s["total"] for s in behind["syncs"])
    assert total > 0 and plan_rows(example_project, behind["plan_id"]) == total    # not pruned as saved

    # an older plan (made with a later clock) is refused; apply without an id applies the last one made
    code, out, err = reflow(IN_2030, "apply", "--yes", ahead[-1])
    assert code != 0 and "stale" in out + err, out + err
    assert not braze_env.events(), "a refused plan sent something"
    reflow.ok(IN_2030, "apply", "--yes")
    new_runs(IN_2030, behind["plan_id"])

    # the warehouse changes, `run` with the clock in 2001 (after runs displayed in 2030)
    reflow.ok(AHEAD, "example", "mutate", "--step", "1")
    reflow.ok(IN_2001, "run")
    runs_2001 = reflow.history(IN_2001)[0]
    new_runs(BEHIND, runs_2001["plan_id"])

    # plans with the clock jumping forward then back: the one made last (in 2001) is applied
    reflow.ok(IN_2001, "example", "mutate", "--step", "2")
    forward = reflow.plan(IN_2030)
    back = reflow.plan(IN_2001)
    code, out, err = reflow(BEHIND, "apply", "--yes", forward["plan_id"])
    assert code != 0 and "stale" in out + err, out + err
    reflow.ok(AHEAD, "apply", "--yes")
    new_runs(IN_2030, back["plan_id"])

    # and a last change, run two days behind
    reflow.ok(IN_2030, "example", "mutate", "--step", "3")
    reflow.ok(BEHIND, "run")
    new_runs(AHEAD, reflow.history(BEHIND)[0]["plan_id"])

    history = reflow.history(IN_2001)
    order = [r["run_id"] for group in reversed(ran) for r in group]
    assert [r["run_id"] for r in history] == order                 # newest first, as they ran
    assert all(r["status"] == "succeeded" for r in history), [(r["sync"], r["status"]) for r in history]
    years = [str(group[0]["started_at"])[:4] for group in ran]
    assert years[:2] == ["2030", "2001"], years                    # the clock did jump inside reflow
    by_clock = [r["run_id"] for r in sorted(history, key=lambda r: str(r["started_at"]), reverse=True)]
    assert by_clock != order                                       # so the clock could not have given it
    assert_in_step(example_project, braze_env)                     # every event exactly once
