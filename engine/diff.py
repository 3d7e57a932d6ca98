"""The diff SQL: a model result against the acknowledged snapshot, in two phases.

Phase 1 compares `(key, row_hash)` only: the model result streams through a FULL JOIN
with the snapshot's keys and hashes, and only the delta (added, changed candidates,
removed) is kept, with its normalised columns. Phase 2 joins just that delta to the
old full rows and renders both sides as JSON, in key order, for the planner to stream.

Values are normalised before hashing so that a run with no real change plans nothing:
timestamps become ISO-8601 UTC strings, decimals and floats become finite doubles,
nested values (STRUCT, LIST, MAP, JSON) become canonical JSON.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from engine.errors import KeyCheckError, WarehouseError

DELTA = "memory.main.reflow_delta"
ROWS = "memory.main.reflow_delta_rows"
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
    op: str                              # added | changed | removed
    new_hash: int | None
    new_row: dict[str, Any] | None
    new_row_json: str | None
    old_row: dict[str, Any] | None
    old_row_json: str | None
    changed: tuple[str, ...] = ()        # changed model columns (changed rows only)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def describe(con: duckdb.DuckDBPyConnection, relation: str, *, model: str) -> list[Column]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {relation} AS m").fetchall()
    except duckdb.Error as exc:
        raise WarehouseError(f"model '{model}' failed on the warehouse: {_first_line(exc)}") from exc
    return [Column(r[0], r[1]) for r in rows]


def normalized(col: Column, table: str = "") -> str:
    """SQL that renders one column as the value Braze will see, stable across runs."""
    c = table + quote(col.name)
    t = col.type.upper()
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        return f"strftime(timezone('UTC', {c}), '{ISO}')"
    if t.startswith("TIMESTAMP"):
        return f"strftime({c}::TIMESTAMP, '{ISO}')"
    if t == "DATE":
        return f"strftime({c}, '%Y-%m-%d')"
    if _is_float(t):
        return f"CASE WHEN isfinite({c}::DOUBLE) THEN {c}::DOUBLE + 0.0 END"
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
    (timestamps in UTC to the millisecond, numbers as finite doubles, maps sorted, JSON minified):
    formatting strings is left to the delta rows only."""
    c = quote(col.name)
    t = col.type.upper()
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        return f"date_trunc('millisecond', timezone('UTC', {c}))"
    if t.startswith("TIMESTAMP"):
        return f"date_trunc('millisecond', {c}::TIMESTAMP)"
    if _is_float(t):
        return f"CASE WHEN isfinite({c}::DOUBLE) THEN {c}::DOUBLE + 0.0 END"
    if t.startswith("MAP"):
        return f"map_from_entries(list_sort(map_entries({c})))"
    if t == "JSON":
        return f"to_json({c})"
    return c


def _is_float(t: str) -> bool:
    return t in ("FLOAT", "DOUBLE", "REAL", "HUGEINT", "UHUGEINT") or t.startswith("DECIMAL")


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def json_path(name: str) -> str:
    """A JSON path literal selecting one top-level key, whatever characters it has."""
    return sql_str("$." + json.dumps(name))


def key_expr(primary_key: Sequence[str]) -> str:
    if len(primary_key) == 1:
        return f"{quote(primary_key[0])}::VARCHAR"
    parts = ", ".join(f"{quote(k)}::VARCHAR" for k in primary_key)
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in primary_key)
    return f"CASE WHEN {nulls} THEN NULL ELSE to_json([{parts}])::VARCHAR END"


def hash_expr(columns: Sequence[Column]) -> str:
    """Row hash over the columns in name order (reordering columns is no change)."""
    ordered = sorted(columns, key=lambda c: c.name)
    return "hash(" + ", ".join([f"'{len(ordered)}'"] + [hashable(c) for c in ordered]) + ")"


def check_keys(con: duckdb.DuckDBPyConnection, relation: str, primary_key: Sequence[str], *,
               sync: str) -> int:
    """Count rows; stop with samples when a primary key is null or duplicated."""
    key = key_expr(primary_key)
    try:
        total, nulls, distinct = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE k IS NULL), count(DISTINCT k) "
            f"FROM (SELECT {key} AS k FROM {relation} AS m)"
        ).fetchone() or (0, 0, 0)
    except duckdb.Error as exc:
        raise WarehouseError(f"sync '{sync}': model query failed: {_first_line(exc)}") from exc
    duplicates = total - nulls - distinct
    if not nulls and not duplicates:
        return int(total)
    problems = []
    pk = ", ".join(primary_key)
    if nulls:
        problems.append(f"{nulls} row(s) have a null primary key ({pk})")
    if duplicates:
        sample = con.execute(
            f"SELECT k, count(*) AS n FROM (SELECT {key} AS k FROM {relation} AS m) WHERE k IS NOT NULL "
            f"GROUP BY k HAVING n > 1 ORDER BY n DESC, k LIMIT 10"
        ).fetchall()
        shown = ", ".join(f"{k!r} ×{n}" for k, n in sample)
        problems.append(f"{duplicates} duplicate primary key value(s) ({pk}); e.g. {shown}")
    raise KeyCheckError(
        f"sync '{sync}': " + "; ".join(problems)
        + ". Nothing was sent. Fix the model so that its primary key is unique and not null."
    )


