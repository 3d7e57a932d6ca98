"""The diff SQL: a model result against the acknowledged snapshot, in two phases.

Phase 1 compares `(key, row_hash)` only: the model result streams through a FULL JOIN
with the snapshot's keys and hashes, and only the delta (added, changed candidates,
removed) is kept, with its normalised columns. Phase 2 joins just that delta to the
old full rows and renders both sides as JSON, in key order, for the planner to stream.

Both phases read the model through the sync's projection (`projected`): one column per
destination field, named as the destination names it, plus the key as `__key`. So the
snapshot is compared field by field with what the destination holds, a mapping change is a
change of fields, and model columns that no field reads never enter the diff.

Values are normalised before hashing so that a run with no real change plans nothing:
timestamps become ISO-8601 UTC strings, decimals and floats become doubles (NaN and ±Infinity
kept, for the payload rules to flag),
nested values (STRUCT, LIST, MAP, JSON) become canonical JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import duckdb

from engine.destinations.base import Op, is_time_type
from engine.errors import KeyCheckError, PlanError, WarehouseError
from engine.sql import duckdb_setting, first_line, json_path, quote, sql_str
from engine.state import UNKNOWN

DELTA = "memory.main.reflow_delta"
ROWS = "memory.main.reflow_delta_rows"
ROWS_DATA = "memory.main.reflow_delta_rows_data"   # an all-added delta's rows, whose view ROWS renders the JSON
EMPTY_SNAPSHOT = "memory.main.reflow_empty_snapshot"
KEY = "__key"
# keys in natural order where it is cheap: numbers as numbers (1, 2, 10), composite keys (JSON arrays)
# part by part the same way, then the rest as text (a full natural sort, splitting digit runs inside
# text, cost 6x the sort at 10M keys)
_PART = "{'n': coalesce(try_cast(x AS HUGEINT), 170141183460469231731687303715884105727::HUGEINT), 's': x}"
KEY_ORDER = (f"ORDER BY try_cast(__k AS HUGEINT) NULLS LAST, CASE WHEN starts_with(__k, '[') AND json_valid(__k) THEN "
             f"list_transform(json_extract_string(__k, '$[*]'), lambda x: {_PART}) END NULLS LAST, __k")
ISO = "%Y-%m-%dT%H:%M:%S.%gZ"
NESTED = ("STRUCT", "MAP", "UNION", "JSON")


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class DeltaCounts:
    total: int          # rows in the model result
    added: int
    candidates: int     # keys whose hash differs (changed, or only re-hashed)
    removed: int


@dataclass(frozen=True)
class DeltaRow:
    rn: int
    key: str
    op: Op
    new_hash: int | None
    new_row: dict[str, Any] | None
    new_row_json: str | None
    old_row: dict[str, Any] | None
    old_row_json: str | None
    changed: tuple[str, ...] = ()        # changed fields (changed rows only)
    uncertain: bool = False              # an old value is UNKNOWN (a send without a usable answer)
    replaces: dict[str, Any] | None = None   # the removed row this one takes the destination object of




def describe(con: duckdb.DuckDBPyConnection, relation: str, *, model: str, sync: str | None = None) -> list[Column]:
    """The model's columns (the query is planned, not run). `model`: its `model_label`."""
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {relation} AS m").fetchall()
    except duckdb.Error as exc:
        raise model_failed(exc, sync=sync, model=model) from exc
    return [Column(r[0], r[1]) for r in rows]


# errors a model's rows raise when they are computed (a cast failing on one row, a date out of range, a
# bad regular expression), not when the query is planned: DuckDB computes a model lazily, in whichever
# query first reads the row
ROW_ERRORS = (duckdb.DataError, duckdb.ProgrammingError, duckdb.NotSupportedError)


def model_failed(exc: duckdb.Error, *, sync: str | None, model: str) -> WarehouseError:
    """The located error for a model whose query failed: names the sync (when known) and the model
    (`model_label`: its name and file)."""
    who = f"sync '{sync}': " if sync else ""
    return WarehouseError(f"{who}model {model} failed on the warehouse: {first_line(exc)}")


def model_label(name: str, file: str | None) -> str:
    """How errors name a model: `'braze_users' (models/braze_users.sql)`."""
    return f"'{name}' ({file})" if file else f"'{name}'"


def normalized(col: Column, table: str = "") -> str:
    """SQL that renders one column as the value Braze will see, stable across runs."""
    c = table + quote(col.name)
    t = col.type.upper()
    element = _time_element(t)
    if element:             # each timestamp as a scalar one is (ISO text in UTC, to the millisecond)
        return f"to_json(list_transform({c}, lambda __t: {normalized(Column('__t', element))}))"
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        return f"strftime(timezone('UTC', {c}), '{ISO}')"
    if t.startswith("TIMESTAMP"):
        return f"strftime({c}::TIMESTAMP, '{ISO}')"
    if t == "DATE":
        return f"strftime({c}, '%Y-%m-%d')"
    if _is_float(t):
        return f"{c}::DOUBLE + 0.0"         # NaN and ±Infinity stay what they are: the payload rules flag them
    if t in ("TIME", "INTERVAL", "UUID", "BIT") or t.startswith("ENUM") or t.startswith("TIME "):
        return f"{c}::VARCHAR"
    if t == "BLOB":
        return f"hex({c})"
    if t.startswith("MAP"):
        return f"to_json(map_from_entries(list_sort(map_entries({c}))))"
    if t.endswith("]") or t.startswith(NESTED):
        return f"to_json({c})"
    return c


def hashable(col: Column) -> str:
    """A cheap typed form of a column for hashing, equal exactly when `normalized` is equal
    (timestamps in UTC to the millisecond, numbers as doubles, maps sorted, JSON minified):
    formatting strings is left to the delta rows only."""
    c = quote(col.name)
    t = col.type.upper()
    element = _time_element(t)
    if element:
        return f"list_transform({c}, lambda __t: {hashable(Column('__t', element))})"
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        return f"date_trunc('millisecond', timezone('UTC', {c}))"
    if t.startswith("TIMESTAMP"):
        return f"date_trunc('millisecond', {c}::TIMESTAMP)"
    if _is_float(t):
        # finite values and nulls hash as they always did; NaN and ±Infinity (once hashed as null) now
        # hash as themselves, so such a row is looked at again and flagged
        return f"{c}::DOUBLE + 0.0"
    if t.startswith("MAP"):
        return f"map_from_entries(list_sort(map_entries({c})))"
    if t == "JSON":
        return f"to_json({c})"
    return c


