"""A full disk in the middle of an apply: the message says what the next run sends again (the rows in
flight: sent, their outcome not recorded), the run ends `failed` with that reason (never `running`
forever), and the next run sends exactly those rows again, no more.

The disk fills at the state's group commit of the events sync, from its third commit on: DuckDB's own
error for a write-ahead log it cannot grow is raised there (tests/reliability/test_state_safety.py
fills a real tmpfs as well)."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import duckdb
import pytest
from braze_checks import assert_in_step

from engine import runner

pytestmark = pytest.mark.e2e

ENOSPC = ('TransactionContext Error: Failed to commit: Could not write file "state.duckdb.wal": '
          "No space left on device")


def fill_the_disk_at_commit(monkeypatch: pytest.MonkeyPatch, sync: str, after: int) -> None:
    """Every group commit of `sync` after the first `after` fails as on a full disk."""
    real = runner._checkpoint
    commits = Counter[str]()

    def checkpoint(state: Any, plan_id: str, name: str, *args: Any, **kwargs: Any) -> None:
        commits[name] += 1
        if name == sync and commits[name] > after:
            state.con.execute("BEGIN")
            state.con.execute("ROLLBACK")
            raise duckdb.TransactionException(ENOSPC)
        real(state, plan_id, name, *args, **kwargs)

    monkeypatch.setattr(runner, "_checkpoint", checkpoint)


def recorded_events(project: Any) -> int:
    from engine.state import State

    with State.open(project / ".reflow" / "state.duckdb", command="test", read_only=True) as state:
        return state.snapshot_rows("order_events")


def test_a_full_disk_during_an_apply_says_what_the_next_run_sends_again(cli, braze_env, example_project):
    assert cli("plan")[0] == 0
    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(runner, "LINGER", 0.0)          # many small group commits
        fill_the_disk_at_commit(disk, "order_events", after=2)
        code, out, err = cli("apply", "--yes")
    assert code == 1, out + err
    path = example_project / ".reflow" / "state.duckdb"
    match = re.fullmatch(
        rf"error: cannot write the state file {re.escape(str(path))} \({re.escape(ENOSPC)}\); free disk space or "
        r"fix the folder's permissions, then run again\. Sync 'order_events' stopped with ([\d,]+) rows in flight: "
        r"sent to Braze, but their outcome could not be recorded\. The next run sends them again \(Braze "
        r"receives these \1 events twice\)\n", err)
    assert match, err
    assert "Nothing is lost" not in err
    in_flight = int(match.group(1).replace(",", ""))
    received = Counter(e["properties"]["order_id"] for e in braze_env.events())
    recorded = recorded_events(example_project)
    assert in_flight > 0 and in_flight == len(received) - recorded      # exactly the rows sent, not recorded

    # the run ended failed with that reason, never "running"
    code, out, _ = cli("history", "--json")
    [run] = [r for r in json.loads(out) if r["sync"] == "order_events"]
    assert run["status"] == "failed" and run["finished_at"], run
    assert f"stopped with {in_flight:,} rows in flight" in run["message"], run
    code, out, _ = cli("status")
    line = next(x for x in out.splitlines() if x.startswith("order_events"))
    assert "running" not in line and "failed" in line, out

    # the next run sends exactly those rows again: the duplicates are the rows in flight, no more
    code, out, err = cli("run")
    assert code == 0, out + err
    copies = Counter(e["properties"]["order_id"] for e in braze_env.events())
    assert sum(n - 1 for n in copies.values()) == in_flight
    assert_in_step(example_project, braze_env, exactly_once=False)


def test_a_full_disk_after_every_row_was_recorded_resends_nothing(cli, braze_env, example_project):
    """The disk fills when the acknowledged rows are folded into the snapshot: they are recorded (as
    acknowledgements), so the message says nothing is sent again, and nothing is."""
    assert cli("plan")[0] == 0
    real = runner.State.fold_acks

    def fold_acks(state: Any, sync: str | None = None) -> int:
        if sync == "order_events":
            raise duckdb.TransactionException(ENOSPC)
        return real(state, sync)

    with pytest.MonkeyPatch.context() as disk:
        disk.setattr(runner.State, "fold_acks", fold_acks)
        code, out, err = cli("apply", "--yes")
    assert code == 1, out + err
    assert err.endswith("then run again. Sync 'order_events' stopped; every row it sent has its outcome recorded, "
                        "so the next run sends none of them again\n"), err
    code, out, err = cli("run")
    assert code == 0, out + err
    copies = Counter(e["properties"]["order_id"] for e in braze_env.events())
    assert set(copies.values()) == {1}
    assert_in_step(example_project, braze_env)
