"""Applying a plan: stored payloads → batches → destination → checkpoint.

The snapshot is what the destination acknowledged. After each group of completed batches, ONE DuckDB transaction records the
outcome: the acknowledged plan rows go to `acks` (and advance the snapshot when the
sync's send ends, or when the next writer opens the state after a crash), rejected
rows go to `pending` (retried by the next plan) and `row_errors` (for `reflow
errors`). A crash at any moment loses nothing: rows whose acknowledgement was not
committed are planned again. Duplicates are bounded by the batches in flight plus
those waiting for the checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from engine.destinations.base import (
    ACKNOWLEDGED,
    NOT_ATTEMPTED,
    REJECTED,
    AllAcknowledged,
    Batch,
    Destination,
    RowResult,
)
from engine.diff import json_path
from engine.errors import DestinationError, GuardError, Interrupted, PlanError
from engine.plan import BASELINE, REHASH, SEND, SKIP, Plan, SyncPlan
from engine.specs import SyncSpec
from engine.state import DB, State, new_id, now

READ_CHUNK = 10_000
LINGER = 0.02       # seconds a group commit waits for more completed batches

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
                try:
                    _send(state, plan.plan_id, sp, destination, outcome, stop, progress, hold)
                except BaseException:
                    with contextlib.suppress(Exception):    # else the next writer folds them
                        state.fold_acks(sp.name)
                    raise
                state.fold_acks(sp.name)
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
class _Sent:
    """A batch and the runner's bookkeeping for it: plan-row numbers and data points, by position."""

    batch: Batch
    seqs: Sequence[int]
    points: Sequence[int]


def _batches(con: Any, plan_id: str, sp: SyncPlan, channel: str, destination: Destination,
             hold: _Hold | None, outcome: SyncOutcome) -> Iterator[_Sent]:
    """Stored payloads of one channel, in seq order, a window of plan rows at a time, cut into
    requests of `batch_limits` objects (a window's last, partial request is completed from the
    next window). A request over the byte budget is split by the destination; held-back rows are
    counted and left out."""
    limit, budget = destination.batch_limits(channel)
    where = f"plan_id = ? AND sync = ? AND status = '{SEND}' AND channel = ?"
    params: list[Any] = [plan_id, sp.name, channel]
    if hold is not None:
        held = f"coalesce(json_extract_string(new_row, {json_path(hold.column)}) IN (SELECT unnest(?)), false)"
        row = con.execute(f"SELECT count(*) FROM {DB}.plan_rows WHERE {where} AND {held}",
                          [*params, sorted(hold.ids)]).fetchone()
        outcome.held_back += int(row[0]) if row else 0       # stay pending: the next plan sends them again
        where += f" AND NOT {held}"
        params.append(sorted(hold.ids))
    keys: list[str] = []
    items: list[str] = []
    seqs: list[int] = []
    points: list[int] = []
    sizes: list[int] = []
    for start in range(sp.seq_min, sp.seq_max + 1, READ_CHUNK):
        rows = con.execute(
            f"SELECT key, item, seq, data_points, strlen(item) + 1 FROM {DB}.plan_rows "
            f"WHERE seq >= ? AND seq < ? AND {where} ORDER BY seq", [start, start + READ_CHUNK, *params]).fetchall()
        if not rows:
            continue
        k, it, sq, pt, sz = zip(*rows, strict=True)
        keys.extend(k)
        items.extend(it)
        seqs.extend(sq)
        points.extend(pt)
        sizes.extend(sz)
        full = len(keys) - len(keys) % limit
        for i in range(0, full, limit):
            yield from _fit(channel, keys[i:i + limit], seqs[i:i + limit], items[i:i + limit],
                            points[i:i + limit], sum(sizes[i:i + limit]), budget, destination)
        del keys[:full], items[:full], seqs[:full], points[:full], sizes[:full]
    if keys:
        yield from _fit(channel, keys, seqs, items, points, sum(sizes), budget, destination)


def _fit(channel: str, keys: list[str], seqs: list[int], items: list[str], points: list[int], size: int,
         budget: int, destination: Destination) -> Iterator[_Sent]:
    if size <= budget:
        yield _Sent(Batch(channel, tuple(keys), tuple(items)), seqs, points)
        return
    at = 0
    for batch in destination.batches(channel, zip(keys, items, strict=True)):
        n = len(batch.keys)
        yield _Sent(batch, seqs[at:at + n], points[at:at + n])
        at += n