def _time_element(t: str) -> str | None:
    """The element type of a list (or fixed-size array) of timestamps, one level deep (`TIMESTAMP WITH TIME
    ZONE[]`, `TIMESTAMP[3]`), whose elements are normalised as timestamps are; None for any other type (a
    deeper list is JSON as it is)."""
    found = re.fullmatch(r"(TIMESTAMP[^\[\]]*)\[\d*\]", t)
    return found[1] if found else None


def _is_float(t: str) -> bool:
    return t in ("FLOAT", "DOUBLE", "REAL", "HUGEINT", "UHUGEINT") or t.startswith("DECIMAL")


def key_expr(primary_key: Sequence[str]) -> str:
    if len(primary_key) == 1:
        return f"{quote(primary_key[0])}::VARCHAR"
    parts = ", ".join(f"{quote(k)}::VARCHAR" for k in primary_key)
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in primary_key)
    return f"CASE WHEN {nulls} THEN NULL ELSE to_json([{parts}])::VARCHAR END"


def hash_expr(columns: Sequence[Column]) -> str:
    """Row hash over the names and values of the columns in name order (reordering columns is no
    change; renaming one, adding or dropping one is, whatever the values)."""
    ordered = sorted(columns, key=lambda c: c.name)
    # the names enter as one 64-bit constant (hashing a long string per row cost ~10% at 10M rows)
    digest = hashlib.sha256(json.dumps([c.name for c in ordered], ensure_ascii=False).encode()).digest()
    names = f"{int.from_bytes(digest[:8], 'big')}::UBIGINT"
    return "hash(" + ", ".join([names] + [hashable(c) for c in ordered]) + ")"


def projected(relation: str, fields: Sequence[tuple[str, str]], primary_key: Sequence[str],
              constants: Sequence[tuple[str, str]] = ()) -> str:
    """The model read through a projection: `__key`, then each field from its model column, then each
    constant field (`Projection.constants`) as its text."""
    cols = "".join(f", m.{quote(column)} AS {quote(field)}" for field, column in fields)
    cols += "".join(f", {sql_str(text)}::VARCHAR AS {quote(field)}" for field, text in constants)
    return f"(SELECT {key_expr(primary_key)} AS {KEY}{cols} FROM {relation} AS m)"


def count_by(con: duckdb.DuckDBPyConnection, relation: str, field: str | None) -> dict[Any, int]:
    """Rows of a projected relation per value of `field` (all rows under None when `field` is None)."""
    group = quote(field) if field else "NULL"
    rows = con.execute(f"SELECT {group} AS g, count(*) FROM {relation} AS m GROUP BY g").fetchall()
    return {g: int(n) for g, n in rows}


def check_keys(con: duckdb.DuckDBPyConnection, relation: str, key_label: str, *, sync: str, model: str = "",
               columns: Sequence[Column] = ()) -> int:
    """Count the rows of a projected relation; stop with samples when its key is null or duplicated.
    With `columns`, every value of those columns is computed too (the model runs to its end, as a plan
    runs it), so a value that fails on one row fails here."""
    every_value = f", bit_xor({hash_expr(columns)})" if columns else ""
    try:
        total, nulls, distinct, *_ = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {KEY} IS NULL), count(DISTINCT {KEY}){every_value} "
            f"FROM {relation} AS m").fetchone() or (0, 0, 0)
    except duckdb.Error as exc:
        raise model_failed(exc, sync=sync, model=model or model_label(sync, None)) from exc
    duplicates = total - nulls - distinct
    if not nulls and not duplicates:
        return int(total)
    problems = []
    if nulls:
        problems.append(f"{nulls} row(s) have a null primary key ({key_label})")
    if duplicates:
        sample = con.execute(
            f"SELECT {KEY} AS k, count(*) AS n FROM {relation} AS m WHERE {KEY} IS NOT NULL "
            f"GROUP BY k HAVING n > 1 ORDER BY n DESC, k LIMIT 10"
        ).fetchall()
        shown = ", ".join(f"{k!r} ×{n}" for k, n in sample)
        problems.append(f"{duplicates} duplicate primary key value(s) ({key_label}); e.g. {shown}")
    raise KeyCheckError(
        f"sync '{sync}': " + "; ".join(problems)
        + ". Nothing was sent. Fix the model so that its primary key is unique and not null."
    )


def check_identity(con: duckdb.DuckDBPyConnection, relation: str, fields: Sequence[str], *, sync: str,
                   what: str, model: str = "") -> None:
    """Two live rows must not address one destination object (e.g. two keys, one external_id): their
    sends would race. Stops the sync with examples."""
    ident = ", ".join(quote(f) for f in fields)
    not_null = " AND ".join(f"{quote(f)} IS NOT NULL" for f in fields)
    try:
        found = con.execute(
            f"""SELECT to_json([{ident}])::VARCHAR AS v, count(*) AS n, list({KEY} ORDER BY {KEY})[1:3]
                FROM {relation} AS m WHERE {not_null} GROUP BY ALL HAVING count(*) > 1
                ORDER BY n DESC, v LIMIT 5""").fetchall()
    except duckdb.Error as exc:
        raise model_failed(exc, sync=sync, model=model or model_label(sync, None)) from exc
    if not found:
        return
    names = ", ".join(fields)
    shown = "; ".join(f"{names} {_show_values(v)}: keys {', '.join(map(str, keys))}"
                      + (f" and {n - len(keys)} more" if n > len(keys) else "") for v, n, keys in found)
    raise PlanError(f"sync '{sync}': model rows with different keys address the same {what} ({shown}); their "
                    "sends would race. Nothing was sent for this sync. Make the model return one row per "
                    f"{names}, or use it as the primary key.")


