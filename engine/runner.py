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
import logging
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
    UNKNOWN,
    WAITING,
    AllAcknowledged,
    Batch,
    Destination,
    RowResult,
)
from engine.errors import (
    DestinationError,
    GuardError,
    Interrupted,
    PlanError,
    ReflowError,
    RemoteStateError,
    StateError,
    StateGoneError,
    scrub,
)
from engine.locations import MirrorKeeper
from engine.plan import UNKNOWN_REASON, UNRECORDED_REASON, GuardResult, Plan, PlanStatus, RunStatus, SyncPlan
from engine.specs import SyncSpec
from engine.state import State, new_id
from engine.state.plan_rows import SyncRows
from engine.state.runs import (
    Outcomes,
    bump_version,
    move_frontier,
    record_local,
    record_outcomes,
)

READ_CHUNK = 10_000
FRONTIER_STEP = 1_000   # plan rows the crash frontier moves ahead of the batches sent (see _batches)
LINGER = 0.02       # seconds a group commit waits for more completed batches

# exit codes, most serious first: a sync failed, a guard blocked one, rows were left undelivered
OK = 0
FATAL = 1
BLOCKED = GuardError.exit_code
UNDELIVERED = 3


@dataclass
class SyncOutcome:
    name: str
    run_id: str
    acknowledged: int = 0
    rejected: int = 0
    not_attempted: int = 0
    unknown: int = 0            # sent without a usable answer: planned again in full
    waiting: int = 0            # held back until their user's profile exists (missing_users: wait)
    skipped: int = 0
    invalid: int = 0
    requests: int = 0
    data_points: int = 0
    seconds: float = 0.0
    error: str | None = None
    blocked: str | None = None  # a guard blocked this sync: nothing was sent
    dropped: int = 0            # rows sent without a field Braze would refuse (`reflow errors` lists them)
    noted: int = 0              # rows sent with a note (e.g. unchecked after waiting for a profile)
    unrecorded: int = 0         # rows sent whose outcome the state could not record (a full disk): sent again
    reasons: dict[str, int] = field(default_factory=dict)   # why rows were left pending, with counts

    @property
    def pending(self) -> int:
        return self.rejected + self.not_attempted + self.unknown + self.invalid + self.waiting

    @property
    def undelivered(self) -> int:
        """Pending rows that should have gone and did not (rows waiting for a profile are as configured)."""
        return self.pending - self.waiting

    @property
    def reason(self) -> str | None:
        """The most frequent reason rows were not delivered (e.g. the network failure), if any."""
        if not self.reasons:
            return None
        text, count = max(self.reasons.items(), key=lambda kv: kv[1])
        return f"{text} ({count} row{'s' if count != 1 else ''})"


@dataclass
class ApplyResult:
    plan_id: str
    syncs: list[SyncOutcome] = field(default_factory=list)
    interrupted: bool = False
    failed: list[tuple[str, str]] = field(default_factory=list)     # syncs the plan could not plan

    @property
    def exit_code(self) -> int:
        """The most serious outcome: interrupted, a sync failed, a guard blocked one, rows left pending."""
        if self.interrupted:
            return Interrupted.exit_code
        if self.failed or any(s.error for s in self.syncs):
            return FATAL
        if any(s.blocked for s in self.syncs):
            return BLOCKED
        if any(s.undelivered or s.dropped for s in self.syncs):
            return UNDELIVERED
        return OK


ApplyProgress = Callable[[str, int, int, int], None]     # sync, rows done, rows total, requests


