"""Plans and runs are ordered by the state's own sequence, never by the clock: a clock a day ahead (or
behind, or jumping between commands) must not make an older plan the latest, nor prune the plan just
saved (before: ten plans a day ahead, then `run` with the clock right, pruned its own plan's rows and
applied nothing, exit 0)."""

from __future__ import annotations

import datetime as dt
import sys

import pytest

import engine.planner  # noqa: F401 - loaded before the clock is set
import engine.runner  # noqa: F401
import engine.state
from engine.destinations.memory import MemoryDestination
from engine.state import State
from engine.state.plans import load_plan


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set the time Reflow reads (what faketime would do to the whole process)."""
    real = engine.state.now

    def set_offset(**delta: float) -> None:
        def shifted() -> dt.datetime:
            return real() + dt.timedelta(**delta)
        for module in [m for name, m in sys.modules.items() if name.startswith("engine.")]:
            if getattr(module, "now", None) is real:      # every module that reads the clock
                monkeypatch.setattr(module, "now", shifted)

    return set_offset


def test_plans_made_with_the_clock_a_day_ahead_do_not_hide_the_next_one(lab, clock):
    lab.insert_people(30)
    sync = lab.sync()
    clock(days=1)
    for _ in range(10):
        lab.plan(sync, MemoryDestination())
    clock(days=0)
    plan = lab.plan(sync, MemoryDestination())
    with State.open(lab.project.state_path, command="t") as state:
        latest = load_plan(state)
        assert latest.plan_id == plan.plan_id                    # the one just made, not a "newer" one
        rows = state.con.execute("select count(*) from rstate.main.plan_rows where plan_id = ?",
                                 [plan.plan_id]).fetchone()
    assert rows == (30,)                                         # not pruned as it was saved
    dest = MemoryDestination()
    result = lab.apply(latest, sync, dest)
    assert result.exit_code == 0 and result.syncs[0].acknowledged == 30 and len(dest.sent_items) == 30


@pytest.mark.parametrize("jumps", [[-1, 1, -2], [2, -3, 0]], ids=["backward-first", "forward-first"])
def test_history_lists_runs_in_the_order_they_ran(lab, clock, jumps):
    lab.insert_people(5)
    sync = lab.sync()
    order = []
    for i, days in enumerate(jumps):
        clock(days=days)
        lab.sql(f"update people_raw set tier = 'tier{i}'")
        plan = lab.plan(sync, MemoryDestination())
        result = lab.apply(plan, sync, MemoryDestination())
        order.append(result.syncs[0].run_id)
    with State.open(lab.project.state_path, command="t", read_only=True) as state:
        assert [r["run_id"] for r in state.runs("people")] == list(reversed(order))
