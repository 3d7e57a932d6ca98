"""Applying a plan: stored payloads → batches → destination → checkpoint.

The snapshot is what the destination acknowledged. After each group of completed
batches, ONE DuckDB transaction records the outcome and advances the snapshot for
exactly the acknowledged rows; rejected rows go to `pending` (retried by the next
plan) and `row_errors` (for `reflow errors`). A crash at any moment loses nothing:
rows whose acknowledgement was not committed are planned again. Duplicates are
bounded by the batches in flight plus those waiting for the checkpoint.
"""

from __future__ import annotations

import functools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engine.destinations.base import ACKNOWLEDGED, NOT_ATTEMPTED, REJECTED, Batch, Destination, RowResult
from engine.errors import DestinationError, GuardError, Interrupted, PlanError
from engine.plan import BASELINE, REHASH, SEND, SKIP, Plan, SyncPlan
from engine.specs import SyncSpec
from engine.state import DB, State, new_id, now

READ_CHUNK = 10_000

# exit codes
OK = 0
FATAL = 1
UNDELIVERED = 3


@dataclass
class SyncOutcome:
    name: str
    run_id: str
    acknowledged: int = 0
    rejected: int = 0
    not_attempted: int = 0
    skipped: int = 0
    invalid: int = 0
    held_back: int = 0          # waiting for a profile that was not delivered in this apply
    requests: int = 0
    data_points: int = 0
    seconds: float = 0.0
    error: str | None = None

    @property
    def pending(self) -> int:
        return self.rejected + self.not_attempted + self.invalid + self.held_back