def check_plan(state: State, plan: Plan, current: dict[str, str]) -> None:
    """Refuse a plan that is applied, superseded or stale (the snapshot, the spec, the model's definition
    or the destination moved since it was made): `current` is each sync's fingerprint now."""
    if plan.status == PlanStatus.APPLIED:
        raise PlanError(f"plan {plan.plan_id} was already applied; run `reflow plan` again")
    if plan.status == PlanStatus.APPLYING:
        raise PlanError(f"plan {plan.plan_id} was interrupted while applying; plan is stale, run `reflow plan` again")
    if plan.status == PlanStatus.SUPERSEDED:
        raise PlanError(f"plan {plan.plan_id} was superseded by a newer plan; plan is stale, run `reflow plan` again")
    for s in plan.syncs:
        st = state.sync(s.name)
        version = st.version if st else 0
        if not s.identity:
            raise PlanError(f"plan {plan.plan_id} was made by an older Reflow; run `reflow plan` again")
        if version != s.snapshot_version:
            raise PlanError(f"plan is stale, run `reflow plan` again (sync '{s.name}' was applied since "
                            f"the plan was made: snapshot version {version}, plan made at {s.snapshot_version})")
        if s.name not in current:
            raise PlanError(f"plan is stale, run `reflow plan` again (sync '{s.name}' no longer exists)")
        if current[s.name] != s.fingerprint:
            raise PlanError(f"plan is stale, run `reflow plan` again (the spec, the model or the destination of "
                            f"sync '{s.name}' changed since the plan was made)")


def ready_to_send(state: State, plan: Plan, current: dict[str, str], allow_guards: Sequence[str] = ()) -> None:
    """What `apply` and `run` both do before sending: refuse a stale plan (`check_plan`), then one a guard
    blocks (`require_unblocked`; the plan is marked `blocked`, and can be sent with the guard allowed)."""
    check_plan(state, plan, current)
    try:
        require_unblocked(plan, allow_guards)
    except GuardError:
        state.set_plan_status(plan.plan_id, PlanStatus.BLOCKED)
        raise


def blocked_syncs(plan: Plan, allow_guards: Sequence[str] = ()) -> dict[str, str]:
    """Syncs a guard blocks (unless allowed), each with the message that says why and how to proceed."""
    out: dict[str, str] = {}
    for s in plan.syncs:
        hit = [g for g in s.blocked if g.name not in allow_guards]
        if hit:
            out[s.name] = guard_message(hit)
    return out


def guard_message(guards: Sequence[GuardResult]) -> str:
    lines = "; ".join(g.describe() for g in guards)
    names = " ".join(sorted({f"--allow-guard {g.name}" for g in guards}))
    return f"{lines}; nothing was sent. Review it (`reflow show`), then pass {names} to send it"


def require_unblocked(plan: Plan, allow_guards: Sequence[str] = ()) -> None:
    """GuardError when a guard blocks every sync that has something to send (nothing could go out)."""
    blocked = blocked_syncs(plan, allow_guards)
    live = [s for s in plan.syncs if s.has_changes]
    if blocked and all(s.name in blocked for s in live):
        raise GuardError("guard blocked the plan: " + "; ".join(f"{name}: {why}" for name, why in blocked.items()))


def apply_plan(state: State, plan: Plan, specs: dict[str, SyncSpec],
               destination_for: Callable[[SyncSpec], Destination], *,
               stop: threading.Event | None = None, progress: ApplyProgress | None = None,
               allow_guards: Sequence[str] = (), mirrors: MirrorKeeper | None = None) -> ApplyResult:
    """Send a checked plan, sync by sync (profiles first, deletes last). A sync that a guard blocks is
    skipped, and one that fails stops only itself: the others go on. Rows that send nothing are
    recorded first, so a plan with nothing to send still brings the snapshot up to date. `mirrors` brings
    the warehouse mirror of a `diff: warehouse` sync up to date after its send (locations.MirrorKeeper)."""
    stop = stop or threading.Event()
    result = ApplyResult(plan.plan_id, failed=[(f.sync, f.message) for f in plan.failed])
    try:
        _apply_syncs(state, plan, specs, destination_for, result, stop, progress, allow_guards, mirrors)
        state.check_in_place()          # the last commits reached the file the next run opens
    except StateGoneError as exc:
        raise StateGoneError(f"{exc.message} while this apply ran: it stopped. {_unrecorded(result)}") from None
    return result