def compute_delta(con: duckdb.DuckDBPyConnection, relation: str, columns: Sequence[Column],
                  primary_key: Sequence[str], snapshot: str, *, sync: str,
                  include_removed: bool = True) -> DeltaCounts:
    """Phase 1: keep only keys that are new, gone, or whose hash differs (with the snapshot row's
    rowid, so phase 2 fetches old rows without scanning the snapshot again).

    Append-only syncs (events, purchases) pass include_removed=False: a sent event that leaves
    the model is history, not a removal; its key stays in the snapshot so it is never re-sent.

    Null and duplicate keys stop the sync. With removed rows in the delta this costs no extra pass:
    the snapshot's keys are unique, so the model's matched rows (all rows but the added ones) must
    number exactly the snapshot's matched keys (all but the removed ones), and the added keys must
    be distinct and not null; only a mismatch runs the full check, which names the keys."""
    if not include_removed:
        total = check_keys(con, relation, primary_key, sync=sync)
    else:
        try:
            row = con.execute(f"SELECT count(*) FROM {relation} AS m").fetchone()
        except duckdb.Error as exc:
            raise WarehouseError(f"sync '{sync}': model query failed: {_first_line(exc)}") from exc
        total = int(row[0]) if row else 0
    removed_filter = "" if include_removed else " AND n.__key IS NOT NULL"
    # values are rendered (ISO timestamps, JSON) after the join, for the delta rows only
    cols = "".join(f", {normalized(c, 'n.')} AS {quote(c.name)}" for c in columns)
    con.execute(f"DROP TABLE IF EXISTS {DELTA}")
    # the snapshot's (key, hash, rowid) is the hash join's build side, as written: DuckDB's side
    # flipping would build the wide model side when the two have the same row count (the steady
    # state), which measured 2.5x slower at 10M rows
    with _optimizer_disabled(con, "build_side_probe_side"):
        con.execute(f"""
            CREATE TABLE {DELTA} AS
            SELECT CASE WHEN s.key IS NULL THEN 'added' WHEN n.__key IS NULL THEN 'removed' ELSE 'changed' END AS __op,
                   coalesce(n.__key, s.key) AS __k, n.__hash, s.__rid{cols}
            FROM (SELECT {key_expr(primary_key)} AS __key, {hash_expr(columns)} AS __hash, m.*
                  FROM {relation} AS m) AS n
            FULL JOIN (SELECT key, row_hash, rowid AS __rid FROM {snapshot}) AS s ON n.__key = s.key
            WHERE n.__hash IS DISTINCT FROM s.row_hash{removed_filter}""")
    row = con.execute(
        f"""SELECT count(*) FILTER (WHERE __op = 'added'), count(*) FILTER (WHERE __op = 'changed'),
                   count(*) FILTER (WHERE __op = 'removed'), count(*) FILTER (WHERE __op = 'added' AND __k IS NULL),
                   count(DISTINCT __k) FILTER (WHERE __op = 'added'), (SELECT count(*) FROM {snapshot})
            FROM {DELTA}"""
    ).fetchone() or (0, 0, 0, 0, 0, 0)
    added, candidates, removed, null_keys, distinct_added, snapshot_rows = (int(x) for x in row)
    if include_removed and (null_keys or distinct_added != added - null_keys
                            or total - added != snapshot_rows - removed):
        check_keys(con, relation, primary_key, sync=sync)      # raises, naming the keys
    return DeltaCounts(total=total, added=added, candidates=candidates, removed=removed)


@contextlib.contextmanager
def _optimizer_disabled(con: duckdb.DuckDBPyConnection, name: str) -> Iterator[None]:
    row = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    before = str(row[0]) if row and row[0] else ""
    names = [n for n in before.split(",") if n.strip()] + [name]
    con.execute(f"SET disabled_optimizers = {sql_str(','.join(names))}")
    try:
        yield
    finally:
        con.execute(f"SET disabled_optimizers = {sql_str(before)}")


