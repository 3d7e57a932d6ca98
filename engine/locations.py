"""Where a sync's diff runs its first phase: `diff: local | hashes | warehouse` (docs/diff-locations.md).

    local      the model's rows land in Reflow's DuckDB; both phases run there (diff.Delta.compare)
    hashes     the warehouse computes (key, 64-bit hash) per row (engine/warehouse/dialects.py); only those
               pairs travel; phase 1 runs here against the snapshot; the delta's rows are then fetched
               in full (one filtered query; the whole model when the delta is most of it)
    warehouse  phase 1 runs on the warehouse as one statement, against a mirror of the snapshot's
               (key, hash) (engine/warehouse/mirror.py); only the delta's keys and then its rows travel

Every location ends in the same delta table, so phase 2, payloads and plans are the same code. A
location's hashes are tagged with its recipe (`Location.recipe`); a sync whose recipe changes re-hashes
once (State.invalidate_hashes_if_needed): every row is compared field by field, nothing unchanged is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb

from engine import diff
from engine.destinations.base import Projection
from engine.errors import PlanError
from engine.plan import SyncPlan
from engine.project import Project
from engine.specs import DiffLocation, SyncSpec
from engine.sql import quote, sql_str
from engine.state import State
from engine.state.plan_rows import SyncRows
from engine.state.store import HASH_RECIPE
from engine.warehouse.base import Warehouse
from engine.warehouse.dialects import Dialect, Field, key_kinds_supported
from engine.warehouse.mirror import Mirror, scratch_csv

HASHED = "memory.main.reflow_hashed"
HASHED_RAW = "memory.main.reflow_hashed_raw"
FETCHED = "memory.main.reflow_fetched"
FETCHED_RAW = "memory.main.reflow_fetched_raw"
PROBLEMS = "memory.main.reflow_key_problems"
MARKER = "d"                 # phase 1's extra row on the warehouse: the digest its mirror records
COUNTED = "c"                # ... and one with the model's row count
FETCH_BY_KEY = 200_000       # up to this many delta keys are fetched by key; more: the whole model
FETCH_SHARE = 0.25           # ... unless they are more than this share of the model (then: the whole model)


@dataclass(frozen=True)
class Location:
    asked: DiffLocation
    used: DiffLocation
    recipe: str                  # the hash recipe of this location's hashes (recorded with the snapshot)
    dialect: Dialect | None = None   # None: DuckDB in this process
    note: str | None = None      # why `used` is not `asked`


def choose(project: Project, sync: SyncSpec, warehouse: Warehouse, key_types: Sequence[str], *,
           preview: bool, grouped: bool = False) -> Location:
    """The location a sync's diff runs in: what its spec (or the project) asks, unless the warehouse
    cannot (then the nearest one that can, with a note saying why). `grouped`: the destination counts the
    model's rows per value of a field (cohorts by id), which `hashes` lands with the pairs."""
    asked = sync.diff or DiffLocation(project.warehouse.diff)
    if asked == DiffLocation.LOCAL:
        return Location(asked, asked, HASH_RECIPE)
    if warehouse.in_process:         # DuckDB, in this process: its own recipe, no mirror to keep
        note = (None if asked == DiffLocation.HASHES else
                "diff: warehouse on DuckDB reads (key, hash) in this process: the snapshot is already next to "
                "the data, so there is no mirror to keep (hashes)")
        return Location(asked, DiffLocation.HASHES, HASH_RECIPE, None, note)
    dialect = warehouse.dialect
    if dialect is None:
        return Location(asked, DiffLocation.LOCAL, HASH_RECIPE, None,
                        f"diff: {asked} not used: Reflow has no hash SQL for this warehouse; diffing locally")
    why = key_kinds_supported(key_types)
    if why:
        return Location(asked, DiffLocation.LOCAL, HASH_RECIPE, None, f"diff: {asked} not used: {why}; diffing locally")
    if asked == DiffLocation.WAREHOUSE and not warehouse.mirror_writable:
        return Location(asked, DiffLocation.HASHES, dialect.recipe, dialect,
                        f"diff: warehouse needs a mirror Reflow can keep on {dialect.name} (for now PostgreSQL 12 or "
                        "later only); using hashes")
    if asked == DiffLocation.WAREHOUSE and grouped:
        return Location(asked, DiffLocation.HASHES, dialect.recipe, dialect,
                        "this destination counts the model's rows per group (cohort), which phase 1 on the "
                        "warehouse does not return: using hashes")
    if asked == DiffLocation.WAREHOUSE and preview:
        return Location(asked, DiffLocation.HASHES, dialect.recipe, dialect,
                        "a read-only plan writes nothing to the warehouse: its mirror is not brought up to date, "
                        "so this plan reads (key, hash) pairs (hashes)")
    return Location(asked, asked, dialect.recipe, dialect)