def _unrecorded(result: ApplyResult) -> str:
    """What Braze acknowledged in this apply, which the state path (no file, or another one) does not hold."""
    acked = [(o.name, o.acknowledged) for o in result.syncs if o.acknowledged]
    if not acked:
        return "Braze acknowledged no rows in this apply"
    total = sum(n for _, n in acked)
    each = ", ".join(f"{name} {n:,}" for name, n in acked)
    return (f"Braze acknowledged {total:,} row{'s' if total != 1 else ''} in this apply ({each}), which the state "
            "path no longer records")


def _apply_syncs(state: State, plan: Plan, specs: dict[str, SyncSpec],
                 destination_for: Callable[[SyncSpec], Destination], result: ApplyResult,
                 stop: threading.Event, progress: ApplyProgress | None, allow_guards: Sequence[str],
                 mirrors: MirrorKeeper | None = None) -> None:
    blocked = blocked_syncs(plan, allow_guards)
    state.set_plan_status(plan.plan_id, PlanStatus.APPLYING)
    for sp in sorted(plan.syncs, key=lambda s: s.apply_rank):
        if stop.is_set():
            result.interrupted = True
            break
        outcome = SyncOutcome(sp.name, new_id("run"))
        result.syncs.append(outcome)
        if sp.name in blocked:
            outcome.blocked = blocked[sp.name]
            continue
        if not sp.has_changes and not _local_rows(state, plan.plan_id, sp):
            continue
        state.check_in_place()
        _release_held(state, plan.plan_id, sp)
        state.start_run(outcome.run_id, plan.plan_id, sp.name)
        state.publish(counts=False)
        started = time.monotonic()
        try:
            destination = destination_for(specs[sp.name])
            try:
                mirrored = mirrors.begin(plan.plan_id, sp) if mirrors else None
                _record_local(state, plan.plan_id, sp, outcome)
                try:
                    _send(state, plan.plan_id, sp, destination, outcome, stop, progress)
                except BaseException:
                    with contextlib.suppress(Exception):    # else the next writer folds them
                        state.fold_acks(sp.name)
                    raise
                state.fold_acks(sp.name)
                if not outcome.pending and not stop.is_set():
                    state.set_columns(sp.name, sp.columns)   # every row now holds exactly these fields
                    mapped = {f for f, _ in sp.columns}
                    st = state.sync(sp.name)
                    if st is not None and mapped & set(st.forgotten):
                        state.set_forgotten(sp.name, [f for f in st.forgotten if f not in mapped])
                if mirrored is not None:
                    _update_mirror(mirrored, outcome)
            finally:
                destination.close()
        except (StateGoneError, RemoteStateError) as exc:   # recorded in the file this process has open
            state.finish_run(outcome.run_id, RunStatus.FAILED, exc.message)     # (rescued, or kept in the working copy)
            raise
        except DestinationError as exc:
            outcome.error = exc.message
        except ReflowError as exc:      # e.g. a bad connection setting of this sync only
            outcome.error = exc.message
        except Exception as exc:
            problem = state.write_problem(exc)
            if problem is None:
                raise
            # the state file cannot be written (a full disk): the apply stops here, saying what the next
            # run sends again; the run ends failed with that reason when the state takes a last small write
            message = f"{problem.message}. {_in_flight(sp, outcome)}"
            with contextlib.suppress(Exception):
                state.recover(status=RunStatus.FAILED, message=message, reason=UNRECORDED_REASON)
            raise StateError(message) from exc
        outcome.seconds = time.monotonic() - started
        if stop.is_set():
            result.interrupted = True
        status = RunStatus.FAILED if outcome.error else RunStatus.INTERRUPTED if stop.is_set() else (
            RunStatus.PARTIAL if outcome.undelivered else RunStatus.SUCCEEDED)
        state.finish_run(outcome.run_id, status, scrub_or_none(outcome.error or outcome.reason))
        state.publish()
    # a plan is applied once every sync in it went through; otherwise it can be applied again for the
    # syncs that did not start (one that did moved its snapshot: the plan is stale for it)
    done = not result.interrupted and not any(o.error or o.blocked for o in result.syncs)
    state.set_plan_status(plan.plan_id, PlanStatus.APPLIED if done else PlanStatus.INCOMPLETE)


