"""PostgreSQL → DuckDB landing through COPY: the server's CSV straight into DuckDB's CSV reader.

    PostgreSQL  COPY (SELECT <each column in a text form DuckDB parses> FROM (<model>) AS m(c1, …))
                TO STDOUT (FORMAT csv, ENCODING 'UTF8')
        │        psycopg2 copy_expert, in a thread, writing into a FIFO (no row becomes a Python value)
        ▼
    DuckDB      INSERT INTO <table> SELECT <each column cast back> FROM read_csv(<fifo>, columns = {…})

Both sides run at once and neither holds the result: memory stays flat whatever the row count.
The landed types and values are exactly those of the row path (dbt.land_rows, psycopg2 values bound
to DuckDB), which stays the fallback for the few types psycopg2 turns into Python objects whose
text COPY cannot reproduce (json[] / jsonb[] re-serialised by Python, ranges, timetz, interval[] …):
`plan()` returns None for a result with such a column. A row whose CSV exceeds DuckDB's reader
buffer (32 MB) raises RowTooLong, and the result lands by the row path too.

Per type (PostgreSQL OID → what crosses the pipe → DuckDB):
    booleans, integers, text, uuid, "char", name, bpchar   their text, read with their DuckDB type
    real, double precision, numeric                        their text (shortest round-trip; NaN,
                                                           ±Infinity; numeric's every digit) → DOUBLE
    date, timestamp                                        ISO text; ±infinity → the bounds psycopg2
                                                           gives (0001-01-01 / 9999-12-31 23:59:59.999999)
    timestamptz                                            the instant in UTC, ISO text + '+00'
    time                                                   text; 24:00:00 → 00:00:00 (psycopg2's)
    interval                                               total microseconds with psycopg2's
                                                           365-day years and 30-day months, split
                                                           into days + microseconds as a timedelta is
    json, jsonb                                            the server's text, unchanged → JSON
    bytea                                                  hex → unhex() → BLOB
    arrays of the above (_PG_ARRAYS)                       array_to_json → JSON → DuckDB list
    any other type psycopg2 leaves as a string             its text → VARCHAR

Output settings that change a type's text (DateStyle's output half, extra_float_digits) are set for
the COPY and restored after it; settings that change what the model's SQL means (TimeZone,
DateStyle's field order) are left alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from engine.sql import quote

# OIDs whose psycopg2 value is already the server's text (so str(value) == the COPY text)
TEXT_LIKE = frozenset({18, 19, 25, 705, 1042, 1043, 2950})
_DAY_US = 86_400_000_000
_MAX_LINE = 32 << 20    # DuckDB's reader buffer (and longest row); a longer row lands by the row path


class RowTooLong(Exception):
    """A row's CSV is longer than the reader's buffer: land this result through the row path."""


@dataclass(frozen=True)
class CopyColumn:
    name: str
    duck_type: str          # the landed column's type
    pg_expr: str            # the text form sent by PostgreSQL ({c} = the column)
    csv_type: str           # how read_csv reads that text
    duck_expr: str          # the landed value ({v} = the read_csv column)


def _moment(oid: int) -> tuple[str, str, str]:
    """date, timestamp, timestamptz: ±infinity as psycopg2's bounds; a year before 1, which psycopg2
    refuses, a PostgreSQL error naming the value (else DuckDB would drop the BC)."""
    pg, low, high, form = {
        1082: ("date", "0001-01-01", "9999-12-31", "{c}"),
        1114: ("timestamp", "0001-01-01", "9999-12-31 23:59:59.999999", "{c}"),
        1184: ("timestamptz", "0001-01-01", "9999-12-31 23:59:59.999999", "({c} AT TIME ZONE 'UTC')"),
    }[oid]
    plain = "timestamp" if oid == 1184 else pg
    utc = f" AND {{c}} >= '{low} 00:00:00+00'::timestamptz" if oid == 1184 else ""   # its year in UTC too
    expr = (f"CASE WHEN {{c}} >= '{low}'::{plain}{utc} AND isfinite({{c}}) THEN {form} "
            f"WHEN {{c}} = 'infinity'::{pg} THEN '{high}'::{plain} "
            f"WHEN {{c}} = '-infinity'::{pg} THEN '{low}'::{plain} "
            f"ELSE ('out of range for Reflow (year before 1): ' || {{c}}::text)::{plain} END")
    if oid == 1184:
        return f"({expr})::text || '+00'", "TIMESTAMPTZ", "{v}"
    return expr, plain.upper(), "{v}"


def _scalar(oid: int, duck: str) -> tuple[str, str, str] | None:
    """(pg_expr, csv_type, duck_expr) for a scalar type the row path maps to `duck`."""
    if oid in (16, 20, 21, 23, 26) or duck == "VARCHAR":
        return "{c}", duck, "{v}"
    if oid in (700, 701, 1700):
        return "{c}", "DOUBLE", "{v}"
    if oid in (1082, 1114, 1184):
        return _moment(oid)
    if oid == 1083:
        return "CASE WHEN {c} = '24:00:00'::time THEN '00:00:00'::time ELSE {c} END", "TIME", "{v}"
    if oid == 1186:
        # psycopg2: years × 365 + months × 30 + days, then the time; a timedelta keeps days and a
        # non-negative remainder below one day, and DuckDB binds it as (0 months, days, µs)
        total = ("((extract(year from {c}) * 365 + extract(month from {c}) * 30 + extract(day from {c}))"
                 f" * {_DAY_US} + (extract(hour from {{c}}) * 3600 + extract(minute from {{c}}) * 60) * 1000000"
                 " + extract(microseconds from {c}))")
        days = f"floor({total} / {_DAY_US})"
        return (f"trunc({days})::text || ' days ' || trunc({total} - {days} * {_DAY_US})::text || ' microseconds'",
                "INTERVAL", "{v}")
    if oid in (114, 3802):
        return "{c}", "VARCHAR", "{v}::JSON"
    if oid == 17:
        return "encode({c}, 'hex')", "VARCHAR", "unhex({v})"
    return None


def plan(description: Sequence[Any], *, pg_types: dict[int, tuple[str, Any]],
         pg_arrays: dict[int, tuple[str, Any]], casters: Callable[[int], bool]) -> list[CopyColumn] | None:
    """The COPY landing of a result with this cursor description; None if a column needs the row path.

    `pg_types` / `pg_arrays` are the row path's OID maps; `casters(oid)` says whether psycopg2 turns
    that OID into a Python value (then only the mapped OIDs are reproduced here)."""
    columns = []
    for d in description:
        oid = int(d.type_code)
        if oid in pg_types:
            duck = pg_types[oid][0]
            forms = _scalar(oid, duck)
        elif oid in pg_arrays:
            duck = f"{pg_arrays[oid][0]}[]"
            forms = "array_to_json({c})::text", "VARCHAR", f"CAST({{v}}::JSON AS {duck})"
        elif oid in TEXT_LIKE or not casters(oid):
            duck, forms = "VARCHAR", ("{c}", "VARCHAR", "{v}")
        else:
            return None
        if forms is None:
            return None
        pg_expr, csv_type, duck_expr = forms
        columns.append(CopyColumn(str(d.name), duck, pg_expr, csv_type, duck_expr))
    return columns


def _settings(cur: Any) -> dict[str, str]:
    """Set the output-only settings COPY's text depends on; return what to restore."""
    cur.execute("SELECT current_setting('DateStyle'), current_setting('extra_float_digits')")
    datestyle, digits = cur.fetchone()
    changed = {}
    if not str(datestyle).upper().startswith("ISO"):
        changed["DateStyle"] = str(datestyle)
        cur.execute("SELECT set_config('DateStyle', 'ISO', false)")     # the output half only
    if int(digits) < 1:
        changed["extra_float_digits"] = str(digits)
        cur.execute("SELECT set_config('extra_float_digits', '1', false)")
    return changed