def check_one_value_per_group(con: duckdb.DuckDBPyConnection, relation: str, group: str, field: str, *,
                              sync: str, label: str, why: str, model: str = "") -> None:
    """The rows of one value of `group` must agree on `field` (a cohort's name): stops the sync with
    examples otherwise. A null `field` is a value of its own. `label`: how the plan names the two (the
    model's columns), `why`: what a second value would do in the destination."""
    g, f = quote(group), quote(field)
    try:
        found = con.execute(
            f"""SELECT {g}::VARCHAR AS g, list(DISTINCT coalesce(to_json({f})::VARCHAR, 'null'))
                FROM {relation} AS m WHERE {g} IS NOT NULL GROUP BY g
                HAVING count(DISTINCT coalesce(to_json({f})::VARCHAR, 'null')) > 1 ORDER BY g LIMIT 5""").fetchall()
    except duckdb.Error as exc:
        raise model_failed(exc, sync=sync, model=model or model_label(sync, None)) from exc
    if not found:
        return

    def spelled(vs: list[str]) -> str:
        ordered = sorted(vs, key=lambda v: (v == "null", str(json.loads(v))))
        return ", ".join(ordered[:3]) + (f" and {len(vs) - 3} more" if len(vs) > 3 else "")

    shown = "; ".join(f"{g!r}: {spelled(vs)}" for g, vs in found)
    raise PlanError(f"sync '{sync}': model rows of one {label} ({shown}); {why}. Nothing was sent for this sync. "
                    "Make the model return one value per group.")


def _show_values(text: str) -> str:
    values = json.loads(text)
    return ", ".join(repr(v) for v in values)


def empty_snapshot(con: duckdb.DuckDBPyConnection) -> str:
    """An empty snapshot to diff against when a sync starts over (a new destination)."""
    con.execute(f"CREATE OR REPLACE TABLE {EMPTY_SNAPSHOT} (key VARCHAR, row_hash UBIGINT, row_json VARCHAR)")
    return EMPTY_SNAPSHOT


def compute_delta(con: duckdb.DuckDBPyConnection, relation: str, columns: Sequence[Column],
                  key_label: str, snapshot: str, *, sync: str, include_removed: bool = True,
                  model: str = "", hashed: bool = False) -> DeltaCounts:
    """Phase 1: keep only keys that are new, gone, or whose hash differs (with the snapshot row's
    rowid, so phase 2 fetches old rows without scanning the snapshot again). `relation` is a
    projected relation (`projected`): `__key` and one column per field, described by `columns`.

    Append-only syncs (events, purchases) pass include_removed=False: a sent event that leaves
    the model is history, not a removal; its key stays in the snapshot so it is never re-sent.

    Null and duplicate keys stop the sync. With removed rows in the delta this costs no extra pass:
    the snapshot's keys are unique, so the model's matched rows (all rows but the added ones) must
    number exactly the snapshot's matched keys (all but the removed ones), and the added keys must
    be distinct and not null; only a mismatch runs the full check, which names the keys.

    `hashed`: `relation` holds `__key` and `__hash` computed on the warehouse (diff: hashes / warehouse),
    no values: the delta keeps keys and hashes only, until `fill_delta` adds the fetched values."""
    if not include_removed:
        total = check_keys(con, relation, key_label, sync=sync, model=model)
    else:
        try:
            row = con.execute(f"SELECT count(*) FROM {relation} AS m").fetchone()
        except duckdb.Error as exc:
            raise model_failed(exc, sync=sync, model=model or model_label(sync, None)) from exc
        total = int(row[0]) if row else 0
    removed_filter = "" if include_removed else " AND n.__key IS NOT NULL"
    # values are rendered (ISO timestamps, JSON) after the join, for the delta rows only
    cols = "" if hashed else "".join(f", {normalized(c, 'n.')} AS {quote(c.name)}" for c in columns)
    rows = (f"SELECT {KEY}, __hash FROM {relation} AS m" if hashed else
            f"SELECT {KEY}, {hash_expr(columns)} AS __hash, m.* EXCLUDE ({KEY}) FROM {relation} AS m")
    con.execute(f"DROP TABLE IF EXISTS {DELTA}")
    # the snapshot's (key, hash, rowid) is the hash join's build side, as written: DuckDB's side
    # flipping would build the wide model side when the two have the same row count (the steady
    # state), which measured 2.5x slower at 10M rows
    with _optimizer_disabled(con, "build_side_probe_side"), model_rows(sync=sync, model=model or model_label(sync, None)):
        con.execute(f"""
            CREATE TABLE {DELTA} AS
            SELECT CASE WHEN s.key IS NULL THEN 'added' WHEN n.__key IS NULL THEN 'removed' ELSE 'changed' END AS __op,
                   coalesce(n.__key, s.key) AS __k, n.__hash, s.__rid{cols}
            FROM ({rows}) AS n
            FULL JOIN (SELECT key, row_hash, rowid AS __rid FROM {snapshot}) AS s ON n.__key = s.key
            -- a snapshot row whose hash is unknown (NULL: an unknown outcome, a DuckDB upgrade) that left
            -- the model is a removal too (its NULL hash is not distinct from the missing model row's)
            WHERE (n.__hash IS DISTINCT FROM s.row_hash OR n.__key IS NULL){removed_filter}""")
    row = con.execute(
        f"""SELECT count(*) FILTER (WHERE __op = 'added'), count(*) FILTER (WHERE __op = 'changed'),
                   count(*) FILTER (WHERE __op = 'removed'), count(*) FILTER (WHERE __op = 'added' AND __k IS NULL),
                   count(DISTINCT __k) FILTER (WHERE __op = 'added'), (SELECT count(*) FROM {snapshot})
            FROM {DELTA}"""
    ).fetchone() or (0, 0, 0, 0, 0, 0)
    added, candidates, removed, null_keys, distinct_added, snapshot_rows = (int(x) for x in row)
    if include_removed and (null_keys or distinct_added != added - null_keys
                            or total - added != snapshot_rows - removed):
        check_keys(con, relation, key_label, sync=sync, model=model)        # raises, naming the keys
    return DeltaCounts(total=total, added=added, candidates=candidates, removed=removed)