def _release_held(state: State, plan_id: str, sp: SyncPlan) -> None:
    """A send_all first run's held rows written as plan rows (payloads rendered) before its run starts:
    the run's first upload (a remote state's) must hold every row it may send, or a runner killed before
    its next upload would leave rows sent that the next runner's recovery cannot find."""
    try:
        SyncRows.of(state.con, plan_id, sp).release_held()
    except Exception as exc:
        problem = state.write_problem(exc)
        if problem is None:
            raise
        raise StateError(f"{problem.message}. Sync '{sp.name}' stopped before sending anything: the next run "
                         "sends its rows") from exc


def _update_mirror(update: Callable[[], None], outcome: SyncOutcome) -> None:
    """The warehouse mirror follows the snapshot; when it cannot (a lost connection), the snapshot still
    holds every acknowledgement and the next plan rebuilds the mirror from it."""
    try:
        update()
    except ReflowError as exc:
        logging.getLogger("reflow").warning(
            "sync '%s': the warehouse mirror was not updated (%s); the snapshot holds every acknowledgement "
            "and the next plan rebuilds the mirror from it", outcome.name, exc.message)


def scrub_or_none(text: str | None) -> str | None:
    return scrub(text) if text is not None else None


def _in_flight(sp: SyncPlan, outcome: SyncOutcome) -> str:
    """What a sync stopped by an unwritable state file leaves to the next run: the rows sent whose outcome
    could not be recorded (the next run sends them again; events and purchases then reach Braze twice)."""
    n = outcome.unrecorded
    if not n:
        return (f"Sync '{sp.name}' stopped; every row it sent has its outcome recorded, so the next run sends "
                "none of them again")
    rows = f"{n:,} row{'s' if n != 1 else ''}"
    twice = (f"Braze receives these {n:,} {sp.object} twice" if sp.append_only
             else "Braze receives the same values again")
    return (f"Sync '{sp.name}' stopped with {rows} in flight: sent to Braze, but their outcome could not be "
            f"recorded. The next run sends them again ({twice})")


def _local_rows(state: State, plan_id: str, sp: SyncPlan) -> int:
    return SyncRows.of(state.con, plan_id, sp).recorded_locally()


def _record_local(state: State, plan_id: str, sp: SyncPlan, outcome: SyncOutcome) -> None:
    """Before sending: a sync whose destination changed starts over (its old snapshot is dropped), and
    rows that send nothing (skip, rehash, baseline) advance the snapshot without the network. Invalid
    rows are left pending with their reason."""
    st = state.ensure_sync(sp.name)
    if st.identity != sp.identity:
        if st.identity is not None:
            state.restart(sp.name, sp.identity)
        else:
            state.set_identity(sp.name, sp.identity)
        st = state.sync(sp.name) or st
    state.set_columns(sp.name, _union(st.columns, sp.columns))
    if sp.unmapped and sp.on_unmapped == "keep":      # Braze keeps their values: remembered, for a re-mapping
        state.set_forgotten(sp.name, sorted({*st.forgotten, *(f for f, _ in sp.unmapped)}))
    local = record_local(state, SyncRows.of(state.con, plan_id, sp), outcome.run_id,
                         append_only=sp.append_only)
    outcome.invalid = len(local.invalid)
    for _, reason in local.invalid:
        outcome.reasons[f"invalid: {reason}"] = outcome.reasons.get(f"invalid: {reason}", 0) + 1
    outcome.dropped, outcome.noted = local.dropped, local.noted
    outcome.skipped = local.recorded


