"""The state file: what Braze has acknowledged, plans, runs, rejected rows, and the lock.

One DuckDB file (`state_path`), attached as catalog `rstate` to an in-memory DuckDB
connection so that the planner can attach the warehouse next to it. Schema is
versioned (`meta.schema_version`) with numbered migrations; a file written by a
newer Reflow is refused, never rewritten. A writer holds the lock (engine/state/lock.py), stops when the
state file or a lock file it opened is deleted or replaced (`check_in_place`, after each commit of a
run; `open` then saves what it holds as a rescue file), and keeps the live status file
(engine/state/live.py) that `status` and `history` read while it runs.

Tables (all in `rstate.main`):
    meta(key, value)                         schema_version, created_by
    syncs(name, id, version, columns, hash_recipe, duckdb_version, updated_at, identity, layout, forgotten)
    snap_<id>(key, row_hash, row_json)       what Braze holds for one sync: per key, the last acknowledged
                                             value of each destination field under its destination name
                                             (`columns` lists the fields), for one destination (`identity`)
    plans(plan_id, created_at, status, …, failed)    one per `reflow plan`; `failed`: syncs it could not plan
    plan_syncs(plan_id, sync, …)             per sync: counts, estimate, guards, fingerprint, version
    plan_rows(plan_id, sync, seq, key, op, status, …, item)   the rows and exact payloads
    plan_held(plan_id, sync, tbl, seq_min, seq_max, columns, sends, hashed)   a first run's rows, held typed in
                                             table `tbl` (plan_held_<seq>_<tag>; `plan_rows.HeldRows`): a
                                             baseline's; a send_all one's until apply writes them as plan
                                             rows (`sends`: the SQL of their payloads)
    runs(run_id, plan_id, sync, …)           one per sync per apply
    pending(sync, key, reason, run_id, at, unknowns, waiting_since)   rows not delivered yet, why; how many
                                                sends of each ended unanswered; since when held back
                                             ended without a usable answer
    row_errors(run_id, sync, key, reason, item, at)   every rejection, for `reflow errors`
    acks(plan_id, sync, seq)                 acknowledged plan rows not yet folded into the snapshot
    uncertain(plan_id, sync, seq)            plan rows sent without a usable answer, not yet folded
    frontier(run_id, plan_id, sync, seq)     the highest plan row a run may have sent (written before sending)

A field whose value Braze may or may not hold (its request was applied, or not, with no answer) is
stored as UNKNOWN, a value no model produces: the next plan compares it as changed and sends the
current value again. `fold_acks` marks them from `uncertain`; after a crash, `recover` first turns
the rows a dead run may have sent (up to its `frontier`) without a recorded outcome into `uncertain`.

Acknowledgements are recorded per group of batches as plan-row numbers (`acks`), cheap to write
whatever the snapshot's size; `fold_acks` then advances the snapshot from the plan rows in one
bulk transaction per sync: at the end of each sync's send, and when a writer opens the state
after a crash. Until then the snapshot is the last folded one plus `acks`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from engine import __version__
from engine.errors import LockError, RemoteStateError, StateError, StateGoneError
from engine.plan import KILLED_REASON, REJECTED_REASON, SEND, PlanStatus, RunStatus
from engine.sql import first_line, json_path, lowercase_escape, quote, sql_str, uppercase_escapes
from engine.state.live import RUNS as LIVE_RUNS
from engine.state.live import LiveStatus
from engine.state.lock import StateLock, describe_holder, file_change, read_holder

if TYPE_CHECKING:
    from engine.state.remote import RemoteState  # imported by what opens a remote state

SCHEMA_VERSION = 5
HASH_RECIPE = "duckdb-hash/v3"      # v3: field names are hashed with the values
# PostgreSQL recipes whose composite keys spelt nine JSON escapes in lowercase (`State._respell_keys`)
LOWERCASE_ESCAPES = re.compile(r"postgres-[a-z0-9]+/v[123]$")
DB = "rstate.main"
UNKNOWN = "\u001freflow:outcome-unknown"        # a field value Braze may or may not hold
UNKNOWN_JSON = json.dumps(UNKNOWN)
# plans and runs are ordered by the sequence the state assigns, never by the clock (a clock that jumps
# must not make an old plan the latest, or prune the one just saved); rows older than schema 3 have none
NEWEST = "seq DESC NULLS LAST, created_at DESC"
READER_WAIT = 5.0        # seconds a writer waits for a reader's DuckDB lock on the state file to go
LEGACY_LAYOUT = "model"      # schema <= 2: snapshots held model columns; converted on the sync's next plan
FIELDS_LAYOUT = "fields"

_MIGRATIONS: dict[int, str] = {
    1: f"""
    CREATE TABLE IF NOT EXISTS {DB}.meta (key VARCHAR, value VARCHAR);
    CREATE TABLE {DB}.syncs (
        name VARCHAR, id INTEGER, version BIGINT, columns VARCHAR, hash_recipe VARCHAR,
        duckdb_version VARCHAR, updated_at TIMESTAMP);
    CREATE TABLE {DB}.plans (
        plan_id VARCHAR, created_at TIMESTAMP, status VARCHAR, created_by VARCHAR, applied_at TIMESTAMP);
    CREATE TABLE {DB}.plan_syncs (
        plan_id VARCHAR, sync VARCHAR, snapshot_version BIGINT, fingerprint VARCHAR,
        counts VARCHAR, estimate VARCHAR, guards VARCHAR, fields VARCHAR, info VARCHAR,
        seq_min BIGINT, seq_max BIGINT);
    CREATE TABLE {DB}.plan_rows (
        plan_id VARCHAR, sync VARCHAR, seq BIGINT, key VARCHAR, op VARCHAR, status VARCHAR,
        retry BOOLEAN, changed VARCHAR[], new_hash UBIGINT, new_row VARCHAR, old_row VARCHAR,
        channel VARCHAR, item VARCHAR, data_points INTEGER, reason VARCHAR);
    CREATE TABLE {DB}.runs (
        run_id VARCHAR, plan_id VARCHAR, sync VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP,
        status VARCHAR, acknowledged BIGINT, rejected BIGINT, not_attempted BIGINT, skipped BIGINT,
        requests BIGINT, data_points BIGINT, pid INTEGER, message VARCHAR);
    CREATE TABLE {DB}.pending (sync VARCHAR, key VARCHAR, reason VARCHAR, run_id VARCHAR, at_time TIMESTAMP);
    CREATE TABLE {DB}.row_errors (
        run_id VARCHAR, sync VARCHAR, key VARCHAR, reason VARCHAR, item VARCHAR, at_time TIMESTAMP);
    """,
    2: f"CREATE TABLE {DB}.acks (plan_id VARCHAR, sync VARCHAR, seq BIGINT);",
    3: f"""
    ALTER TABLE {DB}.syncs ADD COLUMN identity VARCHAR;
    ALTER TABLE {DB}.syncs ADD COLUMN layout VARCHAR DEFAULT '{LEGACY_LAYOUT}';
    ALTER TABLE {DB}.syncs ADD COLUMN forgotten VARCHAR;
    ALTER TABLE {DB}.plan_syncs ADD COLUMN identity VARCHAR;
    ALTER TABLE {DB}.plans ADD COLUMN failed VARCHAR;
    ALTER TABLE {DB}.plans ADD COLUMN seq BIGINT;
    ALTER TABLE {DB}.runs ADD COLUMN seq BIGINT;
    ALTER TABLE {DB}.pending ADD COLUMN unknowns INTEGER DEFAULT 0;
    ALTER TABLE {DB}.pending ADD COLUMN waiting_since TIMESTAMP;
    CREATE TABLE {DB}.uncertain (plan_id VARCHAR, sync VARCHAR, seq BIGINT);
    CREATE TABLE {DB}.frontier (run_id VARCHAR, plan_id VARCHAR, sync VARCHAR, seq BIGINT);
    """,
    # a first_run: baseline plan's rows held typed in a table of their own (`plan_rows.HeldRows`)
    4: f"""CREATE TABLE {DB}.plan_held (
        plan_id VARCHAR, sync VARCHAR, tbl VARCHAR, seq_min BIGINT, seq_max BIGINT, columns VARCHAR);""",
    # a send_all first run's rows held too, with the SQL that renders their payloads (`plan_rows.HeldSends`)
    # and whether a held row's hash is held (the warehouse's) or computed by its reader (`diff.held_hash`)
    5: f"""ALTER TABLE {DB}.plan_held ADD COLUMN sends VARCHAR;
    ALTER TABLE {DB}.plan_held ADD COLUMN hashed BOOLEAN DEFAULT true;""",
}


def default_backup_path(state_path: Path, kind: str = "backup") -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return state_path.parent / f"{state_path.stem}-{kind}-{stamp}{state_path.suffix or '.duckdb'}"


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class SyncState:
    name: str
    id: int
    version: int
    columns: tuple[tuple[str, str], ...]     # the snapshot's fields and their model types
    hash_recipe: str
    duckdb_version: str
    identity: dict[str, str] | None = None   # where the snapshot's rows went (None: not recorded yet)
    layout: str = FIELDS_LAYOUT
    forgotten: tuple[str, ...] = ()          # fields unmapped with on_unmapped: keep (Braze kept values)

    @property
    def table(self) -> str:
        return f"{DB}.snap_{self.id}"


class State:
    """An open state file. Use `State.open(...)` as a context manager."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, lock: StateLock | None) -> None:
        self.con = con
        self.path = path
        self._lock = lock
        self._has_tables = False
        self._file: os.stat_result | None = None     # a writer's state file, as opened (see `moved`)
        self._live = LiveStatus(path, lock.holder) if lock else None
        self._live_syncs: dict[str, dict[str, Any]] | None = None
        self._remote: RemoteState | None = None     # a remote state's working copy (see `open`)
        self.preview = False         # a private copy for a read-only plan: nothing may be written elsewhere

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN … COMMIT on the state's connection; anything raised inside rolls it back (a COMMIT that
        failed, e.g. on a full disk, has rolled back already) and goes on up."""
        self.con.execute("BEGIN")
        try:
            yield self.con
            self.con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                self.con.execute("ROLLBACK")
            raise

    # ---------------------------------------------------------------- opening

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: Path, *, command: str, memory_limit: str = "1GB", read_only: bool = False,
             remote: RemoteState | None = None, lock_timeout: float = 0.0,
             working_copy: bool = False) -> Iterator[State]:
        """The state file at `path`; with `remote`, the state object it names, through its working copy
        (engine/state/remote.py: checked, locked and downloaded first; uploaded after each sync's fold, every
        `upload_every` seconds of an apply, and on closing). A writer waits up to `lock_timeout` seconds for
        another run's lock. A reader with `working_copy` reads this folder's working copy instead of the stored
        state (what runs here recorded, uploaded or not)."""
        if remote is None:
            with cls._open_file(path, command=command, memory_limit=memory_limit, read_only=read_only,
                                lock_timeout=lock_timeout) as state:
                yield state
            return
        with remote.session(command, read_only=read_only, lock_timeout=lock_timeout,
                            working_copy=working_copy) as copy, \
                cls._open_file(copy, command=command, memory_limit=memory_limit, read_only=read_only,
                               lock_timeout=lock_timeout, remote=None if read_only else remote) as state:
            yield state

    @classmethod
    @contextlib.contextmanager
    def _open_file(cls, path: Path, *, command: str, memory_limit: str, read_only: bool, lock_timeout: float,
                   remote: RemoteState | None = None, private: bool = False) -> Iterator[State]:
        """`private`: a private copy written by this process alone (engine/state/preview.py): no lock, and the
        runs it holds as running are left alone (they belong to a live runner elsewhere)."""
        lock = None if read_only or private else StateLock(path, command)
        if lock:
            _acquire(lock, lock_timeout)
        try:
            if lock:
                _refuse_if_rescued(path)
            con = _connect(path, memory_limit=memory_limit, read_only=read_only)
            state = cls(con, path, lock)
            state._remote = remote
            state.preview = private
            closed = False
            try:
                if lock:
                    state._file = os.stat(path)
                state._migrate(read_only=read_only)
                if not read_only:
                    if not private:
                        state.recover()         # runs a dead process left `running`
                    state.fold_acks()           # what a crashed apply recorded but did not fold
                    state.publish()
                yield state
                moved = state.moved()           # did the last commits reach the file a later run opens?
                if moved:
                    raise StateGoneError(f"{moved} while `reflow {command}` ran")
                if remote is not None:
                    state.upload()
                    remote.finished()
                closed = True
            except StateGoneError as exc:
                raise StateGoneError(f"{exc.message}. {state._rescue()}") from None
            except (duckdb.IOException, duckdb.TransactionException) as exc:
                moved = state.moved()
                if moved:
                    raise StateGoneError(f"{moved}. {state._rescue()}") from exc
                raise _io_problem(path, exc) from exc
            except RemoteStateError:
                closed = True                   # refused, or the lock is lost: nothing more goes up
                raise
            finally:
                if remote is not None and not closed:
                    with contextlib.suppress(Exception):    # stopped by an error: keep what was committed
                        state.upload()
                        remote.finished()
                if state._live:
                    state._live.remove()
                con.close()
        finally:
            if lock:
                lock.release()

    def upload(self, *, when_due: bool = False) -> None:
        """A remote state's writer: checkpoint the working copy and upload it (RemoteStateError when the
        stored state moved on or the lock was lost). With `when_due`, skipped unless `upload_every`
        seconds passed since the last upload. A local state: nothing."""
        remote = self._remote
        if remote is None or (when_due and not remote.due()):
            return
        for attempt in range(40):
            try:
                self.con.execute("CHECKPOINT rstate")     # the WAL into the file: the file alone is the state
                break
            except duckdb.TransactionException:         # another cursor's write (a frontier step) in flight
                if attempt == 39:
                    raise
                time.sleep(0.05)
        remote.upload()

    def moved(self) -> str | None:
        """For a writer: None while the state file and the lock files are the ones it opened (by path);
        else which was deleted or replaced."""
        if self._lock is None or self._file is None:
            return None
        change = file_change(self.path, self._file)
        return f"the state file {self.path} was {change}" if change else self._lock.moved()

    def check_in_place(self) -> None:
        """StateGoneError when the state file or a lock file was deleted or replaced since this writer
        opened them: what it commits would reach no later run, and a second run may start beside it.
        Called after each commit of a run (two stat calls)."""
        moved = self.moved()
        if moved:
            raise StateGoneError(moved)
        if self._remote is not None:
            self._remote.check()        # RemoteStateError once the remote lock is lost

    def check_lock(self) -> None:
        """A remote state's writer: RemoteStateError once its lock is lost or may have been taken over (see
        RemoteLock.problem); checked before each request of a send. A local state: nothing."""
        if self._remote is not None:
            self._remote.check()

    def copy_to(self, dest: Path) -> None:
        """COPY FROM DATABASE (whole transactions only) to `dest`, through a temporary file."""
        tmp = dest.with_name(dest.name + ".partial")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            self.con.execute(f"ATTACH {sql_str(str(tmp))} AS rbackup")
            try:
                self.con.execute("COPY FROM DATABASE rstate TO rbackup")
            finally:
                self.con.execute("DETACH rbackup")
            os.replace(tmp, dest)
        except (duckdb.Error, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise StateError(f"cannot write the copy {dest}: {first_line(exc)}") from exc

    def _rescue(self) -> str:
        """The state file was deleted or replaced under this writer: keep DuckDB from touching the files now
        at its path when it closes, and save what this connection still holds next to it. A sentence
        saying where, and what to do, for the error."""
        if self._file is None or file_change(self.path, self._file) is None:
            return "The state file is intact: nothing is lost. Run again"
        lost = ("the next run sends every row again (events and purchases would reach Braze twice)")
        try:
            saved = default_backup_path(self.path, "rescued")
            self.copy_to(saved)
        except StateError as exc:
            return f"Its contents could not be saved ({exc.message}): {lost}"
        finally:
            with contextlib.suppress(duckdb.Error):
                # else closing removes `<state>.wal` by path: the write-ahead log of whatever file is there now
                self.con.execute("PRAGMA disable_checkpoint_on_shutdown")
        return (f"What the state held, this run included, is saved in {saved}: `reflow state restore {saved}` "
                f"puts it back and nothing Braze acknowledged is sent again; without it {lost}")

    def publish(self, progress: dict[str, Any] | None = None, *, counts: bool = True, when_due: bool = False) -> None:
        """Write the live status file (engine/state/live.py) for `status` and `history` while this writer
        holds the state: the recent runs, `progress`, and per-sync counts (counted again when `counts`).
        With `when_due`, skipped unless the last write is half a second old."""
        live = self._live
        if live is None or (when_due and not live.due()):
            return
        try:
            if self.empty:
                return
            if counts or self._live_syncs is None:
                self._live_syncs = {
                    name: self._live_counts(name)
                    for (name,) in self.con.execute(f"SELECT name FROM {DB}.syncs ORDER BY name").fetchall()}
            runs = self.runs(limit=LIVE_RUNS)
        except duckdb.Error:        # best effort: the run's own next commit reports a broken state file
            return
        live.write(syncs=self._live_syncs, runs=runs, progress=progress)

    def _live_counts(self, name: str) -> dict[str, Any]:
        """One sync's counts for the live status file (as `reflow status` counts them)."""
        rejected = self.rejected_count(name)
        return {"snapshot_rows": self.snapshot_rows(name), "rejected": rejected,
                "pending": self.pending_count(name) - rejected, "why_pending": self.pending_reason(name)}

    def _migrate(self, *, read_only: bool) -> None:
        """Bring the file to SCHEMA_VERSION (a writer), or refuse it. A current file costs one query."""
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} was written by a newer Reflow (state schema {version}, this Reflow "
                f"knows up to {SCHEMA_VERSION}); upgrade Reflow, or point state_path elsewhere"
            )
        if version == SCHEMA_VERSION:
            self._has_tables = True         # every table exists at the current schema (see `empty`)
            return
        if read_only:
            if version == 0:
                return
            raise StateError(f"{self.path} needs a migration; run any write command (e.g. `reflow plan`) first")
        try:
            with self.transaction():
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    self.con.execute(_MIGRATIONS[step])
                self.con.execute(f"DELETE FROM {DB}.meta WHERE key IN ('schema_version', 'created_by')")
                self.con.execute(f"INSERT INTO {DB}.meta VALUES ('schema_version', ?), ('created_by', ?)",
                                 [str(SCHEMA_VERSION), f"reflow {__version__}"])
        except duckdb.Error as exc:
            raise StateError(f"cannot initialise the state file {self.path}: {exc}") from exc

    def _schema_version(self) -> int:
        """The file's `meta.schema_version`; 0 without a meta table (a new or blank file) or without the key."""
        try:
            row = self.con.execute(f"SELECT value FROM {DB}.meta WHERE key = 'schema_version'").fetchone()
        except duckdb.CatalogException:
            return 0
        value = row[0] if row else 0
        try:
            return int(value)
        except (TypeError, ValueError):
            raise StateError(
                f"the state file {self.path} is corrupt: its schema_version is {value!r}, not a number. "
                "Restore a backup (`reflow state restore FILE`) or move the file away to start over"
            ) from None

    @property
    def empty(self) -> bool:
        """No Reflow tables yet (a read-only look at a missing or blank file). Once they exist they stay,
        so a True answer is re-checked and a False one is kept: catalog queries cost milliseconds."""
        if getattr(self, "_has_tables", False):
            return False
        row = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'rstate' AND table_name = 'syncs'"
        ).fetchone()
        self._has_tables = bool(row and row[0])
        return not self._has_tables

    # ---------------------------------------------------------------- syncs and snapshots

    def sync(self, name: str) -> SyncState | None:
        if self.empty:
            return None
        row = self.con.execute(
            f"SELECT name, id, version, columns, hash_recipe, duckdb_version, identity, layout, forgotten "
            f"FROM {DB}.syncs WHERE name = ?", [name],
        ).fetchone()
        if row is None:
            return None
        cols = tuple((c[0], c[1]) for c in json.loads(row[3] or "[]"))
        identity = json.loads(row[6]) if row[6] else None
        return SyncState(row[0], row[1], row[2], cols, row[4], row[5], identity, row[7] or FIELDS_LAYOUT,
                         tuple(json.loads(row[8] or "[]")))

    def ensure_sync(self, name: str) -> SyncState:
        existing = self.sync(name)
        if existing is not None:
            return existing
        row = self.con.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {DB}.syncs").fetchone()
        new_id = int(row[0]) if row else 1
        self.con.execute(
            f"INSERT INTO {DB}.syncs (name, id, version, columns, hash_recipe, duckdb_version, updated_at, layout) "
            "VALUES (?, ?, 0, '[]', ?, ?, ?, ?)",
            [name, new_id, HASH_RECIPE, duckdb.__version__, now(), FIELDS_LAYOUT],
        )
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {DB}.snap_{new_id} (key VARCHAR, row_hash UBIGINT, row_json VARCHAR)"
        )
        created = self.sync(name)
        assert created is not None
        return created

    def snapshot_rows(self, sync: str) -> int:
        """Rows in the snapshot, counting acknowledged rows not yet folded in (a read-only look)."""
        st = self.sync(sync)
        if st is None:
            return 0
        row = self.con.execute(
            f"""SELECT (SELECT count(*) FROM {st.table})
                       + (SELECT coalesce(count(*) FILTER (WHERE p.op = 'added') - count(*) FILTER (WHERE p.op = 'removed'), 0)
                          FROM {DB}.acks AS a JOIN {DB}.plan_rows AS p ON p.plan_id = a.plan_id AND p.seq = a.seq
                          WHERE a.sync = ?)""", [sync]).fetchone()
        return int(row[0]) if row else 0

    def fold_acks(self, sync: str | None = None) -> int:
        """Advance the snapshot for the plan rows recorded in `acks` (update changed rows in place,
        delete removed ones, insert added ones, clear them from `pending`) and mark the fields of the rows
        in `uncertain` UNKNOWN (see the module docstring); one transaction per sync. Idempotent: a crash
        before COMMIT leaves `acks` and `uncertain` in place for the next fold."""
        if self.empty:
            return 0
        where, params = ("WHERE sync = ?", [sync]) if sync else ("", [])
        names = [r[0] for r in self.con.execute(
            f"SELECT sync FROM {DB}.acks {where} UNION SELECT sync FROM {DB}.uncertain {where}",
            params + params).fetchall()]
        folded = 0
        for name in sorted(names):
            st = self.sync(name)
            acked = (f"FROM {DB}.plan_rows AS p JOIN {DB}.acks AS a ON p.plan_id = a.plan_id AND p.seq = a.seq "
                     "WHERE a.sync = ?")
            con = self.con
            ops = dict(con.execute(f"SELECT p.op, count(*) {acked} GROUP BY p.op", [name]).fetchall())
            with self.transaction():
                if st is not None:
                    # an UPDATE in place costs half of a DELETE + INSERT of the same rows (measured, 100k rows)
                    if ops.get("changed"):
                        con.execute(f"""UPDATE {st.table} AS s SET row_hash = p.new_hash, row_json = p.new_row
                                        FROM (SELECT p.key, p.new_hash, p.new_row {acked} AND p.op = 'changed') AS p
                                        WHERE s.key = p.key""", [name])
                    if ops.get("removed"):
                        con.execute(f"DELETE FROM {st.table} WHERE key IN (SELECT p.key {acked} AND p.op = 'removed')",
                                    [name])
                    if ops.get("added"):
                        con.execute(f"INSERT INTO {st.table} SELECT p.key, p.new_hash, p.new_row {acked} AND p.op = 'added'",
                                    [name])
                    folded += self._fold_uncertain(st, name)
                if self.pending_count(name) and ops:
                    con.execute(f"DELETE FROM {DB}.pending WHERE sync = ? AND key IN (SELECT p.key {acked})", [name, name])
                con.execute(f"DELETE FROM {DB}.acks WHERE sync = ?", [name])
                con.execute(f"DELETE FROM {DB}.uncertain WHERE sync = ?", [name])
            folded += sum(ops.values())
        if sync is not None:
            self.upload()           # a remote state: each sync's fold goes up (a lost runner loses less)
        return folded

    def _fold_uncertain(self, st: SyncState, name: str) -> int:
        """Rows sent without a usable answer: the fields their payload may have changed become UNKNOWN
        (a changed row's changed fields; every field of an added or removed row), except the fields that
        name the destination object (the plan's `identity_fields`: those are known either way), unless the
        row has no other field (a user delete: then its identifier is marked, so it is sent again) or is an
        added membership (a cohort's member: whether it entered is what is unknown). An added
        row's key enters the snapshot with its other fields UNKNOWN, so a later removal is sent too."""
        con = self.con
        rows = (f"FROM {DB}.plan_rows AS p JOIN {DB}.uncertain AS u ON p.plan_id = u.plan_id AND p.seq = u.seq "
                f"JOIN {DB}.plan_syncs AS ps ON ps.plan_id = p.plan_id AND ps.sync = p.sync WHERE u.sync = ?")
        row = con.execute(f"SELECT count(*) {rows}", [name]).fetchone()
        n = int(row[0]) if row else 0
        if not n:
            return 0
        # a membership's added row (Capabilities.membership): whether it is a member is unknown too
        patch = _unknown_patch(
            "CASE WHEN p.op = 'changed' THEN p.changed ELSE json_keys(coalesce(p.new_row, p.old_row, '{}')) END",
            "CASE WHEN p.op = 'added' AND coalesce(json_extract(ps.info, '$.membership')::BOOLEAN, false) "
            "THEN []::VARCHAR[] ELSE coalesce(json_extract_string(ps.info, '$.identity_fields[*]'), []::VARCHAR[]) END")
        con.execute(f"""UPDATE {st.table} AS s SET row_hash = NULL, row_json = json_merge_patch(s.row_json, p.patch)
                        FROM (SELECT p.key, {patch} AS patch {rows} AND p.op <> 'added') AS p WHERE s.key = p.key""",
                    [name])
        con.execute(f"DELETE FROM {st.table} WHERE key IN (SELECT p.key {rows} AND p.op = 'added')", [name])
        con.execute(f"INSERT INTO {st.table} SELECT p.key, NULL, json_merge_patch(p.new_row, {patch}) "
                    f"{rows} AND p.op = 'added'", [name])
        return n

    def recover(self, *, status: str = RunStatus.INTERRUPTED, message: str | None = None,
                reason: str | None = None) -> int:
        """After a crash: runs still `running` belong to a dead process (a writer holds the lock).
        Their plan rows that may have been sent (up to the run's frontier) and have no recorded outcome
        become `uncertain` (append-only syncs excepted: their rows are simply sent again), and the run
        is marked interrupted. Returns how many rows became uncertain. An apply stopped by a state it
        cannot write recovers its own run at once: `status` failed, its `message`, the rows' `reason`."""
        if self.empty:
            return 0
        dead = self.con.execute(f"SELECT run_id, plan_id, sync FROM {DB}.runs WHERE status = ?",
                                [RunStatus.RUNNING]).fetchall()
        # a remote state downloaded here: a dead run (on another machine) may have sent past the frontier
        # of its last upload, so every row of its plan counts as possibly sent
        whole_plan = bool(self._remote is not None and self._remote.downloaded)
        marked = 0
        for run_id, plan_id, sync in dead:
            info = self.con.execute(f"SELECT info FROM {DB}.plan_syncs WHERE plan_id = ? AND sync = ?",
                                    [plan_id, sync]).fetchone()
            append_only = bool(info and json.loads(info[0] or "{}").get("append_only"))
            with self.transaction():
                reason = reason or KILLED_REASON
                # the rows it may have sent are pending (planned again as retries) with why
                self.con.execute(
                    f"""INSERT INTO {DB}.pending (sync, key, reason, run_id, at_time, unknowns)
                        SELECT p.sync, p.key, ?, ?, ?, 1 FROM {DB}.plan_rows AS p
                        WHERE p.plan_id = ? AND p.sync = ? AND p.status = '{SEND}'
                          AND (? OR p.seq <= (SELECT coalesce(max(seq), -1) FROM {DB}.frontier WHERE run_id = ?))
                          AND p.seq NOT IN (SELECT seq FROM {DB}.acks WHERE plan_id = ? AND sync = ?)
                          AND p.key NOT IN (SELECT key FROM {DB}.pending WHERE sync = ?)""",
                    [reason, run_id, now(), plan_id, sync, whole_plan, run_id, plan_id, sync, sync])
                if not append_only:
                    row = self.con.execute(
                        f"""INSERT INTO {DB}.uncertain
                            SELECT p.plan_id, p.sync, p.seq FROM {DB}.plan_rows AS p
                            WHERE p.plan_id = ? AND p.sync = ? AND p.status = '{SEND}'
                              AND (? OR p.seq <= (SELECT coalesce(max(seq), -1) FROM {DB}.frontier WHERE run_id = ?))
                              AND p.seq NOT IN (SELECT seq FROM {DB}.acks WHERE plan_id = ? AND sync = ?)
                              AND p.seq NOT IN (SELECT seq FROM {DB}.uncertain WHERE plan_id = ? AND sync = ?)
                              AND p.key NOT IN (SELECT key FROM {DB}.row_errors WHERE run_id = ?)""",
                        [plan_id, sync, whole_plan, run_id, plan_id, sync, plan_id, sync, run_id]).fetchone()
                    marked += int(row[0]) if row else 0
                self.con.execute(
                    f"UPDATE {DB}.runs SET status = ?, finished_at = coalesce(finished_at, ?), "
                    "message = coalesce(?, message, 'the process ended during the send (killed, or the machine stopped); "
                    "rows it may have sent are planned again in full') WHERE run_id = ?", [status, now(), message, run_id])
                self.con.execute(f"DELETE FROM {DB}.frontier WHERE run_id = ?", [run_id])
        return marked

    def values_held(self, sync: str, fields: Sequence[str]) -> tuple[tuple[str, int], ...]:
        """Per field of `fields`: how many snapshot rows of `sync` hold a value for it (not null)."""
        st = self.sync(sync)
        if st is None or not fields:
            return tuple((f, 0) for f in fields)
        parts = ", ".join(f"count(*) FILTER (WHERE coalesce(json_extract(row_json, {json_path(f)})::VARCHAR, "
                          f"'null') <> 'null')" for f in fields)
        row = self.con.execute(f"SELECT {parts} FROM {st.table}").fetchone() or (0,) * len(fields)
        return tuple((f, int(c)) for f, c in zip(fields, row, strict=True))

    def set_columns(self, sync: str, columns: Sequence[tuple[str, str]]) -> None:
        self.con.execute(
            f"UPDATE {DB}.syncs SET columns = ? WHERE name = ?", [json.dumps([list(c) for c in columns]), sync]
        )

    def reset(self, sync: str) -> int:
        """Forget what Braze holds for a sync, but not which rows it holds: every field of every snapshot row
        becomes UNKNOWN (but the fields naming its destination object, which the last plan lists), so the
        next plan sends every row again in full and still removes the rows that left the model. Pending rows
        and unfolded outcomes are dropped; plans made before are stale. Returns the rows marked."""
        st = self.sync(sync)
        if st is None:
            return 0
        self.fold_acks(sync)
        marked = self.snapshot_rows(sync)
        row = self.con.execute(f"SELECT info FROM {DB}.plan_syncs WHERE sync = ? ORDER BY seq_max DESC LIMIT 1",
                               [sync]).fetchone()
        known = json.loads(row[0]).get("identity_fields", []) if row and row[0] else []
        patch = _unknown_patch("json_keys(row_json)", _sql_list(known))
        con = self.con
        with self.transaction():
            con.execute(f"UPDATE {st.table} SET row_hash = NULL, row_json = json_merge_patch(row_json, {patch})")
            for table in ("pending", "acks", "uncertain"):
                con.execute(f"DELETE FROM {DB}.{table} WHERE sync = ?", [sync])
            con.execute(f"UPDATE {DB}.syncs SET version = version + 1, updated_at = ? WHERE name = ?", [now(), sync])
        return marked

    def restart(self, sync: str, identity: dict[str, str] | None) -> None:
        """Start a sync over for a new destination (`identity`): its snapshot, pending rows and unfolded
        outcomes are dropped and its version moves, so plans made before are stale."""
        st = self.sync(sync)
        if st is None:
            return
        con = self.con
        with self.transaction():
            con.execute(f"DELETE FROM {st.table}")
            for table in ("pending", "acks", "uncertain"):
                con.execute(f"DELETE FROM {DB}.{table} WHERE sync = ?", [sync])
            con.execute(f"UPDATE {DB}.syncs SET version = version + 1, updated_at = ?, identity = ?, columns = '[]', "
                        f"layout = '{FIELDS_LAYOUT}', forgotten = NULL WHERE name = ?",
                        [now(), json.dumps(identity, sort_keys=True) if identity is not None else None, sync])

    def orphans_like(self, identity: dict[str, str], known: Sequence[str]) -> list[tuple[str, int]]:
        """Syncs of the state that the project no longer has, with the same destination as `identity` and
        rows in their snapshot: (name, rows). A sync whose file was renamed looks like one of these."""
        if self.empty:
            return []
        found = []
        for name, ident in self.con.execute(f"SELECT name, identity FROM {DB}.syncs WHERE identity IS NOT NULL").fetchall():
            if name not in known and json.loads(ident) == identity:
                rows = self.snapshot_rows(name)
                if rows:
                    found.append((name, rows))
        return found

    def rename_sync(self, old: str, new: str) -> None:
        """Give a sync's state (snapshot, plans, runs, pending rows, errors) a new name."""
        if self.sync(old) is None:
            raise StateError(f"the state has no sync '{old}'")
        if self.sync(new) is not None and self.snapshot_rows(new):
            raise StateError(f"the state already has a sync '{new}' with rows; `reflow state forget {new}` first")
        con = self.con
        with self.transaction():
            con.execute(f"DELETE FROM {DB}.syncs WHERE name = ?", [new])
            con.execute(f"UPDATE {DB}.syncs SET name = ?, version = version + 1 WHERE name = ?", [new, old])
            for table in ("plan_syncs", "plan_rows", "plan_held", "runs", "pending", "row_errors", "acks", "uncertain", "frontier"):
                con.execute(f"UPDATE {DB}.{table} SET sync = ? WHERE sync = ?", [new, old])

    def forget_sync(self, name: str) -> int:
        """Drop a sync's snapshot and pending rows from the state (its history stays); the rows it held."""
        st = self.sync(name)
        if st is None:
            raise StateError(f"the state has no sync '{name}'")
        rows = self.snapshot_rows(name)
        con = self.con
        with self.transaction():
            con.execute(f"DROP TABLE IF EXISTS {st.table}")
            for table in ("pending", "acks", "uncertain"):
                con.execute(f"DELETE FROM {DB}.{table} WHERE sync = ?", [name])
            con.execute(f"DELETE FROM {DB}.syncs WHERE name = ?", [name])
        return rows

    def set_forgotten(self, sync: str, fields: Sequence[str]) -> None:
        self.con.execute(f"UPDATE {DB}.syncs SET forgotten = ? WHERE name = ?", [json.dumps(sorted(fields)), sync])

    def set_identity(self, sync: str, identity: dict[str, str]) -> None:
        self.con.execute(f"UPDATE {DB}.syncs SET identity = ? WHERE name = ?",
                         [json.dumps(identity, sort_keys=True), sync])

    def convert_legacy(self, sync: str, fields: Sequence[tuple[str, str]], types: dict[str, str],
                       identity: dict[str, str]) -> bool:
        """A snapshot written by state schema <= 2 holds model columns: rewrite each row as the fields of
        today's mapping (`fields`: (field, model column)), so nothing already sent is sent again. Hashes
        are dropped (they covered the model columns): the next diff compares values and records, without
        sending, every row whose fields did not change. The identity recorded is today's."""
        st = self.sync(sync)
        if st is None or st.layout != LEGACY_LAYOUT:
            return False
        con = self.con
        parts = ", ".join(f"{sql_str(f)}, json_extract(row_json, {sql_str('$.' + json.dumps(c))})"
                          for f, c in fields)
        with self.transaction():
            if parts:
                con.execute(f"UPDATE {st.table} SET row_hash = NULL, row_json = json_object({parts})::VARCHAR")
            else:
                con.execute(f"UPDATE {st.table} SET row_hash = NULL, row_json = '{{}}'")
            con.execute(f"UPDATE {DB}.syncs SET columns = ?, layout = '{FIELDS_LAYOUT}', identity = ? WHERE name = ?",
                        [json.dumps([[f, types.get(c, "VARCHAR")] for f, c in fields]),
                         json.dumps(identity, sort_keys=True), sync])
        return True

    def invalidate_hashes_if_needed(self, sync: str, recipe: str = HASH_RECIPE) -> bool:
        """After a DuckDB upgrade (for DuckDB's recipe), or when the sync's hashes come from another recipe
        (a diff that moved to or from the warehouse), hashes are not comparable: forget them.

        The next diff then compares every row with its stored values, field by field; rows whose
        values did not change are recorded with their new hash, never re-sent."""
        st = self.sync(sync)
        upgraded = recipe.startswith("duckdb") and st is not None and st.duckdb_version != duckdb.__version__
        if st is None or (not upgraded and st.hash_recipe == recipe):
            return False
        with self.transaction():
            self.con.execute(f"UPDATE {st.table} SET row_hash = NULL")
            if LOWERCASE_ESCAPES.match(st.hash_recipe or ""):
                self._respell_keys(st.table)
            self.con.execute(f"UPDATE {DB}.syncs SET duckdb_version = ?, hash_recipe = ? WHERE name = ?",
                             [duckdb.__version__, recipe, sync])
        return True

    def _respell_keys(self, table: str) -> None:
        """Composite keys written by a PostgreSQL recipe before v4 spell nine JSON escapes (`\\u001f`, …) in
        lowercase; every location now spells them as the local diff does (`\\u001F`): respelled once, so the
        rows keep their keys (else removed and added: events sent again). A respelled key the snapshot
        already holds is left as it is."""
        respelled = uppercase_escapes("s.key")
        self.con.execute(f"UPDATE {table} AS s SET key = {respelled} WHERE s.key LIKE '[%' "
                         f"AND regexp_matches(s.key, {sql_str(lowercase_escape())}) "
                         f"AND NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.key = {respelled})")

    def snapshot_digest(self, sync: str) -> str:
        """A digest of a sync's snapshot keys and hashes (what a warehouse mirror must hold): rows and an
        order-free checksum (the sum of 60 bits of each `key,hash` line's MD5). Equal digests, equal (key,
        hash) sets, whatever the versions say."""
        query = self._digest_query(sync)
        return _digest(self.con, query) if query else "0:0"

    def snapshot_digester(self, sync: str) -> Callable[[], str]:
        """`snapshot_digest` of the committed snapshot, computed by the function returned on a cursor of its
        own: in another thread while this connection reads the warehouse (10M rows: 2 s)."""
        query = self._digest_query(sync)
        if not query:
            return lambda: "0:0"
        cursor = self.con.cursor()

        def digest() -> str:
            try:
                return _digest(cursor, query)
            finally:
                cursor.close()

        return digest

    def _digest_query(self, sync: str) -> str | None:
        st = self.sync(sync)
        if st is None:
            return None
        # the checksum is one the warehouse computes over the mirror's rows too (Mirror.digest), so a
        # mirror edited by hand is found out, not only one whose recorded digest is stale
        line = "key || ',' || coalesce(printf('%016x', row_hash), '')"
        return f"SELECT count(*), coalesce(sum(('0x' || substr(md5({line}), 1, 15))::BIGINT), 0) FROM {st.table}"

    def snapshot_hashes_csv(self, sync: str, path: Path, keys: str | None = None) -> int:
        """Write `key,hash` (hash as 16 hex digits, empty when unknown) of a sync's snapshot to a CSV file;
        with `keys` (SQL selecting `__k`), those keys only as `key,hash,y` (in the snapshot) or `key,,n`
        (no longer in it). Returns the lines written."""
        st = self.sync(sync)
        if st is None:
            return 0
        hexed = "CASE WHEN row_hash IS NOT NULL THEN printf('%016x', row_hash) END"
        if keys is None:
            query = f"SELECT key, {hexed} AS hash FROM {st.table}"
        else:
            query = (f"SELECT k.__k AS key, {hexed} AS hash, CASE WHEN s.key IS NULL THEN 'n' ELSE 'y' END AS present "
                     f"FROM ({keys}) AS k LEFT JOIN {st.table} AS s ON s.key = k.__k")
        self.con.execute(f"COPY ({query}) TO {sql_str(str(path))} (FORMAT csv, HEADER false)")
        row = self.con.execute(f"SELECT count(*) FROM ({query})").fetchone()
        return int(row[0]) if row else 0

    def pending_reason(self, sync: str) -> str | None:
        """The most frequent reason rows of a sync are pending, with its count (None when none are)."""
        if self.empty:
            return None
        row = self.con.execute(f"SELECT reason, count(*) AS n FROM {DB}.pending WHERE sync = ? GROUP BY reason "
                               "ORDER BY n DESC, reason LIMIT 1", [sync]).fetchone()
        return f"{row[0]} ({row[1]:,} row{'s' if row[1] != 1 else ''})" if row else None

    def pending_count(self, sync: str) -> int:
        if self.empty:
            return 0
        row = self.con.execute(f"SELECT count(*) FROM {DB}.pending WHERE sync = ?", [sync]).fetchone()
        return int(row[0]) if row else 0

    def rejected_count(self, sync: str) -> int:
        """Pending rows Braze rejected (their reason starts 'rejected: '); the others were not delivered."""
        if self.empty:
            return 0
        row = self.con.execute(f"SELECT count(*) FROM {DB}.pending WHERE sync = ? AND starts_with(reason, ?)",
                               [sync, REJECTED_REASON]).fetchone()
        return int(row[0]) if row else 0

    # ---------------------------------------------------------------- plans

    def next_seq(self) -> int:
        """The first seq of the next plan rows: after every plan row, held ones (`plan_held`) too."""
        row = self.con.execute(f"SELECT greatest((SELECT coalesce(max(seq), 0) FROM {DB}.plan_rows), "
                               f"(SELECT coalesce(max(seq_max), 0) FROM {DB}.plan_held)) + 1").fetchone()
        return int(row[0]) if row else 1

    def latest_plan_id(self) -> str | None:
        if self.empty:
            return None
        row = self.con.execute(f"SELECT plan_id FROM {DB}.plans ORDER BY {NEWEST} LIMIT 1").fetchone()
        return row[0] if row else None

    def set_plan_status(self, plan_id: str, status: str) -> None:
        applied = now() if status == PlanStatus.APPLIED else None
        self.con.execute(f"UPDATE {DB}.plans SET status = ?, applied_at = coalesce(?, applied_at) WHERE plan_id = ?",
                         [status, applied, plan_id])

    def prune_plans(self, keep: int = 10) -> None:
        """Drop the rows of old plans (their summaries stay) so the state file stays small: their plan
        rows, and the tables holding their baseline rows."""
        old = (f"plan_id NOT IN (SELECT plan_id FROM {DB}.plans ORDER BY {NEWEST} LIMIT {int(keep)}) "
               f"AND plan_id NOT IN (SELECT plan_id FROM {DB}.acks)")
        self.con.execute(f"DELETE FROM {DB}.plan_rows WHERE {old}")
        for (table,) in self.con.execute(f"SELECT tbl FROM {DB}.plan_held WHERE {old}").fetchall():
            self.con.execute(f"DROP TABLE IF EXISTS {DB}.{quote(table)}")
        self.con.execute(f"DELETE FROM {DB}.plan_held WHERE {old}")

    # ---------------------------------------------------------------- runs

    def start_run(self, run_id: str, plan_id: str, sync: str) -> None:
        """Record a sync's run as `running` before it sends anything. A remote state is uploaded at once:
        a runner lost before its next upload leaves this run in the stored state, and the next writer takes
        every row of its plan as possibly sent (see `recover`); without it, the rows it sent would be
        unknown to the next writer, and a change reverted meanwhile would never reach Braze."""
        self.con.execute(
            f"INSERT INTO {DB}.runs (run_id, plan_id, sync, started_at, finished_at, status, acknowledged, rejected, "
            "not_attempted, skipped, requests, data_points, pid, message, seq) "
            f"SELECT ?, ?, ?, ?, NULL, '{RunStatus.RUNNING}', 0, 0, 0, 0, 0, 0, ?, NULL, coalesce(max(seq), 0) + 1 "
            f"FROM {DB}.runs",
            [run_id, plan_id, sync, now(), os.getpid()],
        )
        self.upload()

    def write_problem(self, exc: BaseException) -> StateError | None:
        """The StateError for a failure to write the state file (a full disk, a read-only folder), or None
        when `exc` is something else."""
        if isinstance(exc, duckdb.IOException | duckdb.TransactionException):
            return _io_problem(self.path, exc)
        return None

    def finish_run(self, run_id: str, status: str, message: str | None = None) -> None:
        self.con.execute(f"UPDATE {DB}.runs SET finished_at = ?, status = ?, message = ? WHERE run_id = ?",
                         [now(), status, message, run_id])

    def runs(self, sync: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if self.empty:
            return []
        where, params = ("WHERE sync = ?", [sync]) if sync else ("", [])
        cur = self.con.execute(
            f"SELECT * FROM {DB}.runs {where} ORDER BY seq DESC NULLS LAST, started_at DESC LIMIT {int(limit)}",
            params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _acquire(lock: StateLock, timeout: float) -> None:
    """Take the local lock, waiting up to `timeout` seconds while another run holds it."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            lock.acquire()
            return
        except LockError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def _refuse_if_rescued(path: Path) -> None:
    """A writer finding no state file where a run saved a rescue copy (its state file was deleted while it
    ran) stops: starting over would send every row again, events and purchases included."""
    if path.exists():
        return
    rescued = sorted(path.parent.glob(f"{path.stem}-rescued-*{path.suffix or '.duckdb'}"))
    if rescued:
        raise StateError(
            f"there is no state file at {path}, but {rescued[-1]} holds what a run saved when the state file was "
            f"deleted while it ran: `reflow state restore {rescued[-1]}` goes on from it; move it away to start "
            "over instead (every row is then sent again, events and purchases included)")


def _connect(path: Path, *, memory_limit: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    spill = path.parent / "spill"
    if not read_only:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create the state folder {path.parent}: {exc.strerror}") from exc
        if not os.access(path.parent, os.W_OK):
            raise StateError(f"the state folder {path.parent} is not writable; fix its permissions or "
                             "set state_path in reflow_project.yml")
    # models run on this connection: they may not install extensions (a model is one read-only query:
    # engine/warehouse/guard.py)
    config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": memory_limit,
                                                               "temp_directory": str(spill),
                                                               "autoinstall_known_extensions": False,
                                                               "allow_community_extensions": False}
    con = duckdb.connect(":memory:", config=config)
    if read_only and not path.exists():
        con.execute("ATTACH ':memory:' AS rstate")
        return con
    mode = " (READ_ONLY)" if read_only else ""
    # a writer holds the state lock, so DuckDB's own lock can only be held by a reader (`reflow status`,
    # for a few milliseconds) or another program: a writer waits READER_WAIT seconds for it to go
    deadline = time.monotonic() + (0 if read_only else READER_WAIT)
    try:
        while True:
            try:
                con.execute(f"ATTACH {sql_str(str(path))} AS rstate{mode}")
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
    except duckdb.IOException as exc:
        con.close()
        text = str(exc)
        if "lock" in text.lower():
            holder = read_holder(path)
            who = f"another reflow run ({describe_holder(holder)})" if holder is not None else "another process"
            raise LockError(f"the state file {path} is in use by {who}") from exc
        raise _io_problem(path, exc) from exc
    except duckdb.Error as exc:
        con.close()
        raise _unreadable(path, exc) from exc
    return con




def _unreadable(path: Path, exc: BaseException) -> StateError:
    return StateError(
        f"the state file {path} is unreadable ({first_line(exc)}); it may be corrupt or "
        "truncated. Restore a backup (`reflow state restore`) or move it away to start over"
    )


def _io_problem(path: Path, exc: BaseException) -> StateError:
    """DuckDB I/O failures on the state file: unreadable (corrupt, truncated) or unwritable (disk full,
    read-only). Rows whose outcome could not be recorded are simply planned again."""
    text = first_line(exc)
    low = text.lower()
    if "could not read" in low or "not a valid duckdb" in low or "corrupt" in low or "checksum" in low:
        return _unreadable(path, exc)
    return StateError(
        f"cannot write the state file {path} ({text}); free disk space or fix the folder's permissions, then "
        "run again"
    )






def _unknown_patch(fields: str, known: str) -> str:
    """SQL for a JSON merge patch setting the fields of the list `fields` to UNKNOWN, except those in the
    list `known` (the fields naming the destination object: known either way) unless nothing else is
    left (a user delete's row is its identifier: then that is marked, so it is sent again)."""
    others = f"list_filter({fields}, lambda f: NOT list_contains({known}, f))"
    chosen = f"CASE WHEN len({others}) > 0 THEN {others} ELSE {fields} END"
    return (f"to_json(map_from_entries(list_transform({chosen}, "
            f"lambda f: {{'k': f, 'v': {sql_str(UNKNOWN)}}})))::VARCHAR")


def _sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(sql_str(v) for v in values) + "]::VARCHAR[]"


_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A plan or run id: the time to the second, then the process, the microsecond and a counter of this
    process, so that two ids made in one process never collide (they used to, 1 in 1,000, within a second)."""
    now_ns = time.time_ns()
    stamp = datetime.fromtimestamp(now_ns / 1e9, UTC).strftime("%Y%m%dT%H%M%S")
    return f"{prefix}_{stamp}_{os.getpid() % 10000:04d}{now_ns // 1000 % 1_000_000:06d}{next(_ids) % 1000:03d}"


def _digest(con: duckdb.DuckDBPyConnection, query: str) -> str:
    row = con.execute(query).fetchone()
    return f"{row[0]}:{row[1]}" if row else "0:0"
