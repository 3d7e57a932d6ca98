"""Building plans (no network): render → run the model → project → diff → payloads → saved plan.

Each sync is planned on its own: one that fails (a missing column, bad keys, a SQL error) is listed
in the plan with its reason and the others are planned as usual.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from engine import diff, locations
from engine.destinations.base import (
    Destination,
    Invalid,
    Item,
    Op,
    PlanRow,
    Projection,
    Reason,
    Skip,
    SqlItems,
    is_time_type,
)
from engine.errors import PlanError, ReflowError, UserError, contains_secret, registered_secrets, scrub
from engine.plan import (
    BASELINE,
    DROPPED,
    INVALID,
    REHASH,
    SEND,
    SKIP,
    Counts,
    FieldStat,
    GuardResult,
    Plan,
    SyncFailure,
    SyncPlan,
    ValueWarning,
)
from engine.project import SECRET_FIELDS, Project
from engine.row_secrets import (
    SECRET_REASON,
    holding_secrets,
    scrubbed_json,
    secret_free_sql,
    secret_in_values,
)
from engine.specs import DiffLocation, SyncSpec, check_columns
from engine.sql import sql_str
from engine.state import UNKNOWN, State, new_id, now
from engine.state.plan_rows import BASELINE_REASON, HeldSends, PlanRowRecord, SyncRows, holds_unknown
from engine.state.plans import save_plan
from engine.warehouse.base import Warehouse

DestinationFor = Callable[[SyncSpec], Destination]
Progress = Callable[[str, int, int], None]

UNKNOWN_SHOWN = "(unknown: sent without an answer)"
SAMPLES_PER_OP = 3
SAMPLES_PER_FIELD = 3
INVALID_SAMPLES = 20


@dataclass(frozen=True)
class RenderedSync:
    sync: SyncSpec
    sql: str
    definition: str = ""       # the warehouse's account of the model's definition (dbt: node checksums)
    model_file: str = ""       # the model's file, relative to the project (for errors)

    @property
    def model(self) -> str:
        """The model as errors name it: `'braze_users' (models/braze_users.sql)`."""
        return diff.model_label(self.sync.model, self.model_file)


def fingerprint(project: Project, sync: SyncSpec, sql: str, definition: str = "",
                identity: Mapping[str, str] | None = None) -> str:
    """What determines a plan's rows besides the data: the spec, the rendered SQL, the model's definition
    in the warehouse (dbt nodes and their upstream nodes), the connection's settings, where the rows
    go, and the project's diff location when it is not the default (a plan's hashes follow its recipe).
    A plan whose fingerprint no longer matches is refused by `apply`."""
    conn = project.connections.get(sync.destination.connection)
    # secret settings stay out (a new key is no change to a plan, and no digest of a key is stored)
    settings = {k: v for k, v in (vars(conn).items() if conn else [])
                if k != "api_key_template" and k not in SECRET_FIELDS}
    parts: dict[str, Any] = {"spec": sync.raw, "sql": sql, "definition": definition, "connection": settings,
                             "identity": dict(identity or {})}
    if project.warehouse.diff != DiffLocation.LOCAL:
        parts["diff"] = project.warehouse.diff
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_sync(project: Project, sync: SyncSpec, warehouse: Warehouse) -> RenderedSync:
    model = warehouse.render(project, sync.model)
    return RenderedSync(sync, model.sql, warehouse.definition(project, sync), model.file)


def current_fingerprint(project: Project, sync: SyncSpec, warehouse: Warehouse, destination: Destination) -> str:
    """The fingerprint a plan of `sync` made now would carry (what `apply` compares with the plan's)."""
    rendered = render_sync(project, sync, warehouse)
    return fingerprint(project, sync, rendered.sql, rendered.definition, destination_identity(sync, destination))


def destination_identity(sync: SyncSpec, destination: Destination) -> dict[str, str]:
    """Where a sync's rows go, as recorded with its snapshot: the destination's identity and the key."""
    return {**dict(destination.identity()), "primary key": ", ".join(sync.primary_key)}


def build_plan(project: Project, syncs: Sequence[SyncSpec], state: State, warehouse: Warehouse,
               destination_for: DestinationFor, *, progress: Progress | None = None,
               project_syncs: Sequence[str] | None = None) -> Plan:
    """`project_syncs`: every sync name of the project (the selected ones are `syncs`); when given, a
    new sync whose destination is that of a sync the project no longer has is refused (a renamed file)."""
    plan_id = new_id("plan")
    created = now()
    results: list[SyncPlan] = []
    failed: list[SyncFailure] = []
    for sync in syncs:
        try:
            rendered = render_sync(project, sync, warehouse)
            results.append(_plan_one(project, rendered, state, warehouse, destination_for(sync), plan_id,
                                     progress, project_syncs))
        except ReflowError as exc:         # this sync's own failure: the others are planned as usual
            failed.append(SyncFailure(sync.name, exc.message, exc.exit_code))
    plan = Plan(plan_id=plan_id, created_at=created, syncs=tuple(results), failed=tuple(failed))
    save_plan(state, plan)
    return plan


def _plan_one(project: Project, rendered: RenderedSync, state: State, warehouse: Warehouse,
              destination: Destination, plan_id: str, progress: Progress | None,
              project_syncs: Sequence[str] | None = None) -> SyncPlan:
    sync = rendered.sync
    con = state.con
    read_before = (warehouse.cost.rows, warehouse.cost.bytes)
    model, location = read_model_at(con, rendered, warehouse, destination, project, preview=state.preview)
    relation, projection, fields = model.relation, model.projection, model.fields
    identity = destination_identity(sync, destination)

    if project_syncs is not None and state.sync(sync.name) is None:
        for old, rows_held in state.orphans_like(identity, project_syncs):
            raise PlanError(
                f"sync '{sync.name}' is new, but the state holds sync '{old}' ({rows_held:,} rows) with the same "
                f"destination, and the project no longer has it. If you renamed it, run `reflow state rename "
                f"{old} {sync.name}` to keep what Braze holds (else every row is sent again: events twice); "
                f"to start this sync over, run `reflow state forget {old}`")
    st = state.ensure_sync(sync.name)
    state.convert_legacy(sync.name, projection.fields, model.types, identity)   # a schema-2 snapshot, once
    state.invalidate_hashes_if_needed(sync.name, location.recipe)
    st = state.sync(sync.name) or st
    restart = describe_restart(st.identity, identity) if st.identity is not None else None
    before = st.identity or {}
    same_place = restart is not None and all(before.get(k) == identity.get(k) for k in destination.capabilities.place)
    snapshot_rows = state.snapshot_rows(sync.name)
    first_run = restart is not None or (st.version == 0 and snapshot_rows == 0)
    baseline = first_run and sync.first_run == "baseline"
    caps = destination.capabilities
    away = None if location.used == DiffLocation.LOCAL else locations.Away(
        con, warehouse, location, rendered.sql, sync, projection, fields, model.types, rendered.model,
        project.warehouse.mirror_schema)
    source = diff.projected(relation, projection.fields, sync.primary_key, projection.constants) if not away else ""
    names = set(projection.names)
    unmapped = [] if restart else [f for f, _ in st.columns if f not in names]
    on_unmapped = sync.destination.on_unmapped
    # fields mapped again after on_unmapped: keep: Braze may still hold what was sent back then, which the
    # snapshot forgot, so every row sends its value again (nulls too)
    remapped = [] if restart else [f for f in st.forgotten if f in names]
    unset = unmapped if on_unmapped == "unset" else []
    destination.check_unset(unset)
    group = destination.group_field
    # a first run's rows are held typed: a baseline's JSON rendered by `apply` as it records the snapshot,
    # a send_all's payloads by `apply` before it sends (by the destination's SQL, kept with the plan; the
    # rows that SQL cannot prove valid are planned in Python). Planned row by row instead: a restart in the
    # same place (its rows take objects over), the unset and remapped fields' cases; for a send_all, rows
    # already pending (retries) and a destination whose notes count groups of rows (cohorts). (A field whose
    # name holds a secret never gets here: _model_read refuses the sync.)
    plain = first_run and not unset and not remapped and not (same_place and projection.identity)
    fast = (destination.sql_items(fields, added_only=True) if plain and not baseline and group is None
            and not state.pending_count(sync.name) else None)
    hold = plain and (baseline or fast is not None)
    held: SyncRows | None = None
    with diff.Delta(con, sync=sync.name, model=rendered.model) as delta:
        snapshot = delta.empty_snapshot() if restart else st.table
        counted = source
        if hold:
            counted = locations.fetch_every_row(away, state, landed=False) if away else source
        elif away:
            counts, counted = locations.compare(delta, away, snapshot, ", ".join(sync.primary_key), state=state,
                                                include_removed=not caps.append_only, extras=[group] if group else [],
                                                empty=restart is not None or snapshot_rows == 0)
        else:
            counts = delta.compare(source, fields, ", ".join(sync.primary_key), snapshot,
                                   include_removed=not caps.append_only)
        for field, why in destination.group_constants.items():
            if group is None or field not in names:
                continue
            label = f"{projection.column_of(group)} with different {projection.column_of(field)} values"
            if away:
                locations.one_value_per_group(away, group, field, label=label, why=why)
            else:
                diff.check_one_value_per_group(con, source, group, field, sync=sync.name, label=label, why=why,
                                               model=rendered.model)
        keyed_by_identity = {projection.column_of(f) for f in projection.identity} == set(sync.primary_key)
        if projection.identity and not keyed_by_identity:
            if away:
                locations.shared_identity(away, projection.identity, caps.object_word)
            else:
                diff.check_identity(con, source, projection.identity, sync=sync.name, what=caps.object_word,
                                    model=rendered.model)
        if hold:        # the model's checks passed: only now are its rows written into the state
            held, total = _hold(SyncRows(con, plan_id, sync.name, state.next_seq()), counted, fields, sync,
                                rendered.model, hashed=away is not None, fast=fast, landed=not warehouse.in_process)
            counts = diff.DeltaCounts(total=total, added=total, candidates=0, removed=0)
            if away:
                locations.read_in_process(away, total)
        # the model's rows per group, for the destination's notes (a count over the model only when grouped)
        destination.plan_totals(diff.count_by(con, counted, group) if group else {None: counts.total})
        times = frozenset(f.name for f in fields if is_time_type(f.type))
        if held is not None:
            n, collapsed = counts.total, 0
            rows = PlanRows(held, "", projection, unset, times=times, primary_key=sync.primary_key, baseline=baseline)
            if fast is not None:     # before the Python path writes: the rows sent so far are the held ones
                destination.plan_sql_rows(held.sent_by(group))
            rows.refuse_secrets(counted, fields, destination, hashed=away is not None)
            rows.write_held_python(destination)
        else:
            n = delta.render(unset, remapped, sent=not baseline)
            collapsed = 0 if keyed_by_identity else delta.collapse(projection.identity)
            if same_place and projection.identity:
                # a restart in the same place (another primary key or identifier column): a row addressing an
                # object the old snapshot addressed takes over what Braze holds there (fields it leaves null are unset)
                delta.take_over(st.table, projection.identity)
            rows = PlanRows(SyncRows(con, plan_id, sync.name, state.next_seq()), delta.rows, projection, unset,
                            times=times, primary_key=sync.primary_key, baseline=baseline)
            _write_rows(rows, delta, destination, fields, n=n, baseline=baseline, progress=progress)
    locations.drop_scratch(con)
    read = read_cost(warehouse, read_before, location, counts.total)
    kept = state.values_held(sync.name, unmapped) if unmapped else ()
    context = SyncContext(identity=identity, restart=restart, projection=projection, unmapped=kept, remapped=tuple(remapped),
                          on_unmapped=on_unmapped, collapsed=collapsed,
                          columns=tuple((f.name, f.type) for f in fields),
                          fingerprint=fingerprint(project, sync, rendered.sql, rendered.definition, identity),
                          left_behind=destination.left_behind(before, snapshot_rows) if restart and snapshot_rows
                          else None)
    return rows.summarise(project, rendered, destination, counts, st.version, snapshot_rows, first_run,
                          baseline, rows.seq_min + n - 1, context, read)


def _hold(table: SyncRows, relation: str, fields: Sequence[diff.Column], sync: SyncSpec, model: str, *,
          hashed: bool, fast: SqlItems | None = None, landed: bool = False) -> tuple[SyncRows, int]:
    """A first run's every row held (`SyncRows.hold`) from a projected relation: a baseline's, or with
    `fast` (the destination's SQL payloads) a send_all's, whose payload checks are judged as the rows are
    read (`HeldSends.judging`); rows holding a secret held blank (`secret_in_values`), the keys checked (a
    null or repeated key stops the sync, named, and nothing is kept); returns the rows and how many.
    `landed`: the relation reads rows landed from a warehouse outside this process, not a model run here
    (the rows are then written in any order: `plan_rows.in_any_order`)."""
    refused = secret_in_values(fields, "m.")
    sends = None if fast is None else HeldSends(fast.channel_sql or sql_str(fast.channel), fast.item)
    judged = () if fast is None else HeldSends.judging(fast.eligible, fast.data_points)
    with diff.model_rows(sync=sync.name, model=model):
        held = table.hold(diff.held_select(relation, fields, hashed=hashed, refused=refused, judged=judged,
                                           typed_times=fast is not None and fast.typed_times),
                          [(f.name, f.type) for f in fields], sends, hashed=hashed, landed=landed)
    total, nulls, distinct, blank = held.held_keys()
    if nulls or distinct != total - blank or blank:
        try:
            # names the keys (a full pass over the model: only when a key is wrong, or a row was refused)
            diff.check_keys(held.con, relation, ", ".join(sync.primary_key), sync=sync.name, model=model)
        except ReflowError:
            held.drop_held()
            raise
        if not blank:
            held.drop_held()
            raise PlanError(f"sync '{sync.name}': model {model} changed while it was read (its keys were null or "
                            "repeated, then were not); plan again")
    return held, total


def _write_rows(rows: PlanRows, delta: diff.Delta, destination: Destination, fields: Sequence[diff.Column], *,
                n: int, baseline: bool, progress: Progress | None) -> None:
    """The delta's plan rows: in SQL where they can be, then the rest through the destination in Python."""
    if not n:
        rows.python_rows = "false"          # nothing changed: no plan rows to write, no payload SQL to plan
    elif baseline:
        # first_run: baseline records every row as sent without building payloads: all in SQL (but rows
        # holding a secret, refused in Python)
        rows.write_baseline()
    else:
        fast = destination.sql_items(fields)
        rows.write_sql(fast)
        if fast is not None:     # before the Python path writes: the rows sent so far are the fast path's
            destination.plan_sql_rows(rows.table.sent_by(destination.group_field))
    done = 0
    left = delta.mark(rows.python_rows)      # rows that need the Python path, numbered once
    for chunk in delta.stream_marked():
        rows.write_python(chunk, destination)
        done += len(chunk)
        if progress:
            progress(rows.sync, done, left)


def read_cost(warehouse: Warehouse, before: tuple[int, int], location: locations.Location,
              total: int) -> dict[str, Any]:
    """What the plan of one sync read from the warehouse (the plan's `read`): rows and bytes that
    travelled (bytes None: DuckDB, read in this process), where phase 1 ran and why."""
    rows = warehouse.cost.rows - before[0]
    nbytes = None if warehouse.in_process else warehouse.cost.bytes - before[1]
    if location.used == DiffLocation.LOCAL and warehouse.in_process:
        rows = total            # in process: every row was read
    return {"diff": str(location.used), "asked": str(location.asked), "rows": rows, "bytes": nbytes,
            "note": location.note}


@dataclass(frozen=True)
class ModelRead:
    """A sync's model made readable on the planner's connection, through the destination's projection."""

    relation: str                      # SQL reading the model's result
    types: dict[str, str]              # model column -> type
    projection: Projection
    fields: list[diff.Column]          # destination fields, with their model types


def read_model_at(con: Any, rendered: RenderedSync, warehouse: Warehouse, destination: Destination,
                  project: Project, *, preview: bool) -> tuple[ModelRead, locations.Location]:
    """The sync's model and where its diff runs (locations.choose): for `local` made readable on `con`
    (read_model); elsewhere only described (nothing landed; `relation` is "")."""
    sync = rendered.sync
    if (sync.diff or project.warehouse.diff) == DiffLocation.LOCAL:
        return read_model(con, rendered, warehouse, destination), locations.choose(project, sync, warehouse, (),
                                                                                     preview=preview)
    types = dict(warehouse.columns(con, rendered.sql, model=sync.model))
    check_columns([sync], lambda _: list(types))
    location = locations.choose(project, sync, warehouse, [types[k] for k in sync.primary_key], preview=preview,
                                grouped=destination.group_field is not None)
    if location.used == DiffLocation.LOCAL:
        return read_model(con, rendered, warehouse, destination), location
    return _model_read("", types, sync, destination), location


def read_model(con: Any, rendered: RenderedSync, warehouse: Warehouse, destination: Destination) -> ModelRead:
    """The sync's model made readable on `con` (planned, not run). Columns the spec names that the model
    lacks are refused (located, with a did-you-mean)."""
    sync = rendered.sync
    relation = warehouse.relation(con, rendered.sql, model=sync.model)
    columns = diff.describe(con, relation, model=rendered.model, sync=sync.name)
    return _model_read(relation, {c.name: c.type for c in columns}, sync, destination)


def _model_read(relation: str, types: dict[str, str], sync: SyncSpec, destination: Destination) -> ModelRead:
    check_columns([sync], lambda _: list(types))        # column drift: located, with a did-you-mean
    _refuse_secret_names(sync, types)
    projection = destination.project(list(types))
    fields = [diff.Column(f, types[c]) for f, c in projection.fields]
    fields += [diff.Column(f, "VARCHAR") for f, _ in projection.constants]
    if any(contains_secret(f.name) for f in fields):
        raise PlanError(f"sync '{sync.name}': a destination field's name {SECRET_REASON}; Reflow records field "
                        "names in its state: rename it in the sync's destination.fields")
    reserved = sorted(f for f in projection.names if f.startswith("__"))
    if reserved:
        raise PlanError(f"sync '{sync.name}': field(s) {', '.join(reserved)}: names starting with '__' are "
                        "reserved by Reflow; rename them in the model or in destination.fields")
    return ModelRead(relation, types, projection, fields)


def _refuse_secret_names(sync: SyncSpec, types: dict[str, str]) -> None:
    """A model column whose name or type (an enum's labels, a struct's field names) holds a registered
    secret is refused before anything is planned: names and types are recorded in the plan and the state
    (to see a mapping change), where a secret must never be written. The message names the column by its
    position only."""
    for i, (name, kind) in enumerate(types.items(), start=1):
        if contains_secret(name) or contains_secret(kind):
            where = "name" if contains_secret(name) else "type (an enum label or a struct field's name)"
            raise PlanError(f"sync '{sync.name}': model '{sync.model}', column {i} of {len(types)}: its {where} "
                            f"{SECRET_REASON}; Reflow records column names and types in its state, so rename "
                            "the column or cast it to a plain type in the model")


def run_model(con: Any, rendered: RenderedSync, warehouse: Warehouse, destination: Destination) -> int:
    """`validate`'s check: the sync's model run to its end as a plan runs it (every row: its key and the
    value of every field the sync sends), writing nothing. A value that fails on one row, a null or
    duplicate key: the error a plan would give, naming the sync and the model. Returns the rows."""
    sync = rendered.sync
    model = read_model(con, rendered, warehouse, destination)
    source = diff.projected(model.relation, model.projection.fields, sync.primary_key, model.projection.constants)
    return diff.check_keys(con, source, ", ".join(sync.primary_key), sync=sync.name, model=rendered.model,
                           columns=model.fields)


def check_model_columns(project: Project, syncs: Sequence[SyncSpec], warehouse: Warehouse) -> None:
    """`validate`'s first check: every sync's model renders and has the columns its spec names (the
    queries are planned, not run); every problem of every sync at once, located."""
    con = duckdb.connect(":memory:")
    try:
        def columns_of(sync: SyncSpec) -> list[str]:
            rendered = render_sync(project, sync, warehouse)
            relation = warehouse.relation(con, rendered.sql, model=sync.model)
            return [c.name for c in diff.describe(con, relation, model=rendered.model, sync=sync.name)]

        check_columns(syncs, columns_of)
    finally:
        con.close()


def run_models(project: Project, syncs: Sequence[SyncSpec], warehouse: Warehouse,
               destination_for: DestinationFor) -> int:
    """`validate`'s second check: every sync's model run to its end as `plan` would (`run_model`), writing
    nothing; every failing sync is reported at once. Returns the rows read."""
    failures: list[str] = []
    rows = 0
    con = duckdb.connect(":memory:")
    try:
        for sync in syncs:
            destination = destination_for(sync)
            try:
                rows += run_model(con, render_sync(project, sync, warehouse), warehouse, destination)
            except UserError as exc:
                failures.append(exc.message)
            finally:
                destination.close()
    finally:
        con.close()
    if failures:
        raise UserError("\n".join(failures))
    return rows


@dataclass(frozen=True)
class SyncContext:
    """What the planner learnt about a sync besides its rows (carried into its SyncPlan)."""

    identity: dict[str, str]
    restart: str | None
    projection: Projection
    unmapped: tuple[tuple[str, int], ...]
    remapped: tuple[str, ...]
    on_unmapped: str
    collapsed: int
    columns: tuple[tuple[str, str], ...]
    fingerprint: str
    left_behind: str | None = None     # what the old destination keeps when the sync starts again elsewhere


def describe_restart(old: Mapping[str, str], new: Mapping[str, str]) -> str | None:
    """One line naming what changed about where a sync's rows go, or None when nothing did."""
    changes = [f"{k} {old.get(k, '(none)')} → {new.get(k, '(none)')}" for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)]
    if not changes:
        return None
    return f"destination changed: {'; '.join(changes)}; the sync starts again"