def prepare_rows(con: duckdb.DuckDBPyConnection, columns: Sequence[Column], snapshot: str,
                 old_columns: Sequence[str] = ()) -> int:
    """Phase 2: join the delta to the old full rows; render new rows as JSON; list the changed
    columns (a column added to or dropped from the model counts as changed); number rows by key.
    `__old_kept` is what a plan keeps of the old row: the old values of the changed fields of a
    changed row, the whole old row of a removed one.

    The result keeps the normalised model columns too, so destinations can build payloads in SQL."""
    struct = ", ".join(f"{quote(c.name)} := d.{quote(c.name)}" for c in columns)
    new_row = f"CASE WHEN d.__op <> 'removed' THEN to_json(struct_pack({struct}))::VARCHAR END" if columns else "'{}'"
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
    con.execute(f"DROP TABLE IF EXISTS {ROWS}")
    con.execute(
        f"""CREATE TABLE {ROWS} AS
        SELECT o.__rn, __k AS __key, __op, __hash, __new_row, __old_row,
               CASE WHEN __op = 'changed' THEN list_transform(__ci, lambda i: {names_list}[i])
                    ELSE []::VARCHAR[] END AS __changed,
               CASE WHEN __op = 'changed' THEN '{{' || array_to_string(list_transform(__ci,
                        lambda i: to_json({names_list}[i])::VARCHAR || ':' || coalesce(__oj[i]::VARCHAR, 'null')), ',')
                        || '}}'
                    WHEN __op = 'removed' THEN __old_row END AS __old_kept,
               * EXCLUDE (__k, __op, __hash, __rid, __nv, __oj, __ci, __new_row, __old_row)
        FROM (SELECT *, CASE WHEN __op = 'changed' THEN list_filter(range(1, {n + 1}),
                          lambda i: __nv[i] <> coalesce(__oj[i]::VARCHAR, 'null')) END AS __ci
              FROM (SELECT d.*, {new_row} AS __new_row, s.row_json AS __old_row, {pairs}
                    FROM {DELTA} AS d LEFT JOIN {snapshot} AS s ON s.rowid = d.__rid)) AS x
        -- numbered in key order by sorting the keys alone (a window over the wide rows costs more),
        -- stored in that order so that plan rows are written in seq order
        JOIN (SELECT __k AS __ok, row_number() OVER (ORDER BY __k) AS __rn FROM {DELTA}) AS o ON o.__ok = x.__k
        ORDER BY o.__rn"""
    )
    con.execute(f"DROP TABLE IF EXISTS {DELTA}")
    row = con.execute(f"SELECT count(*) FROM {ROWS}").fetchone()
    return int(row[0]) if row else 0


def stream_rows(con: duckdb.DuckDBPyConnection, count: int, *, where: str = "true",
                chunk: int = 5000) -> Iterator[list[DeltaRow]]:
    """Delta rows matching `where`, in key order, `chunk` at a time (never the whole delta in Python)."""
    for start in range(1, count + 1, chunk):
        rows = con.execute(
            f"SELECT __rn, __key, __op, __hash, __new_row, __old_row, __changed FROM {ROWS} AS r "
            f"WHERE __rn >= ? AND __rn < ? AND ({where}) ORDER BY __rn",
            [start, start + chunk],
        ).fetchall()
        yield [
            DeltaRow(rn=r[0], key=r[1], op=r[2], new_hash=r[3],
                     new_row=json.loads(r[4]) if r[4] is not None else None, new_row_json=r[4],
                     old_row=json.loads(r[5]) if r[5] is not None else None, old_row_json=r[5],
                     changed=tuple(r[6] or ()))
            for r in rows
        ]


MARKED_TABLE = "memory.main.reflow_marked_rows"
MARKED = f"__rn IN (SELECT __rn FROM {MARKED_TABLE})"


def mark_rows(con: duckdb.DuckDBPyConnection, where: str) -> int:
    """Evaluate a (possibly costly) condition over the delta rows once; `MARKED` then selects them."""
    con.execute(f"CREATE OR REPLACE TABLE {MARKED_TABLE} AS SELECT __rn FROM {ROWS} AS r WHERE {where}")
    row = con.execute(f"SELECT count(*) FROM {MARKED_TABLE}").fetchone()
    return int(row[0]) if row else 0


def write_baseline(con: duckdb.DuckDBPyConnection, table: str, plan_id: str, sync: str, seq: int,
                   status: str) -> int:
    """Write every delta row to the plan as recorded-not-sent, in SQL; returns the next seq."""
    con.execute(
        f"""INSERT INTO {table} SELECT ?, ?, ? + __rn - 1, __key, __op, ?, false, []::VARCHAR[], __hash,
               __new_row, __old_row, NULL, NULL, 0, 'first_run: baseline' FROM {ROWS}""",
        [plan_id, sync, seq, status])
    row = con.execute(f"SELECT count(*) FROM {ROWS}").fetchone()
    return seq + (int(row[0]) if row else 0)


def drop_scratch(con: duckdb.DuckDBPyConnection) -> None:
    for table in (DELTA, ROWS, MARKED_TABLE):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