def delta_from_warehouse(con: duckdb.DuckDBPyConnection, found: str, snapshot: str, total: int, *,
                         include_removed: bool) -> DeltaCounts:
    """Phase 1's result computed on the warehouse (`found`: `__in_model` y|n, `__key`, `__hash` as 16 hex
    digits, for the keys whose hash differs from the mirror's) made a delta against the local snapshot,
    which stays the truth: a key is added when the snapshot lacks it, removed when the model lacks it and
    the snapshot has it, changed when both have it and the hashes differ."""
    hashed = "CASE WHEN w.__in_model = 'y' THEN ('0x' || w.__hash)::UBIGINT END"
    removed = "(w.__in_model = 'n' AND s.key IS NOT NULL)" if include_removed else "false"
    con.execute(f"DROP TABLE IF EXISTS {DELTA}")
    con.execute(f"""
        CREATE TABLE {DELTA} AS
        SELECT CASE WHEN s.key IS NULL THEN 'added' WHEN w.__in_model = 'n' THEN 'removed' ELSE 'changed' END AS __op,
               w.__key AS __k, {hashed} AS __hash, s.__rid
        FROM {found} AS w LEFT JOIN (SELECT key, row_hash, rowid AS __rid FROM {snapshot}) AS s ON s.key = w.__key
        WHERE (w.__in_model = 'y' AND {hashed} IS DISTINCT FROM s.row_hash) OR {removed}""")
    row = con.execute(f"SELECT count(*) FILTER (WHERE __op = 'added'), count(*) FILTER (WHERE __op = 'changed'), "
                      f"count(*) FILTER (WHERE __op = 'removed') FROM {DELTA}").fetchone() or (0, 0, 0)
    return DeltaCounts(total=total, added=int(row[0]), candidates=int(row[1]), removed=int(row[2]))


def delta_keys(con: duckdb.DuckDBPyConnection) -> tuple[str, int]:
    """SQL selecting (`__k`) the keys whose rows phase 2 needs in full (added and changed), and how many."""
    row = con.execute(f"SELECT count(*) FROM {DELTA} WHERE __op <> 'removed'").fetchone()
    return f"SELECT __k FROM {DELTA} WHERE __op <> 'removed'", int(row[0]) if row else 0


def fill_delta(con: duckdb.DuckDBPyConnection, fetched: str, columns: Sequence[Column]) -> int:
    """After a hashed phase 1: the delta's added and changed rows take their values (and the hash the
    warehouse computed over those very values) from `fetched` (a projected relation with `__hash`). A
    key the fetch no longer found (deleted on the warehouse between the two reads) leaves the delta:
    the next plan sees it as it is then. Returns how many left."""
    cols = "".join(f", {normalized(c, 'f.')} AS {quote(c.name)}" for c in columns)
    before = con.execute(f"SELECT count(*) FROM {DELTA}").fetchone()
    con.execute(f"""CREATE OR REPLACE TABLE {DELTA} AS
        SELECT d.__op, d.__k, coalesce(f.__hash, d.__hash) AS __hash, d.__rid{cols}
        FROM {DELTA} AS d LEFT JOIN {fetched} AS f ON f.{KEY} = d.__k
        WHERE d.__op = 'removed' OR f.{KEY} IS NOT NULL""")
    after = con.execute(f"SELECT count(*) FROM {DELTA}").fetchone()
    return (int(before[0]) if before else 0) - (int(after[0]) if after else 0)


@contextlib.contextmanager
def model_rows(*, sync: str, model: str) -> Iterator[None]:
    """While a query computes the model's rows: their errors (ROW_ERRORS) are the model's."""
    try:
        yield
    except ROW_ERRORS as exc:
        raise model_failed(exc, sync=sync, model=model) from exc


@contextlib.contextmanager
def _optimizer_disabled(con: duckdb.DuckDBPyConnection, name: str) -> Iterator[None]:
    row = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    before = str(row[0]) if row and row[0] else ""
    names = [n for n in before.split(",") if n.strip()] + [name]
    with duckdb_setting(con, "disabled_optimizers", sql_str(",".join(names)), "''"):
        yield