@dataclass(frozen=True)
class Away:
    """A sync's model, read away from Reflow (hashes / warehouse)."""

    con: duckdb.DuckDBPyConnection
    warehouse: Warehouse
    location: Location
    sql: str                     # the rendered model, in the warehouse's SQL
    sync: SyncSpec
    projection: Projection
    fields: Sequence[diff.Column]        # destination fields with their model types
    types: dict[str, str]                # model column -> type
    model: str                           # the model as errors name it
    mirror_schema: str = "reflow_mirror"

    @property
    def hash_fields(self) -> list[Field]:
        p = self.projection
        return ([Field(f, c, self.types[c]) for f, c in p.fields]
                + [Field(f, None, "VARCHAR", text) for f, text in p.constants])

    def extra(self, names: Sequence[str]) -> list[tuple[str, str]]:
        """(field, column) of the named fields that read a model column."""
        cols = dict(self.projection.fields)
        return [(f, cols[f]) for f in names if f in cols]


def _in_process_source(away: Away) -> str:
    """DuckDB in this process: the sync's model read through its projection (`diff.projected`)."""
    relation = away.warehouse.relation(away.con, away.sql, model=away.sync.model)
    return diff.projected(relation, away.projection.fields, away.sync.primary_key, away.projection.constants)


def compare(delta: diff.Delta, away: Away, snapshot: str, key_label: str, *, include_removed: bool,
            extras: Sequence[str], state: State, empty: bool = False) -> tuple[diff.DeltaCounts, str]:
    """Phase 1 away from Reflow, then the delta's rows fetched in full (`Delta.fill`): the delta ends as
    a local compare leaves it. `extras`: fields landed with every key (the field the destination counts
    rows by). `empty`: the snapshot holds no row (a first run), so every row is in the delta: the model is
    read once, in full, with its hashes (no pairs first). Returns the counts and the relation holding every
    model row's key and `extras` (for the destination's counts)."""
    if empty:
        fetch_every_row(away, state)
        counts = delta.compare(FETCHED, away.fields, key_label, snapshot, include_removed=include_removed,
                               hashed=True)
        delta.needed_keys()
        return delta.fill(FETCHED, counts), FETCHED
    if away.location.used == DiffLocation.WAREHOUSE:
        # phase 1's statement returned the delta's rows in full: no second read of the model
        counts = _compare_on_warehouse(delta, away, snapshot, key_label, include_removed=include_removed,
                                       state=state)
        delta.needed_keys()
        return delta.fill(FETCHED, counts), HASHED
    else:
        _land_pairs(away, extras)
        counts = delta.compare(HASHED, away.fields, key_label, snapshot, include_removed=include_removed,
                               hashed=True)
    keys_sql, n = delta.needed_keys()
    _fetch(away, keys_sql, n, counts.total)
    return delta.fill(FETCHED, counts), HASHED


def fetch_every_row(away: Away, state: State, *, landed: bool = True) -> str:
    """A first run (the snapshot holds no row): every model row in full, projected, with its hash, read
    once (no pairs first); returns the relation (FETCHED). `landed=False` (a baseline, which writes the
    rows into the state itself): the relation is a query over the model in this process, or over the rows
    landed as they came from the warehouse, not a copy of them."""
    if away.location.used == DiffLocation.WAREHOUSE and away.location.dialect is not None:
        # the mirror exists (empty) before the send, so that the send's keys are written to it
        ensure_mirror(Mirror(away.warehouse, away.location.dialect, away.mirror_schema, away.sync.name),
                      state, away.sync.name, away.location.recipe, state.snapshot_digest(away.sync.name))
    if landed:
        _fetch(away, None, 0, 0)
        return FETCHED
    if away.location.dialect is None:
        return f"(SELECT m.*, {diff.hash_expr(away.fields)} AS __hash FROM {_in_process_source(away)} AS m)"
    away.warehouse.land_query(away.con, away.location.dialect.rows(away.sql, away.sync.primary_key, away.hash_fields,
                                                                   None), FETCHED_RAW, model=away.sync.model)
    return f"({_fetched_select(away, FETCHED_RAW)})"


