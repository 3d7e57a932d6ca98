"""The state cannot vanish unnoticed: an apply whose state file (or lock file) is deleted or replaced
stops at its next commit with an error saying what Braze acknowledged, saves what it holds to a rescue
file that `reflow state restore` puts back, and never touches the file now at the state path. The lock
is held outside the state folder too, so deleting the folder lets no second run in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from engine.destinations.memory import MemoryDestination
from engine.errors import LockError, StateError, StateGoneError
from engine.state import State
from engine.state.backup import restore_state
from engine.state.lock import StateLock

ROWS = 200
BATCH = 10


class Tampering(MemoryDestination):
    """Sends one batch at a time; before answering batch `at`, does `tamper` to the state's files."""

    def __init__(self, at: int, tamper: Callable[[], None]) -> None:
        super().__init__(default_concurrency=1, max_objects_per_request=BATCH)
        self.at, self.tamper = at, tamper

    def send(self, batch):  # type: ignore[no-untyped-def]
        if len(self.received) == self.at:
            self.tamper()
        return super().send(batch)


def keys_sent(dest: MemoryDestination) -> Counter[str]:
    return Counter(k for b in dest.received for k in b.keys)


def rescued(lab) -> list[Path]:  # type: ignore[no-untyped-def]
    return sorted(lab.project.state_path.parent.glob("state-rescued-*.duckdb"))


def first_apply_stops(lab, tamper: Callable[[], None]) -> tuple[str, Tampering]:  # type: ignore[no-untyped-def]
    lab.insert_people(ROWS)
    sync = lab.sync()
    dest = Tampering(5, tamper)
    plan = lab.plan(sync, dest)
    with pytest.raises(StateGoneError) as caught:
        lab.apply(plan, sync, dest)
    return caught.value.message, dest


def test_state_file_deleted_mid_apply_stops_and_its_rescue_loses_nothing(lab):
    state = lab.project.state_path

    def delete() -> None:
        state.unlink()
        Path(str(state) + ".wal").unlink(missing_ok=True)

    message, dest = first_apply_stops(lab, delete)
    sent = keys_sent(dest)
    assert len(sent) <= 7 * BATCH, "the apply went on after the state file was deleted"
    assert f"the state file {state} was deleted while this apply ran: it stopped" in message
    assert "Braze acknowledged 60 rows in this apply (people 60)" in message
    [saved] = rescued(lab)
    assert f"is saved in {saved}: `reflow state restore {saved}`" in message

    # a run that finds no state file but a rescue does not start over (it would send everything again)
    with pytest.raises(StateError, match="no state file .* holds what a run saved"):
        lab.plan(lab.sync(), MemoryDestination())
    restore_state(state, saved)
    with State.open(state, command="test", read_only=True) as st:
        [run] = st.runs()
    assert run["status"] == "failed" and "was deleted" in run["message"] and run["acknowledged"] == 60
    # the next plan holds exactly what Braze did not acknowledge
    second = MemoryDestination(max_objects_per_request=BATCH)
    lab.apply(lab.plan(lab.sync(), second), lab.sync(), second)
    assert not set(keys_sent(second)) & set(dest.acknowledged)
    assert set(keys_sent(second)) | set(dest.acknowledged) == {f"p{i:05d}" for i in range(ROWS)}


def test_state_file_replaced_mid_apply_is_left_as_it_was(lab, tmp_path):
    """The file now at the path (here another DuckDB file with an unflushed write-ahead log) is not
    written to, and its log is not removed when the stopped run closes its own (deleted) file."""
    state = lab.project.state_path
    other = tmp_path / "other.duckdb"
    # a DuckDB file whose last write is only in its .wal (the process ended without closing it)
    subprocess.run([sys.executable, "-c", f"""
import duckdb, os
con = duckdb.connect({str(other)!r})
con.execute("create table t as select 42 as answer")
con.execute("checkpoint")
con.execute("insert into t values (43)")
os._exit(0)
"""], check=True)

    def replace() -> None:
        os.replace(other, state)
        os.replace(str(other) + ".wal", str(state) + ".wal")

    message, _ = first_apply_stops(lab, replace)
    assert f"the state file {state} was replaced while this apply ran: it stopped" in message
    assert rescued(lab)
    con = duckdb.connect(str(state), read_only=True)
    try:
        assert sorted(r[0] for r in con.execute("select answer from t").fetchall()) == [42, 43]
    finally:
        con.close()


def test_lock_file_deleted_mid_apply_stops_and_nothing_is_lost(lab):
    lock = Path(str(lab.project.state_path) + ".lock")
    message, dest = first_apply_stops(lab, lock.unlink)
    assert f"the lock file {lock} was deleted while this apply ran: it stopped" in message
    assert "The state file is intact: nothing is lost" in message
    assert not rescued(lab)
    second = MemoryDestination(max_objects_per_request=BATCH)
    lab.apply(lab.plan(lab.sync(), second), lab.sync(), second)
    assert not set(keys_sent(second)) & set(dest.acknowledged)