def prepare_rows(con: duckdb.DuckDBPyConnection, columns: Sequence[Column], snapshot: str,
                 old_columns: Sequence[str] = (), unknown: Sequence[str] = (), *, all_added: bool = False,
                 stored_in_order: bool = True) -> int:
    """Phase 2: join the delta to the old full rows; render new rows as JSON; list the changed
    fields (`old_columns`: fields the snapshot holds that the projection dropped, compared as null;
    `unknown`: fields whose old values Braze may hold although the snapshot does not, always changed);
    number rows by key. `__uncertain` marks changed rows with an UNKNOWN old value; `__replaces` and
    `__collapsed` start empty (see `collapse`).
    `__old_kept` is what a plan keeps of the old row: the old values of the changed fields of a
    changed row, the whole old row of a removed one.

    The result keeps the normalised model columns too, so destinations can build payloads in SQL.

    `all_added`: the delta holds added rows only (a first run: the snapshot is empty), see `_prepare_added`;
    then `stored_in_order=False` leaves the rows in the model's order (numbered in key order all the same)."""
    if all_added:
        return _prepare_added(con, columns, stored_in_order)
    new_row = f"CASE WHEN d.__op <> 'removed' THEN {_new_row(columns, 'd.')} END" if columns else "'{}'"
    names = [c.name for c in columns]
    compared = names + [c for c in old_columns if c not in names]
    n = len(compared)
    # each old row is parsed once for all its fields (a list of paths); values compare as canonical JSON
    # text; `__ci` lists the positions that differ, from which both the changed names and the kept
    # old values are read
    new_values = ", ".join(f"coalesce(to_json(d.{quote(c)})::VARCHAR, 'null')" if c in names else "'null'"
                           for c in compared)
    paths = ", ".join(json_path(c) for c in compared)
    pairs = (f"CASE WHEN d.__op = 'changed' THEN [{new_values}] END AS __nv, "
             f"CASE WHEN d.__op = 'changed' THEN json_extract(s.row_json, [{paths}]) END AS __oj") if n else \
        "NULL::VARCHAR[] AS __nv, NULL::JSON[] AS __oj"
    names_list = f"([{', '.join(sql_str(c) for c in compared)}]::VARCHAR[])"
    positions = [str(i + 1) for i, c in enumerate(compared) if c in unknown]
    forced = f" OR list_contains([{', '.join(positions)}], i)" if positions else ""
    unknown_old = (f"list_contains(list_transform(__oj, lambda x: json_extract_string(x, '$')), {sql_str(UNKNOWN)})"
                   if n else "false")
    _drop_rows(con)
    con.execute(
        f"""CREATE TABLE {ROWS} AS
        SELECT o.__rn, __k AS __key, __op, __hash, __new_row, __old_row,
               CASE WHEN __op = 'changed' THEN list_transform(__ci, lambda i: {names_list}[i])
                    ELSE []::VARCHAR[] END AS __changed,
               CASE WHEN __op = 'changed' THEN '{{' || array_to_string(list_transform(__ci,
                        lambda i: to_json({names_list}[i])::VARCHAR || ':' || coalesce(__oj[i]::VARCHAR, 'null')), ',')
                        || '}}'
                    WHEN __op = 'removed' THEN __old_row END AS __old_kept,
               coalesce(__op = 'changed' AND {unknown_old}, false) AS __uncertain,
               NULL::VARCHAR AS __replaces, false AS __collapsed,
               * EXCLUDE (__k, __op, __hash, __rid, __nv, __oj, __ci, __new_row, __old_row)
        FROM (SELECT *, CASE WHEN __op = 'changed' THEN list_filter(range(1, {n + 1}),
                          lambda i: __nv[i] <> coalesce(__oj[i]::VARCHAR, 'null'){forced}) END AS __ci
              FROM (SELECT d.*, {new_row} AS __new_row, s.row_json AS __old_row, {pairs}
                    FROM {DELTA} AS d LEFT JOIN {snapshot} AS s ON s.rowid = d.__rid)) AS x
        -- numbered in key order by sorting the keys alone (a window over the wide rows costs more),
        -- stored in that order so that plan rows are written in seq order; numeric keys in numeric
        -- order (1, 2, 10), the others as text
        JOIN (SELECT __k AS __ok, row_number() OVER ({KEY_ORDER}) AS __rn FROM {DELTA}) AS o ON o.__ok = x.__k
        ORDER BY o.__rn"""
    )
    con.execute(f"DROP TABLE IF EXISTS {DELTA}")
    row = con.execute(f"SELECT count(*) FROM {ROWS}").fetchone()
    return int(row[0]) if row else 0


def rendered_row(columns: Sequence[tuple[str, str]], table: str) -> str:
    """SQL: the JSON of a row whose fields (name, model type) hold the model's values as they came
    (not normalised), prefixed by `table`: the same text as `_new_row` over the normalised values."""
    return _row_json([(name, normalized(Column(name, kind), table)) for name, kind in columns])


def held_select(relation: str, columns: Sequence[Column], *, hashed: bool, refused: str | None = None,
                judged: Sequence[tuple[str, str]] = (), typed_times: bool = False) -> str:
    """SQL: a first run's rows as they are held (`SyncRows.hold`): `__key`, `__hash`, each field's value
    as the model gave it, and `__refused`, from a projected relation (`hashed`: one that holds `__hash`,
    computed on the warehouse). `refused` (SQL over `m`): rows held blank, every value null, so that what
    they hold (a secret) is never written. `judged`: (name, SQL) columns computed over each row as the
    delta rows a destination's `SqlItems` read (`r`: normalised values, `__op` 'added'), held beside it
    (a send_all's payload checks, computed once, as the rows are read); with `typed_times`
    (`SqlItems.typed_times`), `r` holds a TIMESTAMP or DATE column's value as the model gave it."""
    # a hash computed here (not on the warehouse) is left to whoever reads the held rows (`held_hash`): the
    # held values are the model's, of the same types, so the hash over them is the same, and the plan
    # does not pay for it (1 s of 10 at 10M rows)
    hashing = "m.__hash" if hashed else "NULL::UBIGINT"
    if refused is None:
        values = "".join(f", m.{quote(c.name)}" for c in columns)
        held = f"SELECT m.{KEY} AS {KEY}, {hashing} AS __hash{values}, false AS __refused FROM {relation} AS m"
    else:
        values = "".join(f", CASE WHEN NOT r.__refused THEN r.{quote(c.name)} END AS {quote(c.name)}" for c in columns)
        held = (f"SELECT CASE WHEN NOT r.__refused THEN r.{KEY} END AS {KEY}, "
                f"CASE WHEN NOT r.__refused THEN r.__hash END AS __hash{values}, r.__refused "
                f"FROM (SELECT m.*{'' if hashed else f', {hashing} AS __hash'}, ({refused}) AS __refused "
                f"FROM {relation} AS m) AS r")
    if not judged:
        return held
    # the model's values kept under other names while the normalised ones take the fields' names
    raws = "".join(f", m.{quote(c.name)} AS __raw_{i}" for i, c in enumerate(columns))
    back = "".join(f", r.__raw_{i} AS {quote(c.name)}" for i, c in enumerate(columns))
    extra = "".join(f", ({sql}) AS {quote(name)}" for name, sql in judged)
    return (f"SELECT r.{KEY}, r.__hash{back}, r.__refused{extra} FROM (SELECT m.{KEY}, m.__hash, m.__refused{raws}"
            f"{_normalised(columns, 'm.', typed_times=typed_times)}, {_ADDED} FROM ({held}) AS m) AS r")


# the delta-row columns of an added row (`prepare_rows`' names) that a destination's SQL may read
_ADDED = ("'added' AS __op, []::VARCHAR[] AS __changed, NULL::VARCHAR AS __old_row, NULL::VARCHAR AS __old_kept, "
          "false AS __uncertain, NULL::VARCHAR AS __replaces, false AS __collapsed")


