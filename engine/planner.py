"""Building plans (no network): render → run the model → diff → payloads → saved plan."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine import diff
from engine.destinations.base import Destination, Invalid, Item, PlanRow, Skip
from engine.errors import PlanError
from engine.plan import BASELINE, INVALID, REHASH, SEND, SKIP, Counts, FieldStat, GuardResult, Plan, SyncPlan
from engine.project import Project
from engine.specs import SyncSpec
from engine.state import DB, State, new_id, now
from engine.warehouse.base import Warehouse

DestinationFor = Callable[[SyncSpec], Destination]
Progress = Callable[[str, int, int], None]

SAMPLES_PER_OP = 3
SAMPLES_PER_FIELD = 3
INVALID_SAMPLES = 20
WRITE_CHUNK = 5000


@dataclass(frozen=True)
class RenderedSync:
    sync: SyncSpec
    sql: str


def fingerprint(project: Project, sync: SyncSpec, sql: str) -> str:
    conn = project.connections.get(sync.destination.connection)
    settings = {k: v for k, v in (vars(conn).items() if conn else []) if k not in ("api_key_template",)}
    blob = json.dumps({"spec": sync.raw, "sql": sql, "connection": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_sync(project: Project, sync: SyncSpec, warehouse: Warehouse) -> RenderedSync:
    from engine.render import render_model

    model = render_model(project, sync.model, relation_for=warehouse.relation_for,
                         source_for=warehouse.source_for)
    return RenderedSync(sync, model.sql)


def build_plan(project: Project, syncs: Sequence[SyncSpec], state: State, warehouse: Warehouse,
               destination_for: DestinationFor, *, progress: Progress | None = None) -> Plan:
    plan_id = new_id("plan")
    created = now()
    rendered = [render_sync(project, s, warehouse) for s in syncs]
    results = []
    for r in rendered:
        results.append(_plan_one(project, r, state, warehouse, destination_for(r.sync), plan_id, progress))
    plan = Plan(plan_id=plan_id, created_at=created, syncs=tuple(results))
    con = state.con
    con.execute("BEGIN")
    con.execute(f"UPDATE {DB}.plans SET status = 'superseded' WHERE status = 'planned'")
    con.execute(f"INSERT INTO {DB}.plans VALUES (?, ?, 'planned', ?, NULL)", [plan_id, created, "reflow"])
    for s in results:
        con.execute(
            f"INSERT INTO {DB}.plan_syncs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [plan_id, s.name, s.snapshot_version, s.fingerprint, s.counts_json(),
             json.dumps({"requests": s.requests, "data_points": s.data_points, "seconds": s.seconds}),
             json.dumps([g.__dict__ for g in s.guards]),
             json.dumps([[f.field, f.rows, f.nulled, [list(x) for x in f.samples]] for f in s.fields], default=str),
             s.info_json(), s.seq_min, s.seq_max],
        )
    con.execute("COMMIT")
    state.prune_plans()
    return plan


@dataclass
class _Acc:
    """Running tallies while streaming one sync's delta."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    retry: int = 0
    invalid: int = 0
    not_sent: int = 0
    baseline: int = 0
    rehash: int = 0
    fields: dict[str, list[Any]] = field(default_factory=dict)     # field -> [rows, nulled, samples]
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    invalid_samples: list[tuple[str, str]] = field(default_factory=list)
    channels: dict[str, list[int]] = field(default_factory=dict)    # channel -> [items, data points]