def copy_sql(sql: str, columns: Sequence[CopyColumn]) -> str:
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    exprs = ", ".join(col.pg_expr.replace("{c}", f"m.c{i}") for i, col in enumerate(columns))
    return (f"COPY (SELECT {exprs} FROM (\n{sql}\n) AS m({names})) "
            "TO STDOUT WITH (FORMAT csv, ENCODING 'UTF8')")


def _read_sql(path: str, columns: Sequence[CopyColumn]) -> str:
    types = ", ".join(f"'c{i}': '{col.csv_type}'" for i, col in enumerate(columns))
    values = ", ".join(col.duck_expr.replace("{v}", f"c{i}") for i, col in enumerate(columns))
    file = path.replace("'", "''")
    return (f"SELECT {values} FROM read_csv('{file}', columns = {{{types}}}, header = false, auto_detect = false, "
            "delim = ',', quote = '\"', escape = '\"', new_line = '\\n', allow_quoted_nulls = false, "
            f"null_padding = false, max_line_size = {_MAX_LINE}, buffer_size = {_MAX_LINE})")


class _Writer(threading.Thread):
    """Runs the COPY into the FIFO; keeps the PostgreSQL error, if any, for the caller."""

    def __init__(self, cur: Any, sql: str, path: str) -> None:
        super().__init__(name="reflow-pg-copy", daemon=True)
        self.cur, self.sql, self.path = cur, sql, path
        self.error: BaseException | None = None
        self.rows = 0
        self.bytes = 0              # what crossed the wire (the CSV PostgreSQL sent)
        self.abandoned = False      # DuckDB failed before reading: open the FIFO, send nothing

    def run(self) -> None:
        try:
            with open(self.path, "wb", buffering=1 << 20) as out:   # blocks until DuckDB opens it
                if not self.abandoned:
                    self.cur.copy_expert(self.sql, _Counted(out, self), size=1 << 20)
            self.rows = max(self.cur.rowcount, 0)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self.error = exc