def _normalised(columns: Sequence[Column], table: str, *, typed_times: bool = False) -> str:
    """SQL: each column normalised under its name (`typed_times`: a TIMESTAMP or DATE one as it is)."""
    return "".join(f", {table}{quote(c.name)}" if typed_times and is_time_type(c.type)
                   else f", {normalized(c, table)} AS {quote(c.name)}" for c in columns)


def held_hash(columns: Sequence[tuple[str, str]], hashed: bool) -> str:
    """SQL: a held row's hash, over the held table `h`: the warehouse's, held (`hashed`), or computed over
    the held values as phase 1 computes it over the model's (`held_select` leaves it to the reader)."""
    if hashed:
        return "h.__hash"
    return hash_expr([Column(name, kind) for name, kind in columns])


def held_delta(table: str, columns: Sequence[tuple[str, str]], where: str = "true",
               judged: Sequence[str] = (), hashed: bool = True) -> str:
    """SQL: held rows (table `table`, written by `held_select`) as the delta rows a destination's
    `SqlItems` read: each field normalised as phase 2 gives it, the other delta columns as an added row
    has them, `__rowid` numbering the rows, `__new_row` the row's JSON (`rendered_row`'s text),
    `__refused` and the `judged` columns as held; only the rows matching `where` (over the held table,
    `h`: e.g. a rowid range, read before anything is rendered)."""
    cols = [Column(name, kind) for name, kind in columns]
    carried = "".join(f", h.{quote(name)}" for name in judged)
    return (f"SELECT r.*, {_new_row(cols, 'r.')} AS __new_row FROM ("
            f"SELECT h.rowid AS __rowid, h.{KEY} AS __key, {held_hash(columns, hashed)} AS __hash, {_ADDED}, "
            f"h.__refused{carried}"
            f"{_normalised(cols, 'h.')} FROM {table} AS h WHERE {where}) AS r")


def _new_row(columns: Sequence[Column], table: str) -> str:
    """SQL: the new row as JSON (what the snapshot records once the row is acknowledged), from the
    normalised values prefixed by `table`."""
    return _row_json([(c.name, f"{table}{quote(c.name)}") for c in columns])


def _row_json(values: Sequence[tuple[str, str]]) -> str:
    """SQL: a row's JSON text from (field name, value SQL) pairs: the one spelling of it, whether phase 2
    renders it or a held baseline's row is rendered later (they must be the same text)."""
    if not values:
        return "'{}'"
    return "to_json(struct_pack(" + ", ".join(f"{quote(name)} := {value}" for name, value in values) + "))::VARCHAR"


def _prepare_added(con: duckdb.DuckDBPyConnection, columns: Sequence[Column], stored_in_order: bool = True) -> int:
    """Phase 2 of a delta of added rows only (a first run): no old rows to join, no changed fields, no
    old values to keep. The rows are stored typed, in key order (`ROWS_DATA`: sorting the typed rows
    costs a fraction of sorting them with their JSON), and `ROWS` is a view over them that renders
    each row's JSON where a query reads it: the plan rows' INSERT renders each row once, as it writes
    it, instead of the JSON being materialised (and, at 10M rows, spilled) first. Same columns, same
    values as `prepare_rows` gives such a delta.

    `stored_in_order=False` (a baseline: its plan rows are never read back by seq range, as a send's are)
    skips sorting the rows themselves: at 10M rows, under a 1GB memory limit, that sort spilled and cost as
    much as the rest of phase 2; `stream_rows_marked` then reads the few rows left to Python."""
    _drop_rows(con)
    con.execute(
        f"""CREATE TABLE {ROWS_DATA} AS
        SELECT o.__rn, d.__k AS __key, d.__op, d.__hash, NULL::VARCHAR AS __replaces, false AS __collapsed,
               d.* EXCLUDE (__k, __op, __hash, __rid)
        FROM {DELTA} AS d
        JOIN (SELECT __k AS __ok, row_number() OVER ({KEY_ORDER}) AS __rn FROM {DELTA}) AS o ON o.__ok = d.__k
        {"ORDER BY o.__rn" if stored_in_order else ""}""")
    con.execute(f"DROP TABLE IF EXISTS {DELTA}")
    con.execute(
        f"""CREATE VIEW {ROWS} AS
        SELECT __rn, __key, __op, __hash, {_new_row(columns, "d.")} AS __new_row, NULL::VARCHAR AS __old_row,
               []::VARCHAR[] AS __changed, NULL::VARCHAR AS __old_kept, false AS __uncertain, __replaces,
               __collapsed, d.* EXCLUDE (__rn, __key, __op, __hash, __replaces, __collapsed)
        FROM {ROWS_DATA} AS d""")
    row = con.execute(f"SELECT count(*) FROM {ROWS_DATA}").fetchone()
    return int(row[0]) if row else 0


def _drop_rows(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the delta rows: a table, or the view over ROWS_DATA of an all-added delta."""
    view = con.execute("SELECT count(*) FROM duckdb_views() WHERE database_name = 'memory' AND schema_name = 'main' "
                       "AND view_name = 'reflow_delta_rows'").fetchone()
    con.execute(f"DROP {'VIEW' if view and view[0] else 'TABLE'} IF EXISTS {ROWS}")
    con.execute(f"DROP TABLE IF EXISTS {ROWS_DATA}")


def _rows_table(con: duckdb.DuckDBPyConnection) -> str:
    """The table an UPDATE of the delta rows' `__replaces` / `__collapsed` writes to."""
    data = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'memory' AND schema_name = 'main' "
                       "AND table_name = 'reflow_delta_rows_data'").fetchone()
    return ROWS_DATA if data and data[0] else ROWS