def _plan_one(project: Project, rendered: RenderedSync, state: State, warehouse: Warehouse,
              destination: Destination, plan_id: str, progress: Progress | None) -> SyncPlan:
    sync = rendered.sync
    con = state.con
    relation = warehouse.relation(con, rendered.sql, model=sync.model)
    columns = diff.describe(con, relation, model=sync.model)
    names = {c.name for c in columns}
    missing = [k for k in sync.primary_key if k not in names]
    if missing:
        loc = sync.where("primary_key")
        raise PlanError(f"{loc.file}:{loc.line}:{loc.col}: primary_key: column(s) {', '.join(missing)} not "
                        f"returned by model '{sync.model}' (it returns {', '.join(sorted(names))})")
    total = diff.check_keys(con, relation, sync.primary_key, sync=sync.name)

    st = state.ensure_sync(sync.name)
    if st.columns and state.rehash_if_needed(sync.name, diff.rehash_expr(st.columns)):
        st = state.ensure_sync(sync.name)
    snapshot_rows = state.snapshot_rows(sync.name)
    first_run = st.version == 0 and snapshot_rows == 0
    baseline = first_run and sync.first_run == "baseline"
    caps = destination.capabilities
    counts = diff.compute_delta(con, relation, columns, sync.primary_key, st.table, total=total,
                                include_removed=not caps.append_only)
    n = diff.prepare_rows(con, columns, st.table)
    pending = state.pending_keys(sync.name)

    acc = _Acc()
    seq = state.next_seq()
    seq_min = seq
    done = 0
    if baseline:
        # first_run: baseline records every row as sent without building payloads: all in SQL
        seq = diff.write_baseline(con, f"{DB}.plan_rows", plan_id, sync.name, seq, BASELINE)
        acc.added = acc.baseline = acc.not_sent = n
        n = 0
    for chunk in diff.stream_rows(con, n):
        out: list[tuple[Any, ...]] = []
        for row in chunk:
            status, changed, item, reason = _classify(row, destination, acc, pending)
            out.append((plan_id, sync.name, seq, row.key, row.op, status, row.key in pending and status != INVALID,
                        list(changed), row.new_hash, row.new_row_json, row.old_row_json,
                        item.channel if item else None, item.item_json if item else None,
                        item.data_points if item else 0, reason))
            seq += 1
        _write_rows(con, out)
        done += len(chunk)
        if progress:
            progress(sync.name, done, n)
    diff.drop_scratch(con)
    state.set_columns(sync.name, [(c.name, c.type) for c in columns])

    estimate = destination.estimate({ch: (v[0], v[1]) for ch, v in acc.channels.items()})
    unchanged = total - (counts.added + counts.candidates - acc.rehash)
    result_counts = Counts(total=total, added=acc.added, changed=acc.changed, removed=acc.removed,
                           unchanged=unchanged, retry=acc.retry, invalid=acc.invalid,
                           not_sent=acc.not_sent, baseline=acc.baseline)
    guards = evaluate_guards(sync, result_counts, snapshot_rows, estimate.data_points, caps.append_only)
    fields = tuple(
        FieldStat(f, v[0], v[1], tuple(v[2])) for f, v in sorted(acc.fields.items(), key=lambda kv: -kv[1][0])
    )
    notes = []
    if baseline:
        notes.append("first run with first_run: baseline: rows are recorded as sent, nothing is sent")
    if caps.append_only and acc.changed:
        notes.append(f"{acc.changed} already-sent row(s) changed; {sync.destination.object} are append-only, "
                     "changes are reported, not re-sent")
    return SyncPlan(
        name=sync.name, model=sync.model, object=sync.destination.object,
        connection=sync.destination.connection, counts=result_counts,
        requests=dict(estimate.requests), data_points=estimate.data_points, seconds=estimate.seconds,
        guards=guards, fields=fields, samples=acc.samples, invalid_samples=tuple(acc.invalid_samples),
        snapshot_version=st.version, snapshot_rows=snapshot_rows,
        fingerprint=fingerprint(project, sync, rendered.sql), seq_min=seq_min, seq_max=seq - 1,
        first_run=first_run, notes=tuple(notes),
    )


def _classify(row: diff.DeltaRow, destination: Destination, acc: _Acc,
              pending: set[str]) -> tuple[str, tuple[str, ...], Item | None, str | None]:
    new, old = row.new_row or {}, row.old_row or {}
    changed: tuple[str, ...] = ()
    if row.op == "changed":
        changed = diff.changed_fields(new, old)
        if not changed:
            acc.rehash += 1
            return REHASH, (), None, None
    retry = row.key in pending
    values = old if row.op == "removed" else new
    result = destination.prepare(PlanRow(key=row.key, op=row.op, values=values,
                                         old_values=old if row.op == "changed" else None, changed=changed))
    if isinstance(result, Invalid):
        acc.invalid += 1
        if len(acc.invalid_samples) < INVALID_SAMPLES:
            acc.invalid_samples.append((row.key, result.reason))
        return INVALID, changed, None, result.reason
    if retry:
        acc.retry += 1
    else:
        setattr(acc, row.op, getattr(acc, row.op) + 1)
    for f in changed:
        stat = acc.fields.setdefault(f, [0, 0, []])
        stat[0] += 1
        if new.get(f) is None:
            stat[1] += 1
        if len(stat[2]) < SAMPLES_PER_FIELD:
            stat[2].append((row.key, old.get(f), new.get(f)))
    if isinstance(result, Skip):
        acc.not_sent += 1
        _sample(acc, row, changed, None, result.reason)
        return SKIP, changed, None, result.reason
    assert isinstance(result, Item)
    ch = acc.channels.setdefault(result.channel, [0, 0])
    ch[0] += 1
    ch[1] += result.data_points
    _sample(acc, row, changed, result, None)
    return SEND, changed, result, None