def read_in_process(away: Away, rows: int) -> None:
    """Count `rows` read by a query over the model in this process (`fetch_every_row(landed=False)`)."""
    if away.location.dialect is None:
        away.warehouse.cost.rows += rows


def _land_pairs(away: Away, extras: Sequence[str]) -> None:
    """Every model row's (key, hash) and the `extras` fields, in HASHED."""
    con, sync = away.con, away.sync
    if away.location.dialect is None:
        source = _in_process_source(away)
        more = "".join(f", m.{quote(f)}" for f in extras)
        away.warehouse.land_query(con, f"SELECT {diff.KEY}, {diff.hash_expr(away.fields)} AS __hash{more} "
                                       f"FROM {source} AS m", HASHED, model=sync.model)
        return
    sql = away.location.dialect.hashed(away.sql, sync.primary_key, away.hash_fields, away.extra(extras))
    away.warehouse.land_query(con, sql, HASHED_RAW, model=sync.model)
    con.execute(f"CREATE OR REPLACE TABLE {HASHED} AS SELECT * REPLACE (('0x' || __hash)::UBIGINT AS __hash) "
                f"FROM {HASHED_RAW}")
    con.execute(f"DROP TABLE IF EXISTS {HASHED_RAW}")


def _fetch(away: Away, keys_sql: str | None, n: int, total: int) -> None:
    """The delta's added and changed rows in full, projected, with the warehouse's hash, in FETCHED: by
    key (one query) when they are few, else the whole model filtered here; nothing read when none. Every
    row, unfiltered, when `keys_sql` is None."""
    con, sync = away.con, away.sync
    if keys_sql is not None and not n:
        cols = ", ".join(f"NULL::{c.type} AS {quote(c.name)}" for c in away.fields)
        con.execute(f"CREATE OR REPLACE TABLE {FETCHED} AS SELECT NULL::VARCHAR AS {diff.KEY}"
                    f"{', ' + cols if cols else ''}, NULL::UBIGINT AS __hash WHERE false")
        return
    if away.location.dialect is None:
        source = _in_process_source(away)
        where = "" if keys_sql is None else f" WHERE {diff.KEY} IN ({keys_sql})"
        con.execute(f"CREATE OR REPLACE TABLE {FETCHED} AS SELECT m.*, {diff.hash_expr(away.fields)} AS __hash "
                    f"FROM {source} AS m{where}")
        row = con.execute(f"SELECT count(*) FROM {FETCHED}").fetchone()
        away.warehouse.cost.rows += int(row[0]) if row else 0
        return
    by_key = keys_sql is not None and n <= FETCH_BY_KEY and (n < 1000 or n <= FETCH_SHARE * total)
    keys = [str(r[0]) for r in con.execute(keys_sql).fetchall()] if by_key and keys_sql else None
    sql = away.location.dialect.rows(away.sql, sync.primary_key, away.hash_fields, keys)
    away.warehouse.land_query(con, sql, FETCHED_RAW, model=sync.model)
    _fetched(away, FETCHED_RAW, "" if by_key or keys_sql is None else f"WHERE m.__key IN ({keys_sql})")
    con.execute(f"DROP TABLE IF EXISTS {FETCHED_RAW}")


def _row_columns(away: Away) -> list[str]:
    """The model columns `Dialect.rows` returns (each once, sorted), after `__key` and `__hash`."""
    return sorted({f.column for f in away.hash_fields if f.column})