def stream_rows(con: duckdb.DuckDBPyConnection, count: int, *, where: str = "true",
                chunk: int = 5000, first: int = 1) -> Iterator[list[DeltaRow]]:
    """Delta rows matching `where` numbered `first` to `count`, in key order, `chunk` numbers at a time
    (never the whole delta in Python)."""
    for start in range(first, count + 1, chunk):
        rows = con.execute(
            f"SELECT __rn, __key, __op, __hash, __new_row, __old_row, __changed, __uncertain, __replaces "
            f"FROM {ROWS} AS r WHERE __rn >= ? AND __rn < ? AND ({where}) ORDER BY __rn",
            [start, start + chunk],
        ).fetchall()
        yield [
            DeltaRow(rn=r[0], key=r[1], op=Op(r[2]), new_hash=r[3],
                     new_row=json.loads(r[4]) if r[4] is not None else None, new_row_json=r[4],
                     old_row=json.loads(r[5]) if r[5] is not None else None, old_row_json=r[5],
                     changed=tuple(r[6] or ()), uncertain=bool(r[7]),
                     replaces=json.loads(r[8]) if r[8] is not None else None)
            for r in rows
        ]


def stream_rows_marked(con: duckdb.DuckDBPyConnection, *, chunk: int = 5000) -> Iterator[list[DeltaRow]]:
    """The marked delta rows (`mark_rows`), in key order, `chunk` at a time, each chunk read between the
    first and last numbers it holds: for rows not stored in key order, one pass per chunk of marked rows
    rather than one per `chunk` numbers of the whole delta."""
    bounds = con.execute(
        f"""SELECT min(__rn), max(__rn) FROM (SELECT __rn, (row_number() OVER (ORDER BY __rn) - 1) // {int(chunk)} AS g
            FROM {MARKED_TABLE}) GROUP BY g ORDER BY g""").fetchall()
    for low, high in bounds:
        yield from stream_rows(con, int(high), where=f"__rn >= {int(low)} AND {MARKED}", chunk=int(high) - int(low) + 1,
                               first=int(low))


def collapse(con: duckdb.DuckDBPyConnection, identity: Sequence[str]) -> int:
    """One destination object per plan row. A row that comes to address an object (an added row, or a
    changed row whose identity fields changed) takes it over from the row that addressed it before (a
    removed row, or a changed row that moved to another object): `__replaces` holds that row's old
    values, so fields it held and the new row leaves null are unset. A removal taken over is not sent
    (`__collapsed`): it would race the new row's values. Returns how many removals collapsed."""
    if not identity:
        return 0
    moved = f"list_has_any(__changed, [{', '.join(sql_str(f) for f in identity)}])"
    con.execute(f"""CREATE OR REPLACE TABLE {PAIRS_TABLE} AS
        SELECT r.__rn AS old_rn, any_value(r.__op) AS old_op, any_value(l.__rn) AS live_rn,
               any_value(r.__old_row) AS old_row
        FROM (SELECT * FROM {ROWS} WHERE __op = 'removed' OR (__op = 'changed' AND {moved})) AS r
        JOIN (SELECT * FROM {ROWS} WHERE __op = 'added' OR (__op = 'changed' AND {moved})) AS l
          ON l.__rn <> r.__rn AND {_same_object(identity, "r.__old_row")}
        GROUP BY r.__rn""")
    row = con.execute(f"SELECT count(*) FILTER (WHERE old_op = 'removed'), count(*) FROM {PAIRS_TABLE}").fetchone()
    collapsed, pairs = (int(row[0]), int(row[1])) if row else (0, 0)
    if collapsed:
        con.execute(f"UPDATE {_rows_table(con)} SET __collapsed = true WHERE __rn IN "
                    f"(SELECT old_rn FROM {PAIRS_TABLE} WHERE old_op = 'removed')")
    if pairs:
        con.execute(f"UPDATE {_rows_table(con)} AS x SET __replaces = p.old_row FROM {PAIRS_TABLE} AS p "
                    "WHERE x.__rn = p.live_rn")
    con.execute(f"DROP TABLE IF EXISTS {PAIRS_TABLE}")
    return collapsed


def _same_object(identity: Sequence[str], old_json: str) -> str:
    """SQL: the live delta row `l` (its identity fields all set) addresses the object the JSON row
    `old_json` addressed."""
    same = " AND ".join(f"coalesce(to_json(l.{quote(f)})::VARCHAR, 'null') = "
                        f"coalesce(json_extract({old_json}, {json_path(f)})::VARCHAR, 'null')" for f in identity)
    return " AND ".join(f"l.{quote(f)} IS NOT NULL" for f in identity) + " AND " + same