def test_deleting_the_state_folder_does_not_release_the_lock(tmp_path):
    state = tmp_path / ".reflow" / "state.duckdb"
    first = StateLock(state, "apply")
    first.acquire()
    try:
        shutil.rmtree(state.parent)
        assert first.moved() == f"the lock file {state}.lock was deleted"
        second = StateLock(state, "run")
        with pytest.raises(LockError, match=rf"in use by another reflow run \(pid {os.getpid()} on .*`reflow apply`"):
            second.acquire()
    finally:
        first.release()
    second.acquire()            # released: the next run goes ahead
    second.release()


def test_a_lock_file_replaced_before_its_flock_is_opened_again(tmp_path, monkeypatch):
    """flock, then compare inodes: the file locked must be the one the path names."""
    import fcntl

    from engine.state import lock as state_lock

    state = tmp_path / ".reflow" / "state.duckdb"
    lock_path = Path(str(state) + ".lock")
    real = fcntl.flock
    swapped: list[int] = []

    def flock(fd: int, op: int) -> None:
        if op & fcntl.LOCK_EX and os.fstat(fd).st_ino == _ino(lock_path) and not swapped:
            fresh = lock_path.with_name("fresh")
            fresh.write_text("")
            os.replace(fresh, lock_path)        # another process put a new lock file in place
            swapped.append(fd)
        real(fd, op)

    monkeypatch.setattr(state_lock.fcntl, "flock", flock)
    lock = StateLock(state, "apply")
    lock.acquire()
    try:
        assert swapped and lock.moved() is None          # it holds the file the path names now
    finally:
        lock.release()


def _ino(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def test_a_writer_waits_for_a_reader_to_let_go_of_the_state_file(lab):
    """`reflow status` polled while an apply starts: DuckDB's lock held by a reader for a moment does not
    make the apply fail."""
    lab.insert_people(3)
    lab.plan(lab.sync(), MemoryDestination())
    reader = subprocess.Popen([sys.executable, "-c", f"""
import duckdb, sys, time
con = duckdb.connect(":memory:")
con.execute("ATTACH '{lab.project.state_path}' AS s (READ_ONLY)")
print("reading", flush=True)
time.sleep(1)
con.close()
"""], stdout=subprocess.PIPE, text=True)
    try:
        # the reader holds DuckDB's lock now; the writer opens once it lets go (else: LockError)
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        with State.open(lab.project.state_path, command="apply") as state:
            assert state.sync("people") is not None
    finally:
        reader.communicate(timeout=30)


def test_state_file_deleted_while_planning_is_reported_with_its_rescue(lab):
    lab.insert_people(5)
    state = lab.project.state_path

    class Deleting(MemoryDestination):
        def prepare(self, row):  # type: ignore[no-untyped-def]
            if state.exists():
                state.unlink()
            return super().prepare(row)

    with pytest.raises(StateGoneError, match=rf"the state file {state} was deleted while `reflow plan` ran\. "
                                             r"What the state held.* is saved in .*state-rescued-"):
        lab.plan(lab.sync(), Deleting())
    [saved] = rescued(lab)
    restore_state(state, saved)
    with State.open(state, command="test", read_only=True) as st:
        assert st.latest_plan_id() is not None          # the plan it made is in the rescue


def test_a_reader_probing_the_lock_does_not_refuse_a_run(tmp_path, monkeypatch):
    """`read_holder` (status, history) takes a shared flock for an instant: a run starting at that instant
    tries again rather than calling it held."""
    import fcntl

    from engine.state import lock as state_lock

    state = tmp_path / ".reflow" / "state.duckdb"
    real = fcntl.flock
    probed: list[int] = []

    def flock(fd: int, op: int) -> None:
        if op & fcntl.LOCK_EX and not probed:
            probed.append(fd)
            raise BlockingIOError       # a reader holds it this instant
        real(fd, op)

    monkeypatch.setattr(state_lock.fcntl, "flock", flock)
    lock = StateLock(state, "apply")
    lock.acquire()
    lock.release()
    assert probed
    # held for real, though: refused, naming the holder
    monkeypatch.setattr(state_lock.fcntl, "flock", real)
    first, second = StateLock(state, "apply"), StateLock(state, "run")
    first.acquire()
    try:
        with pytest.raises(LockError, match="`reflow apply`"):
            second.acquire()
        assert state_lock.read_holder(state) == first.holder
    finally:
        first.release()
    assert state_lock.read_holder(state) is None