class PlanRows:
    """Writes one sync's plan rows (SQL fast path first, then Python for the rest) and summarises
    them with SQL, so a plan of millions of rows never sits in Python."""

    def __init__(self, table: SyncRows, source: str, projection: Projection | None = None,
                 unset_unmapped: Sequence[str] = (), times: frozenset[str] = frozenset(),
                 primary_key: Sequence[str] = (), baseline: bool = False) -> None:
        self.table = table
        self.baseline = baseline       # first_run: baseline: no row of this plan is sent
        self.source = f"{source} AS r"         # the delta rows (diff.Delta.rows)
        self.con = table.con
        self.plan_id = table.plan_id
        self.sync = table.sync
        self.seq_min = table.seq_min
        self.projection = projection or Projection(fields=())
        self.unset_unmapped = frozenset(unset_unmapped)
        self.times = times
        self.primary_key = tuple(primary_key)
        self.python_rows = "true"
        self.secret_free = secret_free_sql(("r.__key", "r.__new_row", "r.__old_kept"))
        # values the destination would mangle: (kind, field, action) -> [rows, example key, its reason]
        self.flagged: dict[tuple[str, str, str], list[Any]] = {}

    def write_baseline(self) -> None:
        """first_run: baseline: every row recorded as sent (in SQL); those holding a secret are left to
        the Python path, which refuses them."""
        self.table.insert_from(self.source, {
            "seq": f"{int(self.seq_min)} + r.__rn - 1", "key": "r.__key", "op": "r.__op", "status": f"'{BASELINE}'",
            "retry": "false", "changed": "[]::VARCHAR[]", "new_hash": "r.__hash", "new_row": "r.__new_row",
            "old_row": "r.__old_row", "channel": "NULL", "item": "NULL", "data_points": "0",
            "reason": sql_str(BASELINE_REASON)}, where=self.secret_free)
        # the rows left (holding a secret) found by their missing plan row, not by rendering and searching
        # every row again
        self.python_rows = self.table.not_written("r.__rn") if registered_secrets() else "false"

    def refuse_secrets(self, relation: str, fields: Sequence[diff.Column], destination: Destination, *,
                       hashed: bool) -> None:
        """A held baseline's rows refused (they hold a secret: held blank) get their plan rows from the
        Python path, which names where the secret is and keeps nothing of it: read again from `relation`
        (the projected model) and given the refused rows' seqs."""
        seqs = self.table.refused_seqs() if self.table.held is not None else []
        if not seqs:
            return
        found = secret_in_values(fields, "m.")
        rows = self.con.execute(
            f"SELECT m.{diff.KEY}, {'m.__hash' if hashed else diff.hash_expr(fields)}, "
            f"{diff.rendered_row([(f.name, f.type) for f in fields], 'm.')} FROM {relation} AS m "
            f"WHERE {found or 'false'}").fetchall()
        if len(rows) != len(seqs):
            raise PlanError(f"sync '{self.sync}': the model changed while it was read ({len(seqs)} rows holding a "
                            f"secret, then {len(rows)}); plan again")
        self.write_python([diff.DeltaRow(rn=seq - self.seq_min + 1, key=key, op=Op.ADDED, new_hash=new_hash,
                                         new_row=json.loads(new_row), new_row_json=new_row, old_row=None,
                                         old_row_json=None) for seq, (key, new_hash, new_row) in zip(seqs, rows, strict=True)],
                          destination)

    def write_held_python(self, destination: Destination) -> None:
        """A `send_all` first run's held rows that its SQL payloads cannot prove valid: planned through
        the destination in Python, at their seqs (the held table sends none of them)."""
        for chunk in self.table.held_for_python():
            self.write_python([diff.DeltaRow(rn=seq - self.seq_min + 1, key=key, op=Op.ADDED, new_hash=new_hash,
                                             new_row=json.loads(row), new_row_json=row, old_row=None, old_row_json=None)
                               for seq, key, new_hash, row in chunk], destination)

    def _flag(self, key: str, result: Item | Invalid | Skip) -> None:
        """Count the problems of one row's result that name a value the destination would mangle
        (a `destinations.base.Reason` with a `kind`)."""
        if isinstance(result, Invalid):      # one problem may be the reason itself
            problems = result.problems or ((result.reason,) if isinstance(result.reason, Reason) else ())
            action = "invalid"
        elif isinstance(result, Item):
            problems, action = result.dropped, "left out"
        else:
            return
        for problem in problems:
            if not problem.kind:
                continue
            entry = self.flagged.setdefault((problem.kind, problem.field, action), [0, key, str(problem)])
            entry[0] += 1

    def warnings(self) -> tuple[ValueWarning, ...]:
        return tuple(ValueWarning(kind, field, rows, action, key, reason)
                     for (kind, field, action), (rows, key, reason) in sorted(self.flagged.items()))

    def _insert(self, status: str, where: str, *, channel: str = "NULL", item: str = "NULL", points: str = "0",
                reason: str = "NULL") -> None:
        """Delta rows matching `where` (over `r`) as plan rows, in SQL; a row holding a secret is written
        by none of these: the Python path refuses it."""
        self.table.insert_from(self.source, {
            "seq": f"{int(self.seq_min)} + r.__rn - 1", "key": "r.__key", "op": "r.__op", "status": status,
            "retry": f"r.__key IN {self.table.pending_keys()}", "changed": "r.__changed", "new_hash": "r.__hash",
            "new_row": "r.__new_row", "old_row": "r.__old_kept", "channel": channel, "item": item,
            "data_points": points, "reason": reason}, where=f"({where}) AND {self.secret_free}")

    def write_sql(self, fast: SqlItems | None) -> None:
        """Rows whose hash moved but no value did are recorded only; a destination's SQL payloads
        cover the rows it can prove valid; everything else goes through prepare() in Python."""
        rehash = "r.__op = 'changed' AND len(r.__changed) = 0"
        self._insert(f"'{REHASH}'", rehash)
        self._insert(f"'{SKIP}'", "r.__collapsed", reason=sql_str(
            "another key of the model addresses the same destination object; that row's values are sent "
            "instead of this removal"))
        if fast is not None:
            # rows that take a destination object over, change what names it, unset unmapped fields or
            # have unknown old values are the Python path's
            special = ["r.__collapsed", "r.__replaces IS NOT NULL", "r.__uncertain",
                       f"r.__key IN {self.table.pending_keys(waiting=True)}"]  # held back: prepare() judges how long
            for names in (self.projection.identity, sorted(self.unset_unmapped)):
                if names:
                    special.append(f"list_has_any(r.__changed, [{', '.join(sql_str(f) for f in names)}])")
            if self.unset_unmapped:
                special.append("r.__op = 'removed'")     # its unmapped fields are unset too
            # a removed row whose old values include UNKNOWN (its last send had no answer, or `reflow reset`):
            # the Python path takes the fields naming the object from the key (_known_identity)
            special.append(f"(r.__op = 'removed' AND {holds_unknown('r.__old_row')})")
            self._insert(f"'{SEND}'", f"NOT ({rehash}) AND NOT ({' OR '.join(special)}) AND ({fast.eligible})",
                         channel=fast.channel_sql or sql_str(fast.channel), item=f"({fast.item})",
                         points=f"({fast.data_points})")
        # the rest: delta rows not written yet (an anti-join, cheaper than evaluating `eligible` again)
        self.python_rows = self.table.not_written("r.__rn")

    def _known_identity(self, key: str, old: dict[str, Any]) -> dict[str, Any]:
        """A removed row's old values with each field naming the destination object that the snapshot
        marks UNKNOWN (a send without an answer, `reflow reset`: marked when the row has no other field, so
        that it is sent again) taken from the row's key where the key holds that field's column: the
        removal must address the object, never the marker."""
        if UNKNOWN not in old.values() or not self.primary_key:
            return old
        parts = [key] if len(self.primary_key) == 1 else json.loads(key)
        restored = dict(old)
        for field in self.projection.identity:
            column = self.projection.column_of(field)
            if restored.get(field) == UNKNOWN and column in self.primary_key:
                restored[field] = parts[self.primary_key.index(column)]
        return restored

    def write_python(self, chunk: list[diff.DeltaRow], destination: Destination) -> None:
        pending = self.table.pending_of([r.key for r in chunk])
        out: list[PlanRowRecord] = []
        for row in chunk:
            old = row.old_row or {}
            values = self._known_identity(row.key, old) if row.op == Op.REMOVED else (row.new_row or {})
            unmapped = (tuple(f for f in sorted(self.unset_unmapped) if old.get(f) is not None)
                        if row.op == Op.REMOVED else tuple(f for f in row.changed if f in self.unset_unmapped))
            unknowns, waiting_since = pending.get(row.key, (0, None))
            result = destination.prepare(PlanRow(
                key=row.key, op=row.op, values=values, old_values=old if row.op == Op.CHANGED else None,
                changed=row.changed, unmapped=unmapped, replaces=row.replaces, uncertain=row.uncertain,
                unknowns=unknowns, waiting_since=waiting_since, times=self.times))
            self._flag(row.key, result)
            if isinstance(result, Invalid):
                status, item, reason = INVALID, None, result.reason
            elif isinstance(result, Skip):
                status, item, reason = SKIP, None, result.reason
            else:
                status, item, reason = SEND, result, None
            new_row, new_hash, changed = row.new_row_json, row.new_hash, list(row.changed)
            if item is not None and item.dropped:
                # fields left out are not what Braze holds: the snapshot keeps what it knew of them, and
                # no hash, so the next plan looks at the row again (the bad value stays flagged until fixed);
                # nor do they change in Braze (the plan's field counts and diffs leave them out)
                reason = DROPPED + "; ".join(item.dropped)
                left_out = [d.field for d in item.dropped]
                new_row, new_hash = _without(row, left_out), None
                changed = [f for f in changed if f not in left_out]
            if item is not None and item.note:
                reason = item.note if reason is None else f"{reason}; {item.note}"
            kept = item.kept if item is not None else result.kept if isinstance(result, Skip) else ()
            if kept:
                # not sent by choice (nulls: skip): Braze keeps the old values, and so does the snapshot
                new_row, new_hash = _without(row, kept, json.loads(new_row) if new_row else None), None
            key, old_kept = row.key, _old_kept(row)
            holding = holding_secrets(row, item) if registered_secrets() else []
            if holding:
                # never sent, never stored: the row is invalid, and what the plan keeps of it is scrubbed
                status, item, new_hash = INVALID, None, None
                reason = f"{', '.join(holding)}: {SECRET_REASON}; it is not sent. Fix the model"
                key, new_row = scrub(key), scrubbed_json(new_row) if new_row is not None else None
            elif self.baseline:
                # a baseline sends nothing and judges no value: a row here without a secret is recorded as
                # the SQL path records it (the whole row, as the model has it)
                status, item, reason, new_row, new_hash = BASELINE, None, BASELINE_REASON, row.new_row_json, row.new_hash
            if old_kept is not None and registered_secrets():
                old_kept = scrub(old_kept)          # a value sent before the secret was registered
            out.append(PlanRowRecord(
                plan_id=self.plan_id, sync=self.sync, seq=self.seq_min + row.rn - 1, key=key, op=row.op,
                status=status, retry=row.key in pending, changed=changed, new_hash=new_hash, new_row=new_row,
                old_row=old_kept, channel=item.channel if item else None,
                item=item.item_json if item else None, data_points=item.data_points if item else 0,
                reason=reason))
        self.table.append(out)

    def summarise(self, project: Project, rendered: RenderedSync, destination: Destination,
                  delta: diff.DeltaCounts, version: int, snapshot_rows: int, first_run: bool, baseline: bool,
                  seq_max: int, context: SyncContext, read: dict[str, Any] | None = None) -> SyncPlan:
        sync = rendered.sync
        t = self.table.totals(sorted(self.unset_unmapped), self.projection.identity)
        (added, changed, removed, retry, invalid, not_sent, baselined, rehash,
         added_sent, changed_sent, removed_sent, moved_rows, retry_sent) = t
        unchanged = delta.total - (delta.added + delta.candidates - rehash)
        counts = Counts(total=delta.total, added=added, changed=changed, removed=removed, unchanged=unchanged,
                        retry=retry, invalid=invalid, not_sent=not_sent, baseline=baselined)
        estimate = destination.estimate(self.table.channel_totals())
        caps = destination.capabilities
        # guards count what is sent: rows recorded without sending never trip one
        sending = Counts(added=added_sent, changed=changed_sent, removed=removed_sent)
        guards = evaluate_guards(sync, sending, snapshot_rows, estimate.data_points, caps.append_only)
        notes = [context.restart] if context.restart else []
        if context.left_behind:
            notes.append(context.left_behind)
        if context.remapped:
            notes.append(f"{', '.join(context.remapped)} mapped again: no longer synced before, so Braze may hold old "
                         "values; every row sends its value again, nulls included")
        if baseline:
            notes.append("first run with first_run: baseline: rows are recorded as sent, nothing is sent")
        if caps.append_only and changed:
            notes.append(f"{changed} already-sent row(s) changed; {sync.destination.object} are append-only, "
                         "changes are reported, not re-sent")
        notes += self._waiting_note(sync)
        notes += destination.plan_notes(added_sent + changed_sent + retry_sent)
        if context.collapsed:
            notes.append(f"{context.collapsed} removed row(s) address the same {caps.object_word} as another "
                         "row of the model: the removal is not sent, that row's values are")
        dropped, dropped_first, noted, noted_first = self.table.with_reasons()
        if dropped:
            key, why = dropped_first
            notes.append(f"{dropped} row(s) are sent without a field Braze would refuse (the rest of each row "
                         f"is sent; `reflow show --sync {sync.name}` lists them), e.g. {key}: {why}")
        if noted:
            key, why = noted_first
            notes.append(f"{noted} row(s) are sent with a note (`reflow errors` lists them after apply), "
                         f"e.g. {key}: {why}")
        if moved_rows:
            fields = ", ".join(self.projection.identity)
            notes.append(f"{moved_rows} row(s) now have another {fields}: each is sent in full to its new "
                         f"{fields}; what the old one holds in Braze is left as it is")
        secret = self.table.invalid_containing(SECRET_REASON)
        if secret:
            notes.append(f"{secret} row(s) hold a secret value (an API key or a secret environment variable): "
                         f"they are not sent, and the plan keeps them masked (`reflow show --sync {sync.name} "
                         "--op invalid`); fix the model")
        if read and read.get("note"):
            notes.append(str(read["note"]))
        invalid_samples = self.table.invalid_samples(INVALID_SAMPLES)
        return SyncPlan(
            name=sync.name, model=sync.model, object=sync.destination.object,
            connection=sync.destination.connection, counts=counts,
            requests=dict(estimate.requests), data_points=estimate.data_points, seconds=estimate.seconds,
            guards=guards, fields=self._fields(), samples=self._samples(), invalid_samples=invalid_samples,
            snapshot_version=version, snapshot_rows=snapshot_rows,
            fingerprint=context.fingerprint, seq_min=self.seq_min, seq_max=seq_max,
            first_run=first_run, notes=tuple(notes), identity=context.identity, restart=context.restart,
            unmapped=context.unmapped, on_unmapped=context.on_unmapped, append_only=caps.append_only,
            apply_rank=caps.apply_rank, membership=caps.membership,
            columns=context.columns, identity_fields=self.projection.identity, warnings=self.warnings(),
            read=dict(read or {}),
        )

    def _waiting_note(self, sync: SyncSpec) -> list[str]:
        """Rows of the plan held back before (WAITING), and since when."""
        count, since = self.table.waiting()
        if not count:
            return []
        return [f"{count} row(s) have been waiting for what they need in {sync.destination.object} (e.g. their "
                f"user's profile) since {since:%Y-%m-%d %H:%M} UTC; `reflow status` shows why"]

    def _fields(self) -> tuple[FieldStat, ...]:
        """Per changed field: rows, how many became null, how many changed JSON type (Braze keeps the first
        type it saw for segmentation), a few samples old → new (all in SQL)."""
        rows = self.table.field_stats(SAMPLES_PER_FIELD, UNKNOWN)
        return tuple(
            FieldStat(f, int(n), int(nulled), tuple((k, _shown(o), _shown(v)) for k, o, v in s),
                      column=self.projection.column_of(f), type_changes=int(retyped),
                      type_sample=_type_sample(sample))
            for f, n, nulled, retyped, s, sample in rows)

    def _samples(self) -> dict[str, list[dict[str, Any]]]:
        rows = self.table.samples(SAMPLES_PER_OP)
        samples: dict[str, list[dict[str, Any]]] = {}
        for op, key, changed, new_row, old_row, item, reason in rows:
            new, old = _loads(new_row) or {}, _loads(old_row) or {}
            values: dict[str, Any]
            if op == Op.CHANGED:
                values = {f: {"old": UNKNOWN_SHOWN if old.get(f) == UNKNOWN else old.get(f), "new": new.get(f)}
                          for f in changed}
            else:
                values = {k: UNKNOWN_SHOWN if v == UNKNOWN else v for k, v in (new if op == Op.ADDED else old).items()}
            samples.setdefault(op, []).append(
                {"key": key, "values": values, "payload": _loads(item), "note": reason})
        return samples