def replaces_from(con: duckdb.DuckDBPyConnection, old_snapshot: str, identity: Sequence[str]) -> int:
    """A sync starting over in the same place (its delta diffed against an empty snapshot): each live row
    whose identity fields equal those of a row of the old snapshot addresses the object that row
    addressed, and takes over its old values (`__replaces`). Returns how many rows did."""
    con.execute(f"""UPDATE {_rows_table(con)} AS x SET __replaces = m.old_row FROM (
                        SELECT l.__rn, any_value(o.row_json) AS old_row FROM {ROWS} AS l JOIN {old_snapshot} AS o
                        ON l.__op <> 'removed' AND {_same_object(identity, "o.row_json")} GROUP BY l.__rn) AS m
                    WHERE x.__rn = m.__rn""")
    row = con.execute(f"SELECT count(*) FROM {ROWS} WHERE __replaces IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


PAIRS_TABLE = "memory.main.reflow_collapsed_pairs"
MARKED_TABLE = "memory.main.reflow_marked_rows"
MARKED = f"__rn IN (SELECT __rn FROM {MARKED_TABLE})"


def mark_rows(con: duckdb.DuckDBPyConnection, where: str) -> int:
    """Evaluate a (possibly costly) condition over the delta rows once; `MARKED` then selects them."""
    con.execute(f"CREATE OR REPLACE TABLE {MARKED_TABLE} AS SELECT __rn FROM {ROWS} AS r WHERE {where}")
    row = con.execute(f"SELECT count(*) FROM {MARKED_TABLE}").fetchone()
    return int(row[0]) if row else 0


def drop_scratch(con: duckdb.DuckDBPyConnection) -> None:
    _drop_rows(con)
    for table in (DELTA, MARKED_TABLE, EMPTY_SNAPSHOT, PAIRS_TABLE):
        con.execute(f"DROP TABLE IF EXISTS {table}")



class Delta:
    """One sync's diff on `con`, as a value: it holds its scratch relations and runs its phases in order.

        with Delta(con, sync="users", model=label) as delta:
            counts = delta.compare(source, fields, key_label, snapshot)   # phase 1: keys and hashes
            n = delta.render(unset, remapped)          # phase 2: the delta rows, `delta.rows` (SQL alias r)
            delta.collapse(identity); delta.take_over(old_snapshot, identity)     # optional
            delta.mark(where); delta.stream_marked()   # the rows a caller takes in Python, in key order
        # leaving the block drops every scratch relation, whatever happened

    A phase asked for out of order is a bug in the caller: RuntimeError. So is a second Delta on a connection
    that has one open (their scratch relations share names)."""

    _open: ClassVar[set[int]] = set()       # connections with a Delta open

    def __init__(self, con: duckdb.DuckDBPyConnection, *, sync: str, model: str = "") -> None:
        if id(con) in Delta._open:
            raise RuntimeError("a Delta is already open on this connection; close it first")
        Delta._open.add(id(con))
        self.con = con
        self.sync = sync
        self.model = model
        self._phase = "new"
        self._snapshot = ""
        self._columns: Sequence[Column] = ()
        self._marked = -1
        self._count = 0
        self._counts: DeltaCounts | None = None
        self._in_order = True

    def __enter__(self) -> Delta:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _need(self, phase: str, step: str) -> None:
        if self._phase != phase:
            raise RuntimeError(f"Delta.{step}() needs phase '{phase}', the delta is '{self._phase}'")

    def empty_snapshot(self) -> str:
        """An empty snapshot to compare with (a sync starting over), dropped with the delta."""
        self._need("new", "empty_snapshot")
        return empty_snapshot(self.con)

    def compare(self, source: str, columns: Sequence[Column], key_label: str, snapshot: str, *,
                include_removed: bool = True, hashed: bool = False) -> DeltaCounts:
        """Phase 1 (`compute_delta`). `hashed`: `source` holds the warehouse's (key, hash) pairs only;
        `fill` must then bring the delta rows' values before `render`."""
        self._need("new", "compare")
        counts = compute_delta(self.con, source, columns, key_label, snapshot, sync=self.sync,
                               include_removed=include_removed, model=self.model, hashed=hashed)
        self._snapshot, self._columns, self._counts = snapshot, columns, counts
        self._phase = "hashed" if hashed else "compared"
        return counts

    def compare_found(self, found: str, columns: Sequence[Column], snapshot: str, total: int, *,
                      include_removed: bool = True) -> DeltaCounts:
        """Phase 1 run on the warehouse (`delta_from_warehouse`); `fill` must follow, as after a hashed
        compare."""
        self._need("new", "compare_found")
        counts = delta_from_warehouse(self.con, found, snapshot, total, include_removed=include_removed)
        self._snapshot, self._columns, self._phase, self._counts = snapshot, columns, "hashed", counts
        return counts

    def needed_keys(self) -> tuple[str, int]:
        """After a hashed compare: SQL selecting `__k`, the keys to fetch in full, and how many."""
        self._need("hashed", "needed_keys")
        return delta_keys(self.con)

    def fill(self, fetched: str, counts: DeltaCounts) -> DeltaCounts:
        """After a hashed compare: the delta rows' values from `fetched` (`fill_delta`); returns the
        counts less the keys that vanished between the two reads."""
        self._need("hashed", "fill")
        gone = fill_delta(self.con, fetched, self._columns)
        self._phase = "compared"
        if not gone:
            self._counts = counts
            return counts
        row = self.con.execute(f"SELECT count(*) FILTER (WHERE __op = 'added'), "
                               f"count(*) FILTER (WHERE __op = 'changed') FROM {DELTA}").fetchone() or (0, 0)
        self._counts = DeltaCounts(total=counts.total - gone, added=int(row[0]), candidates=int(row[1]),
                                   removed=counts.removed)
        return self._counts

    def render(self, unset: Sequence[str] = (), remapped: Sequence[str] = (), *, sent: bool = True) -> int:
        """Phase 2 (`prepare_rows`): the delta rows; returns how many. `sent=False`: no plan row of this
        delta is sent (a baseline), so a delta of added rows need not be stored in key order."""
        self._need("compared", "render")
        # a delta of added rows only (a first run) skips what only changed and removed rows need
        added_only = self._counts is not None and not self._counts.candidates and not self._counts.removed
        self._in_order = sent or not added_only
        self._count = prepare_rows(self.con, self._columns, self._snapshot, unset, remapped, all_added=added_only,
                                   stored_in_order=self._in_order)
        self._phase = "rendered"
        return self._count

    @property
    def rows(self) -> str:
        """The delta rows' relation (columns `__rn`, `__key`, `__op`, …; see `prepare_rows`)."""
        self._need("rendered", "rows")
        return ROWS

    def collapse(self, identity: Sequence[str]) -> int:
        self._need("rendered", "collapse")
        return collapse(self.con, identity)

    def take_over(self, old_snapshot: str, identity: Sequence[str]) -> int:
        self._need("rendered", "take_over")
        return replaces_from(self.con, old_snapshot, identity)

    def mark(self, where: str) -> int:
        """Choose the rows `stream_marked` yields (`where` over `r`), evaluated once; returns how many."""
        self._need("rendered", "mark")
        self._marked = mark_rows(self.con, where)
        return self._marked

    def stream_marked(self, chunk: int = 5000) -> Iterator[list[DeltaRow]]:
        self._need("rendered", "stream_marked")
        if self._marked < 0:
            raise RuntimeError("Delta.stream_marked() before mark()")
        if not self._in_order:
            yield from stream_rows_marked(self.con, chunk=chunk)
            return
        yield from stream_rows(self.con, self._count if self._marked else 0, where=MARKED, chunk=chunk)

    def close(self) -> None:
        if self._phase == "closed":
            return
        try:
            drop_scratch(self.con)
        finally:
            self._phase = "closed"
            Delta._open.discard(id(self.con))