def _sample(acc: _Acc, row: diff.DeltaRow, changed: tuple[str, ...], item: Item | None, note: str | None) -> None:
    bucket = acc.samples.setdefault(row.op, [])
    if len(bucket) >= SAMPLES_PER_OP:
        return
    new, old = row.new_row or {}, row.old_row or {}
    if row.op == "changed":
        values = {f: {"old": old.get(f), "new": new.get(f)} for f in changed}
    else:
        values = dict(new if row.op == "added" else old)
    bucket.append({"key": row.key, "values": values, "payload": json.loads(item.item_json) if item else None,
                   "note": note})


def _write_rows(con: Any, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    cols = list(zip(*rows, strict=True))
    placeholders = ", ".join("unnest(?)" for _ in cols)
    con.execute(f"INSERT INTO {DB}.plan_rows SELECT {placeholders}", [list(c) for c in cols])


def evaluate_guards(sync: SyncSpec, counts: Counts, snapshot_rows: int, data_points: int,
                    append_only: bool) -> tuple[GuardResult, ...]:
    g = sync.guards
    removed = 0 if append_only else counts.removed
    changed = counts.changed
    results = []

    def check(name: str, limit: float | None, actual: float) -> None:
        if limit is not None:
            results.append(GuardResult(name, float(limit), float(actual), actual > limit))

    check("max_added", g.max_added, counts.added)
    check("max_changed", g.max_changed, changed)
    check("max_removed", g.max_removed, removed)
    if snapshot_rows:
        check("max_changed_pct", g.max_changed_pct, round(100.0 * changed / snapshot_rows, 2))
        check("max_removed_pct", g.max_removed_pct, round(100.0 * removed / snapshot_rows, 2))
    check("max_data_points", g.max_data_points, data_points)
    return tuple(results)


# ------------------------------------------------------------------------------------------ loading


def load_plan(state: State, plan_id: str | None = None) -> Plan:
    if state.empty:
        raise PlanError("no plan found; run `reflow plan` first")
    plan_id = plan_id or state.latest_plan_id()
    if plan_id is None:
        raise PlanError("no plan found; run `reflow plan` first")
    head = state.con.execute(f"SELECT plan_id, created_at, status FROM {DB}.plans WHERE plan_id = ?",
                             [plan_id]).fetchone()
    if head is None:
        raise PlanError(f"unknown plan '{plan_id}'; `reflow history` lists recent plans")
    rows = state.con.execute(
        f"SELECT sync, snapshot_version, fingerprint, counts, estimate, guards, fields, info, seq_min, seq_max "
        f"FROM {DB}.plan_syncs WHERE plan_id = ? ORDER BY rowid", [plan_id]).fetchall()
    syncs = []
    for r in rows:
        est, info = json.loads(r[4]), json.loads(r[7])
        syncs.append(SyncPlan(
            name=r[0], model=info["model"], object=info["object"], connection=info["connection"],
            counts=Counts(**json.loads(r[3])), requests=est["requests"], data_points=est["data_points"],
            seconds=est["seconds"], guards=tuple(GuardResult(**g) for g in json.loads(r[5])),
            fields=tuple(FieldStat(f[0], f[1], f[2], tuple(tuple(x) for x in f[3])) for f in json.loads(r[6])),
            samples=info["samples"], invalid_samples=tuple(tuple(x) for x in info["invalid_samples"]),
            snapshot_version=r[1], snapshot_rows=info["snapshot_rows"], fingerprint=r[2],
            seq_min=r[8], seq_max=r[9], first_run=info["first_run"], notes=tuple(info["notes"]),
        ))
    created = head[1] if isinstance(head[1], datetime) else datetime.fromisoformat(str(head[1]))
    return Plan(plan_id=head[0], created_at=created, syncs=tuple(syncs), status=head[2])