class _Checkpointer(threading.Thread):
    """Owns the state connection during a send: takes completed batches as they finish and records
    them in group commits, so that sending never waits for the disk. A group is what arrives within
    LINGER seconds of its first batch: a commit costs milliseconds of CPU whatever its size. A batch
    holds a slot from submit until its outcome is committed; there are 2 x `concurrency` slots: at
    most `concurrency` batches in flight (the worker threads) plus `concurrency`
    acknowledged-but-unrecorded (the duplicate bound)."""

    def __init__(self, state: State, plan_id: str, sync: str, outcome: SyncOutcome, concurrency: int,
                 progress: ApplyProgress | None, total: int) -> None:
        super().__init__(name="reflow-checkpoint", daemon=True)
        self.state, self.plan_id, self.sync, self.outcome = state, plan_id, sync, outcome
        self.slots = threading.BoundedSemaphore(2 * concurrency)
        self.queue: queue.SimpleQueue[tuple[_Sent, Sequence[RowResult]] | None] = queue.SimpleQueue()
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

    def finished(self, sent: _Sent, fut: Future[Sequence[RowResult]]) -> None:
        keys = sent.batch.keys
        try:
            results: Sequence[RowResult] = fut.result()
            if len(results) != len(keys):
                raise RuntimeError(f"destination returned {len(results)} results for {len(keys)} rows")
        except DestinationError as exc:
            self.fatal = self.fatal or exc
            results = [RowResult(k, NOT_ATTEMPTED, exc.message) for k in keys]
        except BaseException as exc:  # noqa: BLE001 - recorded as not attempted, raised after the send
            self.failure = self.failure or exc
            results = [RowResult(k, NOT_ATTEMPTED, f"unexpected error: {exc!r}") for k in keys]
        self.queue.put((sent, results))

    def run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            group = [first]
            end = False
            time.sleep(LINGER)          # let the group fill without waking up for every batch
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
                _checkpoint(self.state, self.plan_id, self.sync, self.outcome, group)
            except BaseException as exc:  # noqa: BLE001 - e.g. a full disk: stop sending, report it
                self.failure = self.failure or exc
            for _ in group:
                self.slots.release()
            self.done += sum(len(s.batch.keys) for s, _ in group)
            if self.progress:
                self.progress(self.sync, self.done, self.total, self.outcome.requests)
            if end:
                return


def _send(state: State, plan_id: str, sp: SyncPlan, destination: Destination, outcome: SyncOutcome,
          stop: threading.Event, progress: ApplyProgress | None, hold: _Hold | None = None) -> None:
    concurrency = max(1, destination.capabilities.default_concurrency)
    # the snapshot is about to move: any plan made before this send is stale from now on
    state.con.execute(f"UPDATE {DB}.syncs SET version = version + 1, updated_at = ? WHERE name = ?", [now(), sp.name])
    reader = state.con.cursor()
    writer = _Checkpointer(state, plan_id, sp.name, outcome, concurrency, progress, sp.counts.to_send)
    writer.start()
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reflow-send") as pool:
            channels = [r[0] for r in reader.execute(
                f"SELECT DISTINCT channel FROM {DB}.plan_rows WHERE plan_id = ? AND sync = ? AND status = '{SEND}' "
                "ORDER BY channel", [plan_id, sp.name]).fetchall()]
            for channel in channels:
                for sent in _batches(reader, plan_id, sp, channel, destination, hold, outcome):
                    if not writer.wait_for_slot(stop):
                        break
                    fut = pool.submit(destination.send, sent.batch)
                    fut.add_done_callback(functools.partial(writer.finished, sent))
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


def _checkpoint(state: State, plan_id: str, sync: str, outcome: SyncOutcome,
                completed: list[tuple[_Sent, Sequence[RowResult]]]) -> None:
    """One transaction: record outcomes; the acknowledged rows go to `acks` as plan-row numbers
    (`State.fold_acks` advances the snapshot from them), rejected rows to `pending` and `row_errors`."""
    acked: list[int] = []
    rejected: list[tuple[str, str, str]] = []
    not_attempted = 0
    data_points = 0
    for sent, results in completed:
        if isinstance(results, AllAcknowledged):
            outcome.requests += 1
            acked.extend(sent.seqs)
            data_points += sum(sent.points)
            continue
        if any(r.outcome != NOT_ATTEMPTED for r in results):
            outcome.requests += 1
        for i, r in enumerate(results):
            if r.outcome == ACKNOWLEDGED:
                acked.append(sent.seqs[i])
                data_points += sent.points[i]
            elif r.outcome == REJECTED:
                rejected.append((sent.batch.keys[i], r.reason or "rejected", sent.batch.items[i]))
            else:
                not_attempted += 1
    con = state.con
    run = outcome.run_id
    con.execute("BEGIN")
    if acked:
        con.execute(f"INSERT INTO {DB}.acks SELECT ?, ?, unnest(?)", [plan_id, sync, acked])
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