def _fetched(away: Away, raw: str, where: str = "") -> None:
    """FETCHED (the projected rows with the warehouse's hash, as `_fetch` leaves it) from `raw`, rows of
    `Dialect.rows` landed as text columns."""
    away.con.execute(f"CREATE OR REPLACE TABLE {FETCHED} AS {_fetched_select(away, raw)} {where}")


def _fetched_select(away: Away, raw: str) -> str:
    """SQL: the projected rows with the warehouse's hash, read from `raw` (as `Dialect.rows` landed them)."""
    p = away.projection
    cols = "".join(f", m.{quote(c)} AS {quote(f)}" for f, c in p.fields)
    cols += "".join(f", {sql_str(text)}::VARCHAR AS {quote(f)}" for f, text in p.constants)
    return f"SELECT m.__key AS {diff.KEY}{cols}, ('0x' || m.__hash)::UBIGINT AS __hash FROM {raw} AS m"


def _compare_on_warehouse(delta: diff.Delta, away: Away, snapshot: str, key_label: str, *,
                          include_removed: bool, state: State) -> diff.DeltaCounts:
    """Phase 1 as one statement on the warehouse, against the mirror (brought up to date first).

    The statement is a LEFT JOIN of the model's (key, hash) to the mirror (rows added or changed) and an
    anti-join of the mirror's keys to the model's (rows removed): PostgreSQL 15 runs both as parallel hash
    joins, where a FULL JOIN ran in one process (10M rows: 38 s → 31 s). It also returns the model's row
    count and the digest the mirror records, read in the same statement (one snapshot of the warehouse,
    and a mirror is only ever written in one transaction with its digest): another state rebuilding a
    shared mirror between the check and phase 1 is seen, and phase 1 runs again on a mirror brought back
    (once; then the plan stops rather than diff against another state's mirror).

    The keys are checked by counting instead of a `count(DISTINCT key)` over the model: the mirror's keys
    are distinct, so a model without null or repeated keys has exactly (mirror rows - removed + added)
    rows, and the rows that travel (added and changed) show their own nulls and repeats. When the count
    does not add up, the full key checks run and name the keys."""
    dialect, sync, con = away.location.dialect, away.sync, away.con
    assert dialect is not None
    mirror = Mirror(away.warehouse, dialect, away.mirror_schema, sync.name)
    total = None if include_removed else key_checks(away, key_label)      # append-only: nothing is removed
    rows = dialect.rows(away.sql, sync.primary_key, away.hash_fields, None)      # __key, __hash, the columns
    columns = _row_columns(away)
    blank = "".join(", NULL" for _ in columns)         # the columns of the rows that are not model rows
    keyed = dialect.keyed(away.sql, sync.primary_key)
    found = (f"SELECT 'y' AS __in_model, n.__key, n.__hash{''.join(f', n.{dialect.quote(c)}' for c in columns)} "
             f"FROM ({rows}) AS n LEFT JOIN {mirror.table} AS s ON n.__key = s.key "
             f"WHERE n.__hash IS DISTINCT FROM s.hash")
    if include_removed:
        found += (f" UNION ALL SELECT 'n', s.key, NULL{blank} FROM {mirror.table} AS s "
                  f"WHERE NOT EXISTS (SELECT 1 FROM ({keyed}) AS k WHERE k.__key = s.key)"
                  f" UNION ALL SELECT '{COUNTED}', {dialect.as_text('count(*)')}, NULL{blank} FROM ({keyed}) AS c")
    found += (f" UNION ALL SELECT '{MARKER}', digest, NULL{blank} FROM {mirror.syncs} "
              f"WHERE sync = {sql_str(sync.name)}")
    # the snapshot's digest is computed here beside phase 1 (10M rows: 2 s of DuckDB while PostgreSQL works):
    # phase 1 reads a mirror that matches the digest it records, and its answer is taken only once that digest
    # is the snapshot's; when it is not, the mirror is rebuilt from the snapshot and phase 1 runs again
    import concurrent.futures  # here: a plan without `diff: warehouse` imports no thread pool

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="reflow-digest") as pool:
        snapshot_digest = pool.submit(state.snapshot_digester(sync.name))
        known: str | None = None
        races = 0
        while True:
            digest = ensure_mirror(mirror, state, sync.name, away.location.recipe, known,
                                   pending=snapshot_digest.result)
            away.warehouse.land_query(con, found, HASHED_RAW, model=sync.model)
            marks = [r[0] for r in con.execute(f"SELECT __key FROM {HASHED_RAW} WHERE __in_model = '{MARKER}'").fetchall()]
            counted = [r[0] for r in con.execute(f"SELECT __key FROM {HASHED_RAW} WHERE __in_model = '{COUNTED}'").fetchall()]
            con.execute(f"DELETE FROM {HASHED_RAW} WHERE __in_model IN ('{MARKER}', '{COUNTED}')")
            away.warehouse.cost.add(-len(marks) - len(counted), 0)   # bookkeeping, as other one-row queries
            if known is None:
                known = snapshot_digest.result()
                if digest != known:          # the mirror was another snapshot's (behind, another state's): rebuilt
                    con.execute(f"DROP TABLE IF EXISTS {HASHED_RAW}")
                    continue
            if marks == [digest]:
                break
            con.execute(f"DROP TABLE IF EXISTS {HASHED_RAW}")
            races += 1
            if races == 2:
                raise PlanError(
                    f"sync '{sync.name}': the warehouse mirror {mirror.table} was rewritten while this plan read "
                    f"it (it records {marks[0] if marks else 'nothing'!r}, this state's snapshot is {digest!r}): "
                    "another Reflow state keeps the same mirror. Give each state its own "
                    "warehouse.mirror_schema in reflow_project.yml, or let the other run finish and plan again")
    try:
        if total is None:
            total = int(counted[0])
            nulls, repeats = con.execute(
                f"SELECT count(*) FILTER (WHERE __key IS NULL), count(__key) - count(DISTINCT __key) "
                f"FROM {HASHED_RAW} WHERE __in_model = 'y'").fetchone() or (0, 0)
            counts = delta.compare_found(HASHED_RAW, away.fields, snapshot, total, include_removed=include_removed)
            if nulls or repeats or total != int(digest.split(":")[0]) - counts.removed + counts.added:
                _keys_again(away, key_label, total)
        else:
            counts = delta.compare_found(HASHED_RAW, away.fields, snapshot, total, include_removed=include_removed)
        _fetched(away, HASHED_RAW, "WHERE m.__in_model = 'y'")
        return counts
    finally:
        con.execute(f"DROP TABLE IF EXISTS {HASHED_RAW}")