def _union(old: Sequence[tuple[str, str]], new: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    names = {f for f, _ in new}
    return [*new, *[(f, t) for f, t in old if f not in names]]


@dataclass(frozen=True)
class _Sent:
    """A batch and the runner's bookkeeping for it: plan-row numbers and data points, by position."""

    batch: Batch
    seqs: Sequence[int]
    points: Sequence[int]


def _batches(con: Any, plan_id: str, sp: SyncPlan, channel: str, destination: Destination,
             outcome: SyncOutcome) -> Iterator[_Sent]:
    """Stored payloads of one channel, in seq order, a window of plan rows at a time, cut into
    requests of `batch_limits` objects (a window's last, partial request is completed from the
    next window). A request over the byte budget is split by the destination. Before a window's
    requests go out, the highest plan row they carry is recorded as the run's frontier: after a crash, rows up to it without a recorded outcome are
    uncertain (State.recover), the rows past it were certainly not sent."""
    limit, budget = destination.batch_limits(channel)
    table = SyncRows.of(con, plan_id, sp)
    keys: list[str] = []
    items: list[str] = []
    seqs: list[int] = []
    points: list[int] = []
    sizes: list[int] = []
    frontier = -1

    def recorded(sent_batches: Iterator[_Sent], window_end: int) -> Iterator[_Sent]:
        """Each batch, once the frontier covers it: the frontier moves FRONTIER_STEP plan rows ahead at a
        time (one small INSERT per step), so after a crash at most that many rows past what was really
        sent are taken for uncertain."""
        nonlocal frontier
        for sent in sent_batches:
            if sent.seqs[-1] > frontier:
                frontier = min(window_end, sent.seqs[-1] + FRONTIER_STEP)
                move_frontier(con, outcome.run_id, plan_id, sp.name, frontier)
            yield sent

    for start in range(sp.seq_min, sp.seq_max + 1, READ_CHUNK):
        rows = table.to_send(channel, start, start + READ_CHUNK)
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
            yield from recorded(_fit(channel, keys[i:i + limit], seqs[i:i + limit], items[i:i + limit],
                                     points[i:i + limit], sum(sizes[i:i + limit]), budget, destination), seqs[-1])
        del keys[:full], items[:full], seqs[:full], points[:full], sizes[:full]
    if keys:
        yield from recorded(_fit(channel, keys, seqs, items, points, sum(sizes), budget, destination), seqs[-1])


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
                 progress: ApplyProgress | None, total: int, append_only: bool = False) -> None:
        super().__init__(name="reflow-checkpoint", daemon=True)
        self.append_only = append_only
        self.state, self.plan_id, self.sync, self.outcome = state, plan_id, sync, outcome
        self.slots = threading.BoundedSemaphore(2 * concurrency)
        self.queue: queue.SimpleQueue[tuple[_Sent, Sequence[RowResult]] | None] = queue.SimpleQueue()
        self.fatal: DestinationError | None = None
        self.failure: BaseException | None = None
        self.progress, self.total, self.done = progress, total, 0
        self.unrecorded = 0     # rows sent whose outcome a failed commit did not record

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
        except RemoteStateError as exc:     # _send_held: the lock may be another run's now; not sent
            self.failure = self.failure or exc
            results = [RowResult(k, NOT_ATTEMPTED, exc.message) for k in keys]
        except BaseException as exc:  # noqa: BLE001 - the request may have gone out: recorded as unknown
            self.failure = self.failure or exc
            results = [RowResult(k, UNKNOWN, scrub(f"unexpected error: {exc!r}")) for k in keys]
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
                _checkpoint(self.state, self.plan_id, self.sync, self.outcome, group, append_only=self.append_only)
                # committed, but to the file a later run opens? (else stop: see State.check_in_place)
                self.state.check_in_place()
            except BaseException as exc:  # noqa: BLE001 - e.g. a full disk: stop sending, report it
                self.failure = self.failure or exc
                # sent, but the outcome is not recorded: the next run sends these rows again
                self.unrecorded += sum(r.outcome != NOT_ATTEMPTED for _, results in group for r in results)
            if self.failure is None:
                try:            # a remote state: uploaded at least every `upload_every` seconds of a send
                    self.state.upload(when_due=True)
                except BaseException as exc:  # noqa: BLE001 - refused or lost lock: stop sending, report it
                    self.failure = exc
            for _ in group:
                self.slots.release()
            self.done += sum(len(s.batch.keys) for s, _ in group)
            if self.progress:
                self.progress(self.sync, self.done, self.total, self.outcome.requests)
            self.state.publish({"sync": self.sync, "done": self.done, "total": self.total,
                                "requests": self.outcome.requests}, counts=False, when_due=True)
            if end:
                return


