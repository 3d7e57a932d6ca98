"""Checkpoints record acknowledged plan rows in `acks`; the snapshot advances when they are folded
(at the end of a sync's send, or when the next writer opens the state after a crash)."""

from __future__ import annotations

from engine.destinations.memory import MemoryDestination
from engine.state import DB, SCHEMA_VERSION, State


def _acks(lab) -> int:
    with State.open(lab.project.state_path, command="test", read_only=True) as state:
        return int(state.con.execute(f"SELECT count(*) FROM {DB}.acks").fetchone()[0])


def test_acks_left_by_a_crash_are_folded_when_a_writer_opens_the_state(lab, monkeypatch):
    lab.insert_people(40)
    sync = lab.sync()
    plan = lab.plan(sync, MemoryDestination())
    with monkeypatch.context() as m:                     # the process "dies" before folding
        m.setattr(State, "fold_acks", lambda self, sync=None: 0)
        result = lab.apply(plan, sync, MemoryDestination())
    assert result.syncs[0].acknowledged == 40
    assert lab.snapshot() == {} and _acks(lab) == 40
    with State.open(lab.project.state_path, command="status", read_only=True) as state:
        assert state.snapshot_rows("people") == 40       # a read-only look counts them already
    with State.open(lab.project.state_path, command="plan"):
        pass                                             # a writer folds on open
    assert _acks(lab) == 0
    snap = lab.snapshot()
    assert len(snap) == 40 and snap["p00007"]["name"] == "name 7"
    again = lab.plan(sync, MemoryDestination())
    assert again.syncs[0].counts.added == 0 and again.syncs[0].counts.changed == 0


def test_fold_replaces_changed_and_drops_removed_rows_once(lab, run_once):
    lab.insert_people(10)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    lab.sql("update people_raw set tier = 'platinum' where id = 'p00002'")
    lab.sql("delete from people_raw where id = 'p00005'")
    _, result = run_once(sync, MemoryDestination())
    assert result.syncs[0].acknowledged == 2 and _acks(lab) == 0
    snap = lab.snapshot()
    assert len(snap) == 9 and "p00005" not in snap and snap["p00002"]["tier"] == "platinum"
    with State.open(lab.project.state_path, command="test", read_only=True) as state:
        keys = state.con.execute(f"SELECT count(*), count(DISTINCT key) FROM {state.sync('people').table}").fetchone()
    assert keys == (9, 9)


def test_rejected_then_acknowledged_rows_leave_pending(lab, run_once):
    lab.insert_people(6)
    sync = lab.sync()
    run_once(sync, MemoryDestination(reject_keys={"p00001": "blocked"}))
    with State.open(lab.project.state_path, command="test", read_only=True) as state:
        assert state.pending_count("people") == 1
    plan, result = run_once(sync, MemoryDestination())
    assert plan.syncs[0].counts.retry == 1 and result.syncs[0].acknowledged == 1
    with State.open(lab.project.state_path, command="test", read_only=True) as state:
        assert state.pending_count("people") == 0


def test_a_schema_1_state_file_is_migrated_and_keeps_its_snapshot(lab, run_once):
    import duckdb

    lab.insert_people(8)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    con = duckdb.connect(str(lab.project.state_path))      # as Reflow with state schema 1 left it
    con.execute("DROP TABLE acks")
    for table in ("uncertain", "frontier", "plan_held"):   # schema 3's and 4's additions
        con.execute(f"DROP TABLE {table}")
    for table, column in (("syncs", "identity"), ("syncs", "layout"), ("plan_syncs", "identity"),
                          ("plans", "failed"), ("pending", "unknowns"), ("pending", "waiting_since"), ("syncs", "forgotten"),
                          ("plans", "seq"),
                          ("runs", "seq")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with State.open(lab.project.state_path, command="plan") as state:
        version = state.con.execute(f"SELECT value FROM {DB}.meta WHERE key = 'schema_version'").fetchone()[0]
        assert version == str(SCHEMA_VERSION) and state.snapshot_rows("people") == 8
    plan = lab.plan(sync, MemoryDestination())
    assert plan.syncs[0].counts.added == 0 and plan.syncs[0].counts.unchanged == 8