def _keys_again(away: Away, key_label: str, counted: int) -> None:
    """Phase 1's counts say a key is null or repeated: the full key checks name the keys (and stop the
    sync); when they find none, the model changed between phase 1's reads, and the plan stops."""
    total = key_checks(away, key_label)
    raise PlanError(f"sync '{away.sync.name}': the model's rows changed while this plan read them ({counted:,} "
                    f"rows, then {total:,}): nothing was sent for this sync; plan again")


def ensure_mirror(mirror: Mirror, state: State, sync: str, recipe: str, digest: str | None = None, *,
                  pending: Callable[[], str] | None = None) -> str:
    """Rebuild the mirror from the local snapshot unless it records the snapshot's digest (`digest`) and this
    recipe and its rows have that digest (missing, dropped, behind after a crash, another state's, edited by
    hand): returns the digest the mirror now records. Without `digest`, a mirror whose rows have the digest
    it records is taken as it is, and that digest returned: the caller compares it with the snapshot's
    before it trusts what phase 1 read. `pending`: the snapshot's digest being computed already (waited for
    when a rebuild needs it, rather than computed again)."""
    recorded = mirror.recorded()
    # the rows are checked too (one sum over the mirror's generated checksums): a hash edited by hand to
    # match the model would otherwise hide that row's change
    if (recorded is not None and recorded[2] == recipe and (digest is None or recorded[0] == digest)
            and mirror.digest() == recorded[0]):
        return recorded[0]
    if digest is None:
        digest = pending() if pending else state.snapshot_digest(sync)
    st = state.sync(sync)
    path = scratch_csv()
    try:
        rows = state.snapshot_hashes_csv(sync, path)
        mirror.rebuild(path, digest=digest, version=st.version if st else 0, recipe=recipe, rows=rows)
    finally:
        path.unlink(missing_ok=True)
    return digest