@dataclass
class ApplyResult:
    plan_id: str
    syncs: list[SyncOutcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return Interrupted.exit_code
        if any(s.error for s in self.syncs):
            return FATAL
        if any(s.pending for s in self.syncs):
            return UNDELIVERED
        return OK


ApplyProgress = Callable[[str, int, int, int], None]     # sync, rows done, rows total, requests


def check_plan(state: State, plan: Plan, current: dict[str, str], *, allow_guards: Sequence[str] = ()) -> None:
    """Refuse a plan that is applied, superseded, stale, or blocked by a guard."""
    if plan.status == "applied":
        raise PlanError(f"plan {plan.plan_id} was already applied; run `reflow plan` again")
    if plan.status == "applying":
        raise PlanError(f"plan {plan.plan_id} was interrupted while applying; plan is stale, run `reflow plan` again")
    if plan.status == "superseded":
        raise PlanError(f"plan {plan.plan_id} was superseded by a newer plan; plan is stale, run `reflow plan` again")
    for s in plan.syncs:
        st = state.sync(s.name)
        version = st.version if st else 0
        if version != s.snapshot_version:
            raise PlanError(f"plan is stale, run `reflow plan` again (sync '{s.name}' was applied since "
                            f"the plan was made: snapshot version {version}, plan made at {s.snapshot_version})")
        if s.name in current and current[s.name] != s.fingerprint:
            raise PlanError(f"plan is stale, run `reflow plan` again (the spec or model of sync '{s.name}' "
                            "changed since the plan was made)")
        if s.name not in current:
            raise PlanError(f"plan is stale, run `reflow plan` again (sync '{s.name}' no longer exists)")
    blocked = [(name, g) for name, g in plan.blocked if g.name not in allow_guards]
    if blocked:
        lines = "; ".join(f"{name}: {g.describe()}" for name, g in blocked)
        names = " ".join(sorted({f"--allow-guard {g.name}" for _, g in blocked}))
        raise GuardError(f"guard blocked the plan: {lines}. Review it (`reflow show`), then pass {names} "
                         "to apply it anyway")


def apply_plan(state: State, plan: Plan, specs: dict[str, SyncSpec],
               destination_for: Callable[[SyncSpec], Destination], *,
               stop: threading.Event | None = None, progress: ApplyProgress | None = None) -> ApplyResult:
    stop = stop or threading.Event()
    result = ApplyResult(plan.plan_id)
    state.set_plan_status(plan.plan_id, "applying")
    # profiles first, deletes last; subscription states wait for the profiles they need
    held: dict[str, set[str]] = {}      # identifier kind -> ids of new profiles not delivered in this apply
    for sp in sorted(plan.syncs, key=lambda s: APPLY_ORDER.get(s.object, 2)):
        if stop.is_set():
            result.interrupted = True
            break
        outcome = SyncOutcome(sp.name, new_id("run"))
        result.syncs.append(outcome)
        state.start_run(outcome.run_id, plan.plan_id, sp.name)
        started = time.monotonic()
        try:
            destination = destination_for(specs[sp.name])
            try:
                _record_local(state, plan.plan_id, sp, destination.capabilities.append_only, outcome)
                hold = _held_back(specs[sp.name], held)
                _send(state, plan.plan_id, sp, destination, outcome, stop, progress, hold)
                if sp.object == "users":
                    _undelivered_profiles(state, plan.plan_id, specs[sp.name], held)
            finally:
                destination.close()
        except DestinationError as exc:
            outcome.error = exc.message
        outcome.seconds = time.monotonic() - started
        if stop.is_set():
            result.interrupted = True
        status = "failed" if outcome.error else "interrupted" if stop.is_set() else (
            "partial" if outcome.pending else "succeeded")
        state.finish_run(outcome.run_id, status, outcome.error)
        if outcome.error:
            break
    state.set_plan_status(plan.plan_id, "applied")
    return result


# the order syncs are applied in, by destination object (others: 2)
APPLY_ORDER = {"users": 0, "catalog_items": 1, "subscription_groups": 3, "user_deletes": 4}


@dataclass(frozen=True)
class _Hold:
    """Rows of a sync to hold back: those whose identifier (a column of the new row) is in `ids`."""

    column: str
    ids: frozenset[str]


def _held_back(spec: SyncSpec, held: dict[str, set[str]]) -> _Hold | None:
    """Braze accepts a subscription state for an unknown user and keeps nothing: a state for a
    profile whose creation failed in this apply would be recorded as delivered and lost. Such rows
    are held back (left pending) until the profile is delivered."""
    ident = spec.destination.identifier
    if spec.destination.object != "subscription_groups" or ident is None or not held.get(ident.kind):
        return None
    return _Hold(ident.column, frozenset(held[ident.kind]))


def _undelivered_profiles(state: State, plan_id: str, spec: SyncSpec, held: dict[str, set[str]]) -> None:
    """Identifier values of profiles this users sync should have created but Braze did not acknowledge
    (rejected, invalid, or left pending)."""
    ident = spec.destination.identifier
    st = state.sync(spec.name)
    if ident is None or ident.kind == "user_alias" or st is None:
        return
    path = "'$." + json.dumps(ident.column).replace("'", "''") + "'"
    rows = state.con.execute(
        f"""SELECT json_extract_string(p.new_row, {path}) FROM {DB}.plan_rows AS p
            LEFT JOIN {st.table} AS s ON s.key = p.key
            WHERE p.plan_id = ? AND p.sync = ? AND p.op = 'added' AND p.status IN ('{SEND}', 'invalid')
              AND s.row_hash IS DISTINCT FROM p.new_hash""", [plan_id, spec.name]).fetchall()
    held.setdefault(ident.kind, set()).update(v for (v,) in rows if v is not None)


def _record_local(state: State, plan_id: str, sp: SyncPlan, append_only: bool, outcome: SyncOutcome) -> None:
    """Rows that send nothing (skip, rehash, baseline) advance the snapshot without the network."""
    st = state.ensure_sync(sp.name)
    con = state.con
    where = f"plan_id = ? AND sync = ? AND status IN ('{SKIP}', '{REHASH}', '{BASELINE}')"
    params = [plan_id, sp.name]
    row = con.execute(f"SELECT count(*) FROM {DB}.plan_rows WHERE {where}", params).fetchone()
    n = int(row[0]) if row else 0
    invalid = con.execute(f"SELECT count(*) FROM {DB}.plan_rows WHERE plan_id = ? AND sync = ? AND status = 'invalid'",
                          params).fetchone()
    outcome.invalid = int(invalid[0]) if invalid else 0
    if not n:
        return
    keep_removed = "AND op <> 'removed'" if append_only else ""
    con.execute("BEGIN")
    con.execute(f"DELETE FROM {st.table} WHERE key IN (SELECT key FROM {DB}.plan_rows WHERE {where} {keep_removed})",
                params)
    con.execute(f"INSERT INTO {st.table} SELECT key, new_hash, new_row FROM {DB}.plan_rows "
                f"WHERE {where} AND op <> 'removed'", params)
    con.execute(f"UPDATE {DB}.syncs SET version = version + 1, updated_at = ? WHERE name = ?", [now(), sp.name])
    con.execute(f"UPDATE {DB}.runs SET skipped = skipped + ? WHERE run_id = ?", [n, outcome.run_id])
    con.execute("COMMIT")
    outcome.skipped = n


@dataclass(frozen=True)
class _Row:
    op: str
    new_hash: int | None
    new_row: str | None
    item: str
    data_points: int


def _read(con: Any, plan_id: str, sp: SyncPlan, channel: str, rows: dict[str, _Row],
          hold: _Hold | None, outcome: SyncOutcome) -> Iterator[tuple[str, str]]:
    """Stored payloads of one channel, in seq order, a chunk at a time (held-back rows skipped)."""
    for start in range(sp.seq_min, sp.seq_max + 1, READ_CHUNK):
        chunk = con.execute(
            f"SELECT key, op, new_hash, new_row, item, data_points FROM {DB}.plan_rows "
            f"WHERE seq >= ? AND seq < ? AND plan_id = ? AND sync = ? AND status = '{SEND}' AND channel = ? "
            "ORDER BY seq", [start, start + READ_CHUNK, plan_id, sp.name, channel]).fetchall()
        for key, op, new_hash, new_row, item, dp in chunk:
            if hold is not None and new_row and json.loads(new_row).get(hold.column) in hold.ids:
                outcome.held_back += 1              # stays pending: the next plan sends it again
                continue
            rows[key] = _Row(op, new_hash, new_row, item, dp)
            yield key, item


class _Checkpointer(threading.Thread):
    """Owns the state connection during a send: takes completed batches as they finish and records
    them in group commits (everything waiting goes into one transaction), so that sending never
    waits for the disk. A batch holds a slot from submit until its outcome is committed: at most
    `concurrency` batches are ever in flight or acknowledged-but-unrecorded (the duplicate bound)."""

    def __init__(self, state: State, sync: str, outcome: SyncOutcome, rows: dict[str, _Row], slots: int,
                 progress: ApplyProgress | None, total: int) -> None:
        super().__init__(name="reflow-checkpoint", daemon=True)
        self.state, self.sync, self.outcome, self.rows = state, sync, outcome, rows
        self.snapshot = state.ensure_sync(sync).table
        self.slots = threading.BoundedSemaphore(slots)
        self.queue: queue.SimpleQueue[tuple[Batch, Sequence[RowResult]] | None] = queue.SimpleQueue()
        self.fatal: DestinationError | None = None
        self.failure: BaseException | None = None
        self.progress, self.total, self.done = progress, total, 0

    def stopping(self, stop: threading.Event) -> bool:
        return stop.is_set() or self.fatal is not None or self.failure is not None

    def wait_for_slot(self, stop: threading.Event) -> bool:
        """Block until a batch may be submitted; False when sending must stop instead."""
        while not self.slots.acquire(timeout=0.2):
            if self.stopping(stop):
                return False
        if self.stopping(stop):
            self.slots.release()
            return False
        return True

    def finished(self, batch: Batch, fut: Future[Sequence[RowResult]]) -> None:
        try:
            results: Sequence[RowResult] = fut.result()
        except DestinationError as exc:
            self.fatal = self.fatal or exc
            results = [RowResult(k, NOT_ATTEMPTED, exc.message) for k in batch.keys]
        except BaseException as exc:  # noqa: BLE001 - recorded as not attempted, raised after the send
            self.failure = self.failure or exc
            results = [RowResult(k, NOT_ATTEMPTED, f"unexpected error: {exc!r}") for k in batch.keys]
        self.queue.put((batch, results))

    def run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            group = [first]
            end = False
            while True:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    end = True
                    break
                group.append(nxt)
            try:
                _checkpoint(self.state, self.sync, self.snapshot, self.outcome, group, self.rows)
            except BaseException as exc:  # noqa: BLE001 - e.g. a full disk: stop sending, report it
                self.failure = self.failure or exc
            for _ in group:
                self.slots.release()
            self.done += sum(len(b.keys) for b, _ in group)
            if self.progress:
                self.progress(self.sync, self.done, self.total, self.outcome.requests)
            if end:
                return


def _send(state: State, plan_id: str, sp: SyncPlan, destination: Destination, outcome: SyncOutcome,
          stop: threading.Event, progress: ApplyProgress | None, hold: _Hold | None = None) -> None:
    concurrency = max(1, destination.capabilities.default_concurrency)
    rows: dict[str, _Row] = {}
    reader = state.con.cursor()
    writer = _Checkpointer(state, sp.name, outcome, rows, concurrency, progress, sp.counts.to_send)
    writer.start()
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reflow-send") as pool:
            channels = [r[0] for r in reader.execute(
                f"SELECT DISTINCT channel FROM {DB}.plan_rows WHERE plan_id = ? AND sync = ? AND status = '{SEND}' "
                "ORDER BY channel", [plan_id, sp.name]).fetchall()]
            for channel in channels:
                for batch in destination.batches(channel, _read(reader, plan_id, sp, channel, rows, hold, outcome)):
                    if not writer.wait_for_slot(stop):
                        break
                    fut = pool.submit(destination.send, batch)
                    fut.add_done_callback(functools.partial(writer.finished, batch))
                if writer.stopping(stop):
                    break
    finally:
        writer.queue.put(None)
        writer.join()
        reader.close()
    if writer.failure:
        raise writer.failure
    if writer.fatal:
        raise writer.fatal


def _checkpoint(state: State, sync: str, snapshot: str, outcome: SyncOutcome,
                completed: list[tuple[Batch, Sequence[RowResult]]], rows: dict[str, _Row]) -> None:
    """One transaction: record outcomes and advance the snapshot for exactly the acknowledged rows."""
    acked: list[str] = []
    replaced: list[str] = []
    upsert: tuple[list[str], list[int | None], list[str | None]] = ([], [], [])
    rejected: list[tuple[str, str, str]] = []
    not_attempted = 0
    data_points = 0
    for _batch, results in completed:
        if any(r.outcome != NOT_ATTEMPTED for r in results):
            outcome.requests += 1
        for r in results:
            row = rows.pop(r.key, None)
            if row is None:
                continue
            if r.outcome == ACKNOWLEDGED:
                acked.append(r.key)
                if row.op != "added":           # an added key is not in the snapshot (the plan is not stale)
                    replaced.append(r.key)
                data_points += row.data_points
                if row.op != "removed":
                    upsert[0].append(r.key)
                    upsert[1].append(row.new_hash)
                    upsert[2].append(row.new_row)
            elif r.outcome == REJECTED:
                rejected.append((r.key, r.reason or "rejected", row.item))
            else:
                not_attempted += 1
    con = state.con
    run = outcome.run_id
    con.execute("BEGIN")
    if acked:
        if replaced:
            con.execute(f"DELETE FROM {snapshot} WHERE key IN (SELECT unnest(?))", [replaced])
        if upsert[0]:
            con.execute(f"INSERT INTO {snapshot} SELECT unnest(?), unnest(?), unnest(?)", list(upsert))
        con.execute(f"DELETE FROM {DB}.pending WHERE sync = ? AND key IN (SELECT unnest(?))", [sync, acked])
    if rejected:
        keys = [r[0] for r in rejected]
        reasons = [r[1] for r in rejected]
        items = [r[2] for r in rejected]
        at = now()
        con.execute(f"DELETE FROM {DB}.pending WHERE sync = ? AND key IN (SELECT unnest(?))", [sync, keys])
        con.execute(f"INSERT INTO {DB}.pending SELECT ?, unnest(?), unnest(?), ?, ?", [sync, keys, reasons, run, at])
        con.execute(f"INSERT INTO {DB}.row_errors SELECT ?, ?, unnest(?), unnest(?), unnest(?), ?",
                    [run, sync, keys, reasons, items, at])
    con.execute(
        f"UPDATE {DB}.runs SET acknowledged = acknowledged + ?, rejected = rejected + ?, "
        "not_attempted = not_attempted + ?, requests = ?, data_points = data_points + ? WHERE run_id = ?",
        [len(acked), len(rejected), not_attempted, outcome.requests, data_points, run])
    if acked:
        con.execute(f"UPDATE {DB}.syncs SET version = version + 1, updated_at = ? WHERE name = ?", [now(), sync])
    con.execute("COMMIT")
    outcome.acknowledged += len(acked)
    outcome.rejected += len(rejected)
    outcome.not_attempted += not_attempted
    outcome.data_points += data_points


def errors(state: State, sync: str | None = None, run_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    if state.empty:
        return []
    clauses, params = [], []
    if sync:
        clauses.append("sync = ?")
        params.append(sync)
    if run_id:
        clauses.append("run_id = ?")
        params.append(run_id)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    cur = state.con.execute(
        f"SELECT run_id, sync, key, reason, item, at_time AS at FROM {DB}.row_errors {where} ORDER BY at_time DESC, key "
        f"LIMIT {int(limit)}", params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
