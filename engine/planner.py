"""Building plans (no network): render → run the model → diff → payloads → saved plan."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine import diff
from engine.destinations.base import Destination, Invalid, PlanRow, Skip, SqlItems
from engine.diff import ROWS
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
    reserved = sorted(n for n in names if n.startswith("__"))
    if reserved:
        raise PlanError(f"model '{sync.model}' returns column(s) {', '.join(reserved)}: names starting with "
                        "'__' are reserved by Reflow; rename them in the model")

    st = state.ensure_sync(sync.name)
    state.invalidate_hashes_if_needed(sync.name)
    snapshot_rows = state.snapshot_rows(sync.name)
    first_run = st.version == 0 and snapshot_rows == 0
    baseline = first_run and sync.first_run == "baseline"
    caps = destination.capabilities
    counts = diff.compute_delta(con, relation, columns, sync.primary_key, st.table, sync=sync.name,
                                include_removed=not caps.append_only)
    n = diff.prepare_rows(con, columns, st.table, [c for c, _ in st.columns])
    seq_min = state.next_seq()
    rows = PlanRows(con, plan_id, sync.name, seq_min)
    if baseline:
        # first_run: baseline records every row as sent without building payloads: all in SQL
        diff.write_baseline(con, f"{DB}.plan_rows", plan_id, sync.name, seq_min, BASELINE)
    else:
        rows.write_sql(sync.name, n, getattr(destination, "sql_items", lambda cols: None)(columns))
        done = 0
        left = diff.mark_rows(con, rows.python_rows)      # rows that need the Python path, numbered once
        for chunk in diff.stream_rows(con, n if left else 0, where=diff.MARKED):
            rows.write_python(chunk, destination)
            done += len(chunk)
            if progress:
                progress(sync.name, done, left)
    diff.drop_scratch(con)
    state.set_columns(sync.name, [(c.name, c.type) for c in columns])
    return rows.summarise(project, rendered, destination, counts, st.version, snapshot_rows, first_run,
                          baseline, seq_min + n - 1)


class PlanRows:
    """Writes one sync's plan rows (SQL fast path first, then Python for the rest) and summarises
    them with SQL, so a plan of millions of rows never sits in Python."""

    def __init__(self, con: Any, plan_id: str, sync: str, seq_min: int) -> None:
        self.con = con
        self.plan_id = plan_id
        self.sync = sync
        self.seq_min = seq_min
        self.python_rows = "true"

    def _pending(self) -> str:
        return f"(SELECT key FROM {DB}.pending WHERE sync = {diff.sql_str(self.sync)})"

    def write_sql(self, sync: str, n: int, fast: SqlItems | None) -> None:
        """Rows whose hash moved but no value did are recorded only; a destination's SQL payloads
        cover the rows it can prove valid; everything else goes through prepare() in Python."""
        base = (f"SELECT ?, ?, ? + r.__rn - 1, r.__key, r.__op, {{status}}, r.__key IN {self._pending()}, "
                f"r.__changed, r.__hash, r.__new_row, r.__old_kept, {{channel}}, {{item}}, {{points}}, {{reason}} "
                f"FROM {ROWS} AS r WHERE {{where}}")
        params = [self.plan_id, sync, self.seq_min]
        rehash = "r.__op = 'changed' AND len(r.__changed) = 0"
        self.con.execute(f"INSERT INTO {DB}.plan_rows " + base.format(
            status=f"'{REHASH}'", channel="NULL", item="NULL", points="0", reason="NULL", where=rehash), params)
        if fast is not None:
            self.con.execute(f"INSERT INTO {DB}.plan_rows " + base.format(
                status=f"'{SEND}'", channel=diff.sql_str(fast.channel), item=f"({fast.item})",
                points=f"({fast.data_points})", reason="NULL", where=f"NOT ({rehash}) AND ({fast.eligible})"),
                params)
        # the rest: delta rows not written yet (an anti-join, cheaper than evaluating `eligible` again)
        self.python_rows = (f"r.__rn NOT IN (SELECT seq - {int(self.seq_min)} + 1 FROM {DB}.plan_rows "
                            f"WHERE plan_id = {diff.sql_str(self.plan_id)} AND sync = {diff.sql_str(sync)} "
                            f"AND seq >= {int(self.seq_min)})")

    def write_python(self, chunk: list[diff.DeltaRow], destination: Destination) -> None:
        pending = self._pending_keys(chunk)
        out: list[tuple[Any, ...]] = []
        for row in chunk:
            old = row.old_row or {}
            values = old if row.op == "removed" else (row.new_row or {})
            result = destination.prepare(PlanRow(key=row.key, op=row.op, values=values,
                                                 old_values=old if row.op == "changed" else None,
                                                 changed=row.changed))
            if isinstance(result, Invalid):
                status, item, reason = INVALID, None, result.reason
            elif isinstance(result, Skip):
                status, item, reason = SKIP, None, result.reason
            else:
                status, item, reason = SEND, result, None
            out.append((self.plan_id, self.sync, self.seq_min + row.rn - 1, row.key, row.op, status,
                        row.key in pending, list(row.changed), row.new_hash, row.new_row_json,
                        _old_kept(row), item.channel if item else None, item.item_json if item else None,
                        item.data_points if item else 0, reason))
        _write_rows(self.con, out)

    def _pending_keys(self, chunk: list[diff.DeltaRow]) -> set[str]:
        keys = [r.key for r in chunk]
        found = self.con.execute(f"SELECT key FROM {DB}.pending WHERE sync = ? AND key IN (SELECT unnest(?))",
                                 [self.sync, keys]).fetchall()
        return {k for (k,) in found}

    def _where(self) -> tuple[str, list[Any]]:
        return "plan_id = ? AND sync = ? AND seq >= ?", [self.plan_id, self.sync, self.seq_min]

    def summarise(self, project: Project, rendered: RenderedSync, destination: Destination,
                  delta: diff.DeltaCounts, version: int, snapshot_rows: int, first_run: bool, baseline: bool,
                  seq_max: int) -> SyncPlan:
        sync = rendered.sync
        where, params = self._where()
        live = f"status NOT IN ('{INVALID}', '{REHASH}')"
        row = self.con.execute(
            f"""SELECT count(*) FILTER (WHERE op = 'added' AND NOT retry AND {live}),
                       count(*) FILTER (WHERE op = 'changed' AND NOT retry AND {live}),
                       count(*) FILTER (WHERE op = 'removed' AND NOT retry AND {live}),
                       count(*) FILTER (WHERE retry AND {live}),
                       count(*) FILTER (WHERE status = '{INVALID}'),
                       count(*) FILTER (WHERE status IN ('{SKIP}', '{BASELINE}')),
                       count(*) FILTER (WHERE status = '{BASELINE}'),
                       count(*) FILTER (WHERE status = '{REHASH}')
                FROM {DB}.plan_rows WHERE {where}""", params).fetchone() or (0,) * 8
        added, changed, removed, retry, invalid, not_sent, baselined, rehash = (int(x) for x in row)
        unchanged = delta.total - (delta.added + delta.candidates - rehash)
        counts = Counts(total=delta.total, added=added, changed=changed, removed=removed, unchanged=unchanged,
                        retry=retry, invalid=invalid, not_sent=not_sent, baseline=baselined)
        channels = self.con.execute(
            f"SELECT channel, count(*), coalesce(sum(data_points), 0) FROM {DB}.plan_rows "
            f"WHERE {where} AND status = '{SEND}' GROUP BY channel ORDER BY channel", params).fetchall()
        estimate = destination.estimate({ch: (int(c), int(dp)) for ch, c, dp in channels})
        caps = destination.capabilities
        guards = evaluate_guards(sync, counts, snapshot_rows, estimate.data_points, caps.append_only)
        notes = []
        if baseline:
            notes.append("first run with first_run: baseline: rows are recorded as sent, nothing is sent")
        if caps.append_only and changed:
            notes.append(f"{changed} already-sent row(s) changed; {sync.destination.object} are append-only, "
                         "changes are reported, not re-sent")
        invalid_samples = tuple((k, r) for k, r in self.con.execute(
            f"SELECT key, reason FROM {DB}.plan_rows WHERE {where} AND status = '{INVALID}' ORDER BY seq "
            f"LIMIT {INVALID_SAMPLES}", params).fetchall())
        return SyncPlan(
            name=sync.name, model=sync.model, object=sync.destination.object,
            connection=sync.destination.connection, counts=counts,
            requests=dict(estimate.requests), data_points=estimate.data_points, seconds=estimate.seconds,
            guards=guards, fields=self._fields(), samples=self._samples(), invalid_samples=invalid_samples,
            snapshot_version=version, snapshot_rows=snapshot_rows,
            fingerprint=fingerprint(project, sync, rendered.sql), seq_min=self.seq_min, seq_max=seq_max,
            first_run=first_run, notes=tuple(notes),
        )

    def _fields(self) -> tuple[FieldStat, ...]:
        """Per changed column: rows, how many became null, a few samples old → new (all in SQL)."""
        where, params = self._where()
        new = "json_extract(new_row, '$.' || to_json(f)::VARCHAR)"
        old = "json_extract(old_row, '$.' || to_json(f)::VARCHAR)"
        rows = self.con.execute(
            f"""WITH c AS (
                  SELECT unnest(changed) AS f, seq, key, new_row, old_row FROM {DB}.plan_rows
                  WHERE {where} AND op = 'changed' AND status IN ('{SEND}', '{SKIP}')),
                stats AS (SELECT f, count(*) AS n,
                                 count(*) FILTER (WHERE coalesce({new}::VARCHAR, 'null') = 'null') AS nulled
                          FROM c GROUP BY f),
                samples AS (SELECT f, list([key, {old}::VARCHAR, {new}::VARCHAR] ORDER BY seq) AS s
                            FROM (SELECT *, row_number() OVER (PARTITION BY f ORDER BY seq) AS i FROM c)
                            WHERE i <= {SAMPLES_PER_FIELD} GROUP BY f)
                SELECT stats.f, n, nulled, s FROM stats JOIN samples USING (f) ORDER BY n DESC, stats.f""",
            params).fetchall()
        return tuple(
            FieldStat(f, int(n), int(nulled), tuple((k, _loads(o), _loads(v)) for k, o, v in s))
            for f, n, nulled, s in rows)

    def _samples(self) -> dict[str, list[dict[str, Any]]]:
        where, params = self._where()
        rows = self.con.execute(
            f"""SELECT op, key, changed, new_row, old_row, item, reason FROM (
                  SELECT *, row_number() OVER (PARTITION BY op ORDER BY seq) AS i FROM {DB}.plan_rows
                  WHERE {where} AND status IN ('{SEND}', '{SKIP}'))
                WHERE i <= {SAMPLES_PER_OP} ORDER BY op, seq""", params).fetchall()
        samples: dict[str, list[dict[str, Any]]] = {}
        for op, key, changed, new_row, old_row, item, reason in rows:
            new, old = _loads(new_row) or {}, _loads(old_row) or {}
            if op == "changed":
                values = {f: {"old": old.get(f), "new": new.get(f)} for f in changed}
            else:
                values = dict(new if op == "added" else old)
            samples.setdefault(op, []).append(
                {"key": key, "values": values, "payload": _loads(item), "note": reason})
        return samples


def _old_kept(row: diff.DeltaRow) -> str | None:
    """What a plan keeps of the old row (see diff.prepare_rows): changed fields' old values, or all of a removed row."""
    if row.op == "changed":
        old = row.old_row or {}
        return json.dumps({f: old.get(f) for f in row.changed}, ensure_ascii=False, separators=(",", ":"))
    return row.old_row_json if row.op == "removed" else None


def _loads(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


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