def _old_kept(row: diff.DeltaRow) -> str | None:
    """What a plan keeps of the old row (see diff.prepare_rows): changed fields' old values, or all of a removed row."""
    if row.op == Op.CHANGED:
        old = row.old_row or {}
        return json.dumps({f: old.get(f) for f in row.changed}, ensure_ascii=False, separators=(",", ":"))
    return row.old_row_json if row.op == Op.REMOVED else None


def _without(row: diff.DeltaRow, fields: Sequence[str], values: dict[str, Any] | None = None) -> str:
    """The new row as Braze will hold it when `fields` are not sent: each keeps its old value (a changed
    row) or is left out (an added one)."""
    values = dict(values if values is not None else row.new_row or {})
    old = row.old_row or {}
    for field in fields:
        if field in values:
            if row.op == Op.CHANGED and field in old:
                values[field] = old[field]
            else:
                del values[field]
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def _shown(text: str | None) -> Any:
    """A value for review: UNKNOWN (a send without a usable answer) reads as such."""
    value = _loads(text)
    return UNKNOWN_SHOWN if value == UNKNOWN else value


def _type_sample(sample: Sequence[Any] | None) -> tuple[str, str, str, Any, Any] | None:
    if not sample:
        return None
    key, old_type, new_type, old, new = sample
    return (key, old_type, new_type, _loads(old), _loads(new))


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