class _Counted:
    """A file that counts the bytes written through it into `writer.bytes`."""

    def __init__(self, out: Any, writer: _Writer) -> None:
        self.out, self.writer = out, writer

    def write(self, data: bytes) -> int:
        self.writer.bytes += len(data)
        return int(self.out.write(data))


def _stop(handle: Any, writer: _Writer) -> None:
    writer.abandoned = True
    if writer.is_alive():
        handle.cancel()


def _drain(path: str, writer: _Writer) -> None:
    """Read and drop what the writer still sends, so that it ends (and never blocks on open)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        while writer.is_alive():
            try:
                if not os.read(fd, 1 << 20):
                    time.sleep(0.01)
            except BlockingIOError:
                time.sleep(0.01)
    finally:
        os.close(fd)
    writer.join()


def land(con: duckdb.DuckDBPyConnection, handle: Any, sql: str, columns: Sequence[CopyColumn], table: str,
         meter: Callable[[int, int], None] | None = None) -> int:
    """COPY `sql` from PostgreSQL into a new DuckDB `table`; returns the row count. `meter(rows, bytes)`
    is told what crossed the wire.

    Raises the psycopg2 error (the model failed) or the duckdb error (the rows did not land): the
    caller locates them; RowTooLong for a row longer than _MAX_LINE. The connection is left idle;
    the caller rolls back."""
    cur = handle.cursor()
    restore: dict[str, str] = {}
    folder = tempfile.mkdtemp(prefix="reflow-copy-")
    path = os.path.join(folder, "rows.csv")
    os.mkfifo(path, 0o600)
    try:
        restore = _settings(cur)
        con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(f"CREATE TABLE {table} ("
                    + ", ".join(f"{quote(col.name)} {col.duck_type}" for col in columns) + ")")
        writer = _Writer(cur, copy_sql(sql, columns), path)
        writer.start()
        failure: duckdb.Error | None = None
        try:
            con.execute(f"INSERT INTO {table} {_read_sql(path, columns)}")
        except duckdb.Error as exc:
            failure = exc
            _stop(handle, writer)
        except BaseException:       # Ctrl-C: stop the COPY too, so the connection is idle
            _stop(handle, writer)
            _drain(path, writer)
            raise
        _drain(path, writer)
        if _model_error(writer.error):
            raise writer.error      # type: ignore[misc]
        if failure is not None:
            if "Maximum line size" in str(failure):
                raise RowTooLong(str(failure).splitlines()[0]) from None
            raise failure
        if writer.error is not None:
            raise writer.error
        if meter is not None:
            meter(writer.rows, writer.bytes)
        return writer.rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            if restore and handle.autocommit:     # in a transaction, the caller's rollback restores them
                for name, value in restore.items():
                    cur.execute("SELECT set_config(%s, %s, false)", [name, value])
            cur.close()
        except Exception:  # noqa: BLE001 - a broken connection: restoring must not mask the outcome
            pass


def _model_error(error: BaseException | None) -> bool:
    """Did PostgreSQL fail the model (not only stop on the cancel that a DuckDB failure sent)?"""
    import psycopg2.errors

    return isinstance(error, psycopg2.Error) and not isinstance(error, psycopg2.errors.QueryCanceled)