def _send(state: State, plan_id: str, sp: SyncPlan, destination: Destination, outcome: SyncOutcome,
          stop: threading.Event, progress: ApplyProgress | None) -> None:
    concurrency = max(1, destination.capabilities.default_concurrency)
    # the snapshot is about to move: any plan made before this send is stale from now on
    bump_version(state.con, sp.name)
    reader = state.con.cursor()
    writer = _Checkpointer(state, plan_id, sp.name, outcome, concurrency, progress, sp.counts.to_send,
                           append_only=sp.append_only)
    writer.start()
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="reflow-send") as pool:
            channels = SyncRows.of(reader, plan_id, sp).channels()
            for channel in channels:
                for sent in _batches(reader, plan_id, sp, channel, destination, outcome):
                    if not writer.wait_for_slot(stop):
                        break
                    fut = pool.submit(_send_held, state, destination, sent.batch)
                    fut.add_done_callback(functools.partial(writer.finished, sent))
                if writer.stopping(stop):
                    break
    finally:
        writer.queue.put(None)
        writer.join()
        reader.close()
        outcome.unrecorded += writer.unrecorded
    if writer.failure:
        raise writer.failure
    if writer.fatal:
        raise writer.fatal


def _send_held(state: State, destination: Destination, batch: Batch) -> Sequence[RowResult]:
    """Send one request, unless a remote state's lock may have been taken over since the batch was queued
    (this process froze past the lock's expiry): then RemoteStateError, and the batch is not sent."""
    state.check_lock()
    return destination.send(batch)


def _checkpoint(state: State, plan_id: str, sync: str, outcome: SyncOutcome,
                completed: list[tuple[_Sent, Sequence[RowResult]]], *, append_only: bool = False) -> None:
    """Record the outcomes of a group of requests (one transaction, `state.runs.record_outcomes`).
    Acknowledged rows go to `acks` as plan-row numbers (`State.fold_acks` advances the snapshot from
    them); rejected rows to `pending` and `row_errors`; rows sent without a usable answer to `uncertain`
    (their fields become UNKNOWN: planned again in full; append-only rows are simply sent again) and,
    like rows not sent at all, to `pending` with the reason."""
    found = Outcomes()
    not_attempted = unknown = waiting = 0
    for sent, results in completed:
        if isinstance(results, AllAcknowledged):
            outcome.requests += 1
            found.acked.extend(sent.seqs)
            found.data_points += sum(sent.points)
            continue
        if any(r.outcome not in (NOT_ATTEMPTED, WAITING) for r in results):
            outcome.requests += 1
        for i, r in enumerate(results):
            key, item = sent.batch.keys[i], sent.batch.items[i]
            if r.outcome == ACKNOWLEDGED:
                found.acked.append(sent.seqs[i])
                found.data_points += sent.points[i]
                if r.reason:            # acknowledged with a note Braze's answer calls for (`reflow errors`)
                    found.notes.append((key, scrub(r.reason), item))
            elif r.outcome == REJECTED:       # reasons are scrubbed: an answer may echo a value
                found.rejected.append((key, scrub(r.reason or "rejected"), item))
            elif r.outcome == UNKNOWN:
                unknown += 1
                if not append_only:
                    found.uncertain.append(sent.seqs[i])
                found.left.append((key, scrub(f"{UNKNOWN_REASON}{r.reason or 'no usable answer'}")))
            elif r.outcome == WAITING:
                waiting += 1
                found.held.append((key, scrub(r.reason or "waiting")))
            else:
                not_attempted += 1
                found.left.append((key, scrub(f"not sent: {r.reason or 'not attempted'}")))
    found.not_attempted = not_attempted + unknown + waiting
    record_outcomes(state, plan_id, sync, outcome.run_id, found, outcome.requests)
    outcome.acknowledged += len(found.acked)
    outcome.rejected += len(found.rejected)
    outcome.not_attempted += not_attempted
    outcome.unknown += unknown
    outcome.waiting += waiting
    outcome.data_points += found.data_points
    for _, reason in (*found.left, *found.held):
        outcome.reasons[reason] = outcome.reasons.get(reason, 0) + 1