def update_mirror(mirror: Mirror, state: State, sync: str, keys_sql: str, *, was: str) -> None:
    """After a sync's send: the keys its plan named, as the snapshot now holds them, written to the mirror
    if it still records digest `was` (else the next plan rebuilds it)."""
    digest = state.snapshot_digest(sync)
    if digest == was:
        return
    st = state.sync(sync)
    path = scratch_csv()
    try:
        state.snapshot_hashes_csv(sync, path, keys=keys_sql)
        mirror.update(path, was=was, digest=digest, version=st.version if st else 0,
                      rows=int(digest.split(":")[0]))
    finally:
        path.unlink(missing_ok=True)


def key_checks(away: Away, key_label: str) -> int:
    """The model's rows, counted on the warehouse; null or duplicate keys stop the sync, named."""
    dialect, sync, con = away.location.dialect, away.sync, away.con
    assert dialect is not None
    stats = away.warehouse.query(dialect.key_stats(away.sql, sync.primary_key))
    total, nulls, distinct = (int(x) for x in stats[0])
    if nulls or distinct != total - nulls:
        away.warehouse.land_query(con, dialect.key_problems(away.sql, sync.primary_key), PROBLEMS, model=sync.model)
        diff.check_keys(con, PROBLEMS, key_label, sync=sync.name, model=away.model)     # raises, naming keys
    return total


def one_value_per_group(away: Away, group: str, field: str, *, label: str, why: str) -> None:
    """diff.check_one_value_per_group, found on the warehouse: only the conflicting groups' values travel."""
    dialect, sync, con = away.location.dialect, away.sync, away.con
    if dialect is None:
        diff.check_one_value_per_group(con, _in_process_source(away), group, field, sync=sync.name, label=label,
                                       why=why, model=away.model)
        return
    pairs = away.extra([group, field])
    if len(pairs) != 2:
        return          # a constant: one value for every row
    away.warehouse.land_query(con, dialect.values_per_group(away.sql, pairs[0], pairs[1]), PROBLEMS,
                              model=sync.model)
    diff.check_one_value_per_group(con, PROBLEMS, group, field, sync=sync.name, label=label, why=why,
                                   model=away.model)


def shared_identity(away: Away, identity: Sequence[str], what: str) -> None:
    """Rows with different keys addressing one destination object stop the sync (diff.check_identity),
    found on the warehouse: only such rows travel (normally none)."""
    dialect, sync, con = away.location.dialect, away.sync, away.con
    if dialect is None:
        diff.check_identity(con, _in_process_source(away), identity, sync=sync.name, what=what, model=away.model)
        return
    pairs = away.extra(identity)
    if len(pairs) != len(identity):
        return          # an identity field that is a constant: every row shares it only if keyed by it
    away.warehouse.land_query(con, dialect.shared_identity(away.sql, sync.primary_key, pairs), PROBLEMS,
                              model=sync.model)
    diff.check_identity(con, PROBLEMS, identity, sync=sync.name, what=what, model=away.model)


def drop_scratch(con: duckdb.DuckDBPyConnection) -> None:
    for table in (HASHED, HASHED_RAW, FETCHED, FETCHED_RAW, PROBLEMS):
        con.execute(f"DROP TABLE IF EXISTS {table}")


class MirrorKeeper:
    """Keeps the warehouse mirrors of the syncs an apply sends (`diff: warehouse`) in step: `begin(sp)`
    before a sync's rows are recorded returns the step to run after its send (None: no mirror)."""

    def __init__(self, project: Project, warehouse: Warehouse, state: State) -> None:
        self.project, self.warehouse, self.state = project, warehouse, state

    def begin(self, plan_id: str, sp: SyncPlan) -> Callable[[], None] | None:
        dialect = self.warehouse.dialect if sp.read.get("diff") == DiffLocation.WAREHOUSE else None
        if dialect is None:
            return None
        was = self.state.snapshot_digest(sp.name)
        mirror = Mirror(self.warehouse, dialect, self.project.warehouse.mirror_schema, sp.name)
        keys = SyncRows.of(self.state.con, plan_id, sp).keys_sql()
        return lambda: update_mirror(mirror, self.state, sp.name, keys, was=was)
