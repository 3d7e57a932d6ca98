"""The table `plan_rows`: its record, and every query over one sync's rows of one plan.

A plan's rows are numbered by `seq`; each sync owns a contiguous range (`SyncPlan.seq_min..seq_max`).
The planner writes them (`insert_from` in SQL, `append` from Python), `apply` reads the payloads back
in seq order, `show` and the reports browse them. Nothing outside this package names the table.

A `first_run: baseline` plan sends nothing: its rows are held typed in a table of their own (`hold`,
registered in `plan_held`), and each row's JSON is rendered where a query reads it (`apply` recording the
snapshot, `show`), never written into `plan_rows`: at 10M rows that JSON cost more than the rest of the plan.
The queries over every row of a plan read `SyncRows.rows`, which adds those rows to the sync's plan rows
as plan rows of status `baseline`, numbered from `seq_min` in the held table's order (the queries over
rows skipped, invalid or changed read `plan_rows` alone: a held row is none of these). That order is the
model's on the embedded DuckDB; rows landed from another warehouse are written in any order
(`in_any_order`), which can differ between two plans of the same rows.

A `send_all` first run's rows are held too (`HeldSends`): each row's payload checks are judged as it is
held (the rows the destination's SQL cannot prove valid are planned in Python, into `plan_rows`), and the
held rows are plan rows of status `send` whose payloads are rendered where a query reads them (`show`, a
plan's samples); the queries over rows sent read them too (`sent_rows`). `apply` writes them into
`plan_rows` before it sends anything (`release_held`), so that the send, the acknowledgements, a crash's
recovery and `reflow errors` read plan rows as for any other plan.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NamedTuple

from engine.destinations.base import Op
from engine.plan import BASELINE, DROPPED, INVALID, REHASH, SEND, SKIP, RowStatus, SyncPlan
from engine.sql import duckdb_setting, json_path, quote, sql_str
from engine.state.store import DB, UNKNOWN

TABLE = f"{DB}.plan_rows"
HELD = f"{DB}.plan_held"
BASELINE_REASON = "first_run: baseline"
LOCAL = f"('{SKIP}', '{REHASH}', '{BASELINE}')"        # statuses recorded without sending


class PlanRowRecord(NamedTuple):
    """One row of `plan_rows`, in the table's column order (the migrations create it so)."""

    plan_id: str
    sync: str
    seq: int
    key: str
    op: Op
    status: RowStatus
    retry: bool                 # pending before this plan
    changed: list[str]
    new_hash: int | None
    new_row: str | None         # the row as Braze holds it once acknowledged (JSON)
    old_row: str | None         # what the plan keeps of the old row (JSON)
    channel: str | None
    item: str | None            # the exact payload object (JSON)
    data_points: int
    reason: str | None


COLUMNS = ", ".join(PlanRowRecord._fields)


class ShownRow(NamedTuple):
    """A plan row as `show` and the reports browse it (`SyncRows.shown`)."""

    sync: str
    seq: int
    key: str
    op: str
    status: str
    retry: bool
    changed: list[str] | None
    new_row: str | None
    old_row: str | None
    channel: str | None
    item: str | None
    data_points: int
    reason: str | None


SHOWN = ", ".join(ShownRow._fields)


class RowTotals(NamedTuple):
    """A sync's plan rows counted for its summary (see `SyncRows.totals`)."""

    added: int
    changed: int
    removed: int
    retry: int
    invalid: int
    not_sent: int
    baseline: int
    rehash: int
    added_sent: int
    changed_sent: int
    removed_sent: int
    moved: int
    retry_sent: int


def holds_unknown(json_text: str) -> str:
    """SQL: the JSON text `json_text` holds a value marked UNKNOWN (matched after the marker's control
    character, which JSON spells \\u001f or \\u001F)."""
    return f"contains(coalesce({json_text}, ''), {sql_str(UNKNOWN[1:])})"


def _key_order(column: str) -> str:
    """SQL: the order of plan rows by their key `column`, as the diff numbers a plan's rows (`KEY_ORDER`)."""
    from engine.diff import KEY_ORDER

    return KEY_ORDER.removeprefix("ORDER BY ").replace("__k", column)


@contextlib.contextmanager
def text_as_zstd(con: Any) -> Iterator[None]:
    """While a bulk write runs: text columns compressed with zstd rather than DuckDB's analysed choice.
    Plan rows' JSON (rows, payloads) is long and varied: FSST, DuckDB's usual pick, cost twice the CPU
    of the whole INSERT and compressed less (1M first-run plan rows: 3.1 s and 146 MiB, against 1.6 s and
    86 MiB). Only a state file whose storage version has zstd (v1.2+) is asked; an older one would store
    the text uncompressed (DuckDB's fallback). Other types are compressed as usual."""
    row = con.execute("SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = ?",
                      [DB.split(".")[0]]).fetchone()
    found = re.match(r"v(\d+)\.(\d+)", str(row[0] or "")) if row else None
    if not found or (int(found[1]), int(found[2])) < (1, 2):
        yield
        return
    with duckdb_setting(con, "force_compression", "'zstd'", "'auto'"):
        yield


def in_any_order(con: Any) -> contextlib.AbstractContextManager[None]:
    """While a bulk write whose rows need no order runs (their rowids still number them 0..n-1) and that
    evaluates no model (the setting changes which rows a `LIMIT` without `ORDER BY` returns): each
    DuckDB thread writes its rows to the file as they come. Kept in order (DuckDB's default), a
    10M-row first run's held rows were merged from the threads' batches and left for the next checkpoint
    to write again: 6.5 s more on closing the state, and a file of 1.12 GB instead of 673 MB."""
    return duckdb_setting(con, "preserve_insertion_order", "false", "true")


@dataclass(frozen=True)
class HeldSends:
    """How a `send_all` first run's held rows become payloads: a destination's `SqlItems` `channel` and
    `item` (SQL over the delta rows, `r`), fixed by the plan and kept with it, so that `apply` renders what
    the plan counted. Its checks are judged as the rows are held (`judging`): `__python` rows (the SQL
    cannot prove them valid) are planned in Python, the held table sends none of them; `__points` is each
    row's data points."""

    channel: str
    item: str

    JUDGED = ("__python", "__points")

    @staticmethod
    def judging(eligible: str, data_points: str) -> list[tuple[str, str]]:
        """The held columns `JUDGED`, as SQL over the delta rows, from a destination's `SqlItems`."""
        return [("__python", f"NOT coalesce(({eligible}), false)"), ("__points", f"coalesce(({data_points}), 0)::INTEGER")]

    def to_json(self) -> str:
        return json.dumps([self.channel, self.item])

    @classmethod
    def from_json(cls, text: str | None) -> HeldSends | None:
        return cls(*json.loads(text)) if text else None


@dataclass(frozen=True)
class HeldRows:
    """A first run's rows of one sync held typed (`SyncRows.hold`): table `name` holds `__key`,
    `__hash`, one column per field (`columns`: name and model type, as the diff normalises them) and
    `__refused`; row `i` of the table (its rowid) is plan row `seq_min + i`. A refused row (it holds a
    secret) is held blank, never written: the Python path writes its plan row instead.

    A `first_run: baseline` plan's rows are plan rows of status `baseline`; a `send_all` one's
    (`sends`) are plan rows of status `send`, their payloads rendered where they are read, until `apply`
    writes them into `plan_rows` before it sends anything (`SyncRows.release_held`)."""

    name: str
    seq_min: int
    seq_max: int
    columns: tuple[tuple[str, str], ...]
    sends: HeldSends | None = None
    hashed: bool = True         # `__hash` holds the warehouse's hash; else its reader computes it

    @property
    def table(self) -> str:
        return f"{DB}.{quote(self.name)}"

    def as_plan_rows(self, plan_id: str, sync: str, within: str = "true") -> str:
        """SQL: these rows as `plan_rows` records (the JSON rendered per row read); `within` (SQL over the
        held table, `h`) limits the rows before anything is rendered."""
        # the diff's normal form, imported by the queries that need it
        from engine.diff import held_delta, held_hash, rendered_row

        head = f"SELECT {sql_str(plan_id)} AS plan_id, {sql_str(sync)} AS sync"
        if self.sends is None:
            return (f"{head}, {self.seq_min} + h.rowid AS seq, h.__key AS key, 'added' AS op, '{BASELINE}' AS status, "
                    f"false AS retry, []::VARCHAR[] AS changed, {held_hash(self.columns, self.hashed)} AS new_hash, "
                    f"{rendered_row(self.columns, 'h.')} AS new_row, NULL::VARCHAR AS old_row, "
                    f"NULL::VARCHAR AS channel, NULL::VARCHAR AS item, 0::INTEGER AS data_points, "
                    f"{sql_str(BASELINE_REASON)} AS reason FROM {self.table} AS h WHERE NOT h.__refused AND ({within})")
        s = self.sends
        return (f"{head}, {self.seq_min} + r.__rowid AS seq, r.__key AS key, 'added' AS op, '{SEND}' AS status, "
                f"false AS retry, []::VARCHAR[] AS changed, r.__hash AS new_hash, r.__new_row AS new_row, "
                f"NULL::VARCHAR AS old_row, ({s.channel})::VARCHAR AS channel, ({s.item})::VARCHAR AS item, "
                f"r.__points AS data_points, NULL::VARCHAR AS reason "
                f"FROM ({held_delta(self.table, self.columns, within, s.JUDGED, self.hashed)}) AS r "
                f"WHERE NOT r.__refused AND NOT r.__python")

    def for_python(self, within: str = "true") -> str:
        """SQL: the held send rows the destination's SQL cannot prove valid (`__python`), for the
        Python path: (seq, key, hash, row JSON), in seq order."""
        from engine.diff import held_delta

        assert self.sends is not None
        return (f"SELECT {self.seq_min} + r.__rowid AS seq, r.__key AS key, r.__hash AS new_hash, r.__new_row AS new_row "
                f"FROM ({held_delta(self.table, self.columns, within, self.sends.JUDGED, self.hashed)}) AS r "
                f"WHERE NOT r.__refused AND r.__python ORDER BY r.__rowid")


@dataclass(frozen=True)
class SyncRows:
    """One sync's rows of one plan: seq from `seq_min` (to `seq_max`, when known).

    The summary's queries are not run when the sync has no row in the plan (a sync without changes):
    whether it has any is asked once, and forgotten by every write through this object."""

    con: Any
    plan_id: str
    sync: str
    seq_min: int = 0
    seq_max: int | None = None
    held: HeldRows | None = None
    _known: dict[str, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, con: Any, plan_id: str, sp: SyncPlan) -> SyncRows:
        """The rows of a saved plan's sync."""
        found = con.execute(f"SELECT tbl, seq_min, seq_max, columns, sends, hashed FROM {HELD} "
                            "WHERE plan_id = ? AND sync = ?", [plan_id, sp.name]).fetchone()
        held = (HeldRows(found[0], int(found[1]), int(found[2]), tuple((n, t) for n, t in json.loads(found[3])),
                         HeldSends.from_json(found[4]), bool(found[5])) if found else None)
        return cls(con, plan_id, sp.name, sp.seq_min, sp.seq_max, held)

    @property
    def rows(self) -> str:
        """The relation the queries over every row read: the plan rows, with the held baseline rows when
        there are (queries over rows sent, skipped, invalid or changed read `plan_rows` alone: a held row
        is none of these)."""
        if self.held is None:
            return TABLE
        return f"(SELECT * FROM {TABLE} UNION ALL {self.held.as_plan_rows(self.plan_id, self.sync)})"

    @property
    def sent_rows(self) -> str:
        """The relation the queries over rows sent read: the plan rows, with the held rows of a `send_all`
        first run (not yet released, `release_held`)."""
        return self.rows if self.held is not None and self.held.sends is not None else TABLE

    def where(self) -> tuple[str, list[Any]]:
        if self.seq_max is None:
            return "plan_id = ? AND sync = ? AND seq >= ?", [self.plan_id, self.sync, self.seq_min]
        return ("plan_id = ? AND sync = ? AND seq >= ? AND seq <= ?",
                [self.plan_id, self.sync, self.seq_min, self.seq_max])

    def keys_sql(self) -> str:
        """SQL (parameters inlined) selecting `__k`: every key these rows name, once."""
        where = f"plan_id = {sql_str(self.plan_id)} AND sync = {sql_str(self.sync)} AND seq >= {int(self.seq_min)}"
        if self.seq_max is not None:
            where += f" AND seq <= {int(self.seq_max)}"
        return f"SELECT DISTINCT key AS __k FROM {self.rows} WHERE {where}"

    def _one(self, sql: str, params: Sequence[Any], width: int = 1) -> tuple[Any, ...]:
        return self.con.execute(sql, list(params)).fetchone() or (0,) * width

    def _none(self) -> bool:
        """True when the sync has no row in the plan (asked once until the next write)."""
        if "any" not in self._known:
            where, params = self.where()
            self._known["any"] = bool(self._one(f"SELECT EXISTS (SELECT 1 FROM {self.rows} WHERE {where})", params)[0])
        return not self._known["any"]

    # ------------------------------------------------------------------ writing (the planner)

    def insert_from(self, source: str, values: Mapping[str, str], where: str, params: Sequence[Any] = ()) -> None:
        """INSERT one record per row of `source` matching `where`: `values` gives the SQL of each column
        but plan_id and sync (every one of them: a missing column is a bug, not a NULL)."""
        exprs = ", ".join(["?", "?", *(f"({values[name]})" for name in PlanRowRecord._fields[2:])])
        self._known.clear()
        with text_as_zstd(self.con):
            self.con.execute(f"INSERT INTO {TABLE} ({COLUMNS}) SELECT {exprs} FROM {source} WHERE {where}",
                             [self.plan_id, self.sync, *params])

    def append(self, records: Sequence[PlanRowRecord]) -> None:
        if not records:
            return
        self._known.clear()
        cols = list(zip(*records, strict=True))
        self.con.execute(f"INSERT INTO {TABLE} ({COLUMNS}) SELECT {', '.join('unnest(?)' for _ in cols)}",
                         [list(c) for c in cols])

    def hold(self, select: str, columns: Sequence[tuple[str, str]], sends: HeldSends | None = None, *,
             hashed: bool = True, landed: bool = False) -> SyncRows:
        """A first run's rows held typed (`HeldRows`; `sends`: a `send_all` one's, see there): `select`
        gives `__key`, `__hash`, the fields' values and `__refused`, one row per plan row. Returns these
        rows with them (see `rows`). The table is written in parallel, as the rows come; its rowid numbers
        them (no window over millions of rows). `landed`: `select` reads rows already landed in this process
        (no model runs inside it), so they are written in any order (`in_any_order`); a model evaluated in
        the statement keeps DuckDB's order (a `LIMIT` without `ORDER BY` picks other rows without it)."""
        # named for its plan and sync too: no other plan's table can ever have this name
        tag = hashlib.sha256(f"{self.plan_id}\0{self.sync}".encode()).hexdigest()[:12]
        name = f"plan_held_{int(self.seq_min)}_{tag}"
        # the settings are changed outside the transaction: a model failing inside it aborts the transaction,
        # and they must still be put back (text as zstd: 10M typed rows 7.3 s written as DuckDB chooses, 5.5 s)
        with text_as_zstd(self.con), in_any_order(self.con) if landed else contextlib.nullcontext():
            held = self._hold_table(HeldRows(name, int(self.seq_min), int(self.seq_min) - 1, tuple(columns), sends,
                                             hashed), select)
        self._known.clear()
        return self if held is None else replace(self, held=held)

    def _hold_table(self, held: HeldRows, select: str) -> HeldRows | None:
        """`hold`'s table and its registration in one transaction: a process killed in between leaves
        neither (a table no plan names would never be pruned, and holds the model's rows). None: the
        select had no row, and nothing is held (the plan takes no seq)."""
        self.con.execute("BEGIN")
        try:
            self.con.execute(f"CREATE TABLE {held.table} AS {select}")
            count = int(self._one(f"SELECT count(*) FROM {held.table}", [])[0])
            if count:
                held = replace(held, seq_max=held.seq_min + count - 1)
                self.con.execute(f"INSERT INTO {HELD} (plan_id, sync, tbl, seq_min, seq_max, columns, sends, hashed) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 [self.plan_id, self.sync, held.name, held.seq_min, held.seq_max,
                                  json.dumps(held.columns), held.sends.to_json() if held.sends else None, held.hashed])
            else:
                self.con.execute(f"DROP TABLE {held.table}")
            self.con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                self.con.execute("ROLLBACK")
            raise
        return held if count else None

    def drop_held(self) -> None:
        """Forget the held rows (their plan failed a check)."""
        if self.held is None:
            return
        self.con.execute(f"DROP TABLE IF EXISTS {self.held.table}")
        self.con.execute(f"DELETE FROM {HELD} WHERE plan_id = ? AND sync = ?", [self.plan_id, self.sync])

    def release_held(self) -> SyncRows:
        """A `send_all` first run's held rows written into `plan_rows` as the plan counted them (payloads
        rendered by the plan's SQL), the held table dropped, in one transaction: `apply` does this before
        it sends anything, so that the send, the acknowledgements, a crash's recovery and `reflow errors`
        read plan rows as for any plan. Returns the rows without held ones."""
        if self.held is None or self.held.sends is None:
            return self
        with text_as_zstd(self.con):
            self.con.execute("BEGIN")
            try:
                self.con.execute(f"INSERT INTO {TABLE} ({COLUMNS}) {self.held.as_plan_rows(self.plan_id, self.sync)}")
                self.con.execute(f"DROP TABLE {self.held.table}")
                self.con.execute(f"DELETE FROM {HELD} WHERE plan_id = ? AND sync = ?", [self.plan_id, self.sync])
                self.con.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    self.con.execute("ROLLBACK")
                raise
        self._known.clear()
        return replace(self, held=None)

    def held_for_python(self, chunk: int = 5000) -> Iterator[list[tuple[int, str, int, str]]]:
        """The held send rows left to the Python path (`HeldRows.for_python`), `chunk` at a time."""
        if self.held is None or self.held.sends is None:
            return
        low = self.held.seq_min
        rowids = [int(r[0]) - low for r in self.con.execute(f"SELECT seq FROM ({self.held.for_python()})").fetchall()]
        for i in range(0, len(rowids), chunk):       # each chunk read by its rowid range (the scan skips the rest)
            part = rowids[i:i + chunk]
            rows = [(int(seq), key, new_hash, row) for seq, key, new_hash, row in self.con.execute(
                self.held.for_python(f"h.rowid BETWEEN {part[0]} AND {part[-1]}")).fetchall()]
            if [seq - low for seq, *_ in rows] != part:
                raise RuntimeError("the held rows changed while they were read")   # a bug: the table is the plan's
            yield rows

    def held_keys(self) -> tuple[int, int, int, int]:
        """The held rows' (count, null keys, distinct keys, refused rows); a refused row's key is not
        held, nor counted: the caller checks those rows' keys."""
        if self.held is None:          # nothing held: an empty model
            return 0, 0, 0, 0
        # the keys' 64-bit hashes counted first (a third cheaper at 10M keys): all distinct, the keys are;
        # fewer (repeated keys, or two keys of one hash) and the keys themselves are counted
        total, nulls, distinct, refused = (int(n) for n in self._one(
            f"SELECT count(*), count(*) FILTER (WHERE __key IS NULL AND NOT __refused), "
            f"count(DISTINCT hash(__key)) FILTER (WHERE __key IS NOT NULL), count(*) FILTER (WHERE __refused) "
            f"FROM {self.held.table}", [], 4))
        if distinct != total - nulls - refused:
            distinct = int(self._one(f"SELECT count(DISTINCT __key) FROM {self.held.table}", [])[0])
        return total, nulls, distinct, refused

    def refused_seqs(self) -> list[int]:
        """The seqs of the held rows refused (blank), in order."""
        if self.held is None:
            return []
        return [int(r[0]) for r in self.con.execute(
            f"SELECT {self.held.seq_min} + rowid FROM {self.held.table} WHERE __refused ORDER BY rowid").fetchall()]

    def not_written(self, rn: str) -> str:
        """SQL true for a delta row (numbered `rn` from 1 = seq_min) that has no plan row yet."""
        return (f"{rn} NOT IN (SELECT seq - {int(self.seq_min)} + 1 FROM {TABLE} "
                f"WHERE plan_id = {sql_str(self.plan_id)} AND sync = {sql_str(self.sync)} "
                f"AND seq >= {int(self.seq_min)})")

    def pending_keys(self, *, waiting: bool = False) -> str:
        """SQL: the sync's pending keys (only those held back waiting, with `waiting`)."""
        held = " AND waiting_since IS NOT NULL" if waiting else ""
        return f"(SELECT key FROM {DB}.pending WHERE sync = {sql_str(self.sync)}{held})"

    def pending_of(self, keys: Sequence[str]) -> dict[str, tuple[int, datetime | None]]:
        """Which of `keys` are pending: each with how many of its sends ended without an answer and
        since when it is held back waiting (None: it is not)."""
        found = self.con.execute(f"SELECT key, unknowns, waiting_since FROM {DB}.pending "
                                 "WHERE sync = ? AND key IN (SELECT unnest(?))", [self.sync, list(keys)]).fetchall()
        return {k: (int(n or 0), since) for k, n, since in found}

    # ------------------------------------------------------------------ the plan's summary

    def totals(self, unset_fields: Sequence[str], identity_fields: Sequence[str]) -> RowTotals:
        """Counts by op and status; `*_sent`: first sends (not retries) that go out; `moved`: changed rows
        whose `identity_fields` changed; a changed row that unsets `unset_fields` counts as a removal sent."""
        if self._none():
            return RowTotals(*(0,) * len(RowTotals._fields))
        where, params = self.where()
        live = f"status NOT IN ('{INVALID}', '{REHASH}')"
        sent = f"NOT retry AND status = '{SEND}'"
        unsets = (f"list_has_any(changed, [{', '.join(sql_str(f) for f in sorted(unset_fields))}])"
                  if unset_fields else "false")
        # a changed row whose old identity is UNKNOWN (marked so that it is sent again) did not move
        moved = (f"op = 'changed' AND list_has_any(changed, [{', '.join(sql_str(f) for f in identity_fields)}]) "
                 f"AND NOT {holds_unknown('old_row')}" if identity_fields else "false")
        row = self._one(
            f"""SELECT count(*) FILTER (WHERE op = 'added' AND NOT retry AND {live}),
                       count(*) FILTER (WHERE op = 'changed' AND NOT retry AND {live}),
                       count(*) FILTER (WHERE op = 'removed' AND NOT retry AND {live}),
                       count(*) FILTER (WHERE retry AND {live}),
                       count(*) FILTER (WHERE status = '{INVALID}'),
                       count(*) FILTER (WHERE status IN ('{SKIP}', '{BASELINE}')),
                       count(*) FILTER (WHERE status = '{BASELINE}'),
                       count(*) FILTER (WHERE status = '{REHASH}'),
                       count(*) FILTER (WHERE op = 'added' AND {sent}),
                       count(*) FILTER (WHERE op = 'changed' AND {sent} AND NOT ({unsets})),
                       count(*) FILTER (WHERE (op = 'removed' OR ({unsets})) AND {sent}),
                       count(*) FILTER (WHERE {moved} AND status = '{SEND}'),
                       count(*) FILTER (WHERE retry AND op <> 'removed' AND status = '{SEND}')
                FROM {self.rows} WHERE {where}""", params, len(RowTotals._fields))
        return RowTotals(*(int(x) for x in row))

    def channel_totals(self) -> dict[str, tuple[int, int]]:
        """Per channel of the rows sent: (rows, data points)."""
        if self._none():
            return {}
        where, params = self.where()
        rows = self.con.execute(
            f"SELECT channel, count(*), coalesce(sum(data_points), 0) FROM {self.sent_rows} "
            f"WHERE {where} AND status = '{SEND}' GROUP BY channel ORDER BY channel", params).fetchall()
        return {ch: (int(c), int(dp)) for ch, c, dp in rows}

    def sent_by(self, field: str | None) -> dict[tuple[str | None, str], tuple[int, int]]:
        """Per (value of `field` in the row as text, None when `field` is None; op) of the rows sent:
        (rows, data points). A removed row's value is its old row's."""
        if self._none():
            return {}
        where, params = self.where()
        group = f"json_extract_string(coalesce(new_row, old_row), {json_path(field)})" if field else "NULL"
        rows = self.con.execute(
            f"SELECT {group} AS g, op, count(*), coalesce(sum(data_points), 0) FROM {self.sent_rows} "
            f"WHERE {where} AND status = '{SEND}' GROUP BY g, op", params).fetchall()
        return {(g, str(op)): (int(c), int(dp)) for g, op, c, dp in rows}

    def with_reasons(self) -> tuple[int, Any, int, Any]:
        """Rows sent with a reason: (fields dropped, first [key, reason]; noted, first [key, reason])."""
        if self._none():
            return 0, None, 0, None
        where, params = self.where()
        return self._one(  # type: ignore[return-value]
            f"SELECT count(*) FILTER (WHERE starts_with(reason, '{DROPPED}')), "
            f"min([key, reason] ORDER BY seq) FILTER (WHERE starts_with(reason, '{DROPPED}')), "
            f"count(*) FILTER (WHERE NOT starts_with(reason, '{DROPPED}')), "
            f"min([key, reason] ORDER BY seq) FILTER (WHERE NOT starts_with(reason, '{DROPPED}')) "
            f"FROM {TABLE} WHERE {where} AND status = '{SEND}' AND reason IS NOT NULL", params, 4)

    def invalid_containing(self, text: str) -> int:
        if self._none():
            return 0
        where, params = self.where()
        return int(self._one(f"SELECT count(*) FROM {TABLE} WHERE {where} AND status = '{INVALID}' "
                             "AND contains(reason, ?)", [*params, text])[0])

    def invalid_samples(self, limit: int) -> tuple[tuple[str, str], ...]:
        if self._none():
            return ()
        where, params = self.where()
        return tuple((k, r) for k, r in self.con.execute(
            f"SELECT key, reason FROM {TABLE} WHERE {where} AND status = '{INVALID}' ORDER BY seq "
            f"LIMIT {int(limit)}", params).fetchall())

    def waiting(self) -> tuple[int, datetime | None]:
        """Rows of the plan held back before (pending, waiting): how many, and the oldest wait."""
        if self._none():
            return 0, None
        where, params = self.where()
        where = " AND ".join(f"r.{c}" for c in where.split(" AND "))
        count, since = self._one(
            f"SELECT count(*), min(p.waiting_since) FROM {self.rows} AS r JOIN {DB}.pending AS p "
            f"ON p.sync = r.sync AND p.key = r.key WHERE {where} AND p.waiting_since IS NOT NULL", params, 2)
        return int(count), since

    def field_stats(self, samples: int, unknown: str) -> list[tuple[Any, ...]]:
        """Per changed field of the rows that change Braze: (field, rows, became null, changed JSON type,
        up to `samples` [key, old, new] as JSON text, the first type change as [key, old type, new type,
        old, new]). A field whose old value is `unknown` has no old type."""
        if self._none():
            return []
        where, params = self.where()
        new = "json_extract(new_row, '$.' || to_json(f)::VARCHAR)"
        old = "json_extract(old_row, '$.' || to_json(f)::VARCHAR)"
        kind = ("CASE json_type({v}) WHEN 'BIGINT' THEN 'number' WHEN 'UBIGINT' THEN 'number' "
                "WHEN 'DOUBLE' THEN 'number' WHEN 'VARCHAR' THEN 'string' WHEN 'BOOLEAN' THEN 'boolean' "
                "WHEN 'ARRAY' THEN 'array' WHEN 'OBJECT' THEN 'object' END")
        retyped = (f"({kind.format(v=old)}) <> ({kind.format(v=new)}) "
                   f"AND json_extract_string(old_row, '$.' || to_json(f)::VARCHAR) IS DISTINCT FROM "
                   f"{sql_str(unknown)}")
        return self.con.execute(
            f"""WITH c AS (
                  SELECT unnest(changed) AS f, seq, key, new_row, old_row FROM {TABLE}
                  WHERE {where} AND op = 'changed' AND status IN ('{SEND}', '{SKIP}')),
                stats AS (SELECT f, count(*) AS n,
                                 count(*) FILTER (WHERE coalesce({new}::VARCHAR, 'null') = 'null') AS nulled,
                                 count(*) FILTER (WHERE {retyped}) AS retyped,
                                 min([key, {kind.format(v=old)}, {kind.format(v=new)}, {old}::VARCHAR,
                                      {new}::VARCHAR] ORDER BY seq) FILTER (WHERE {retyped}) AS retyped_sample
                          FROM c GROUP BY f),
                samples AS (SELECT f, list([key, {old}::VARCHAR, {new}::VARCHAR] ORDER BY seq) AS s
                            FROM (SELECT *, row_number() OVER (PARTITION BY f ORDER BY seq) AS i FROM c)
                            WHERE i <= {int(samples)} GROUP BY f)
                SELECT stats.f, n, nulled, retyped, s, retyped_sample FROM stats JOIN samples USING (f)
                ORDER BY n DESC, stats.f""", params).fetchall()

    def samples(self, per_op: int) -> list[tuple[Any, ...]]:
        """The first `per_op` rows of each op that change Braze or are skipped: (op, key, changed,
        new_row, old_row, item, reason)."""
        if self._none():
            return []
        where, params = self.where()
        rows, order = TABLE, "ORDER BY seq"
        if self.held is not None and self.held.sends is not None:
            rows, order = self._first_held(per_op), "ORDER BY " + _key_order("key")
        return self.con.execute(
            f"""SELECT op, key, changed, new_row, old_row, item, reason FROM (
                  SELECT *, row_number() OVER (PARTITION BY op {order}) AS i FROM {rows}
                  WHERE {where} AND status IN ('{SEND}', '{SKIP}'))
                WHERE i <= {int(per_op)} ORDER BY op, i""", params).fetchall()

    def _first_held(self, count: int) -> str:
        """The plan rows with the first `count` held rows sent in key order (the order a plan's rows are
        numbered in when they are not held): found by their keys alone, so that only those rows' payloads
        are rendered, not millions."""
        held = self.held
        assert held is not None
        sent = f"FROM {held.table} WHERE NOT __refused AND NOT __python"
        # the key order sorts numbers, then JSON arrays, then text: a key starting with a letter is text, and
        # only the first `count` of those by text can be among the first (sorting every key in that order
        # cost 0.75 s at 10M rows; these plain sorts stop early)
        candidates = (f"SELECT rowid AS r, __key AS key {sent} AND (ascii(__key) < 65 OR starts_with(__key, '[')) "
                      f"UNION ALL (SELECT rowid, __key {sent} AND ascii(__key) >= 65 AND NOT starts_with(__key, '[') "
                      f"ORDER BY __key LIMIT {int(count)})")
        first = [int(r[0]) for r in self.con.execute(
            f"SELECT r FROM ({candidates}) ORDER BY {_key_order('key')} LIMIT {int(count)}").fetchall()]
        within = f"h.rowid IN ({', '.join(map(str, first))})" if first else "false"
        return f"(SELECT * FROM {TABLE} UNION ALL {held.as_plan_rows(self.plan_id, self.sync, within)})"

    # ------------------------------------------------------------------ reading back (apply)

    def recorded_locally(self) -> int:
        """Rows that advance the snapshot without sending (skip, rehash, baseline)."""
        where, params = self.where()
        return int(self._one(f"SELECT count(*) FROM {self.rows} WHERE {where} AND status IN {LOCAL}", params)[0])

    def invalid(self) -> list[tuple[str, str, str | None]]:
        where, params = self.where()
        return self.con.execute(f"SELECT key, reason, item FROM {TABLE} WHERE {where} AND status = '{INVALID}'",
                                params).fetchall()

    def channels(self) -> list[str]:
        where, params = self.where()
        return [r[0] for r in self.con.execute(
            f"SELECT DISTINCT channel FROM {TABLE} WHERE {where} AND status = '{SEND}' ORDER BY channel",
            params).fetchall()]

    def to_send(self, channel: str, start: int, end: int) -> list[tuple[str, str, int, int, int]]:
        """Stored payloads of `channel` with seq in [start, end), in seq order: (key, item, seq, data
        points, bytes the item takes in a request)."""
        where, params = self.where()
        return self.con.execute(
            f"SELECT key, item, seq, data_points, strlen(item) + 1 FROM {TABLE} "
            f"WHERE seq >= ? AND seq < ? AND {where} AND status = '{SEND}' AND channel = ? ORDER BY seq",
            [start, end, *params, channel]).fetchall()

    # ------------------------------------------------------------------ browsing (show, reports)

    def shown(self, clauses: Sequence[str], params: Sequence[Any], start: int, end: int,
              limit: int) -> list[ShownRow]:
        """Up to `limit` rows with seq in [start, end) matching `clauses`, in seq order."""
        where, own = self.where()
        return [ShownRow(*r) for r in self.con.execute(
            f"SELECT {SHOWN} FROM {self.rows} WHERE seq >= ? AND seq < ? AND {where} AND {' AND '.join(clauses)} "
            f"ORDER BY seq LIMIT {int(limit)}", [start, end, *own, *params]).fetchall()]

    def count(self, clauses: Sequence[str], params: Sequence[Any]) -> int:
        where, own = self.where()
        return int(self._one(f"SELECT count(*) FROM {self.rows} WHERE {where} AND {' AND '.join(clauses)}",
                             [*own, *params])[0])

    def numeric_deltas(self, field: str, bins: int) -> dict[str, Any] | None:
        """Distribution of new − old of a numeric field over the changed rows (None: under two rows
        changed between numbers, e.g. a text field, or null ↔ number)."""
        where, own = self.where()
        path = "$." + json.dumps(field)
        numeric = "('BIGINT', 'UBIGINT', 'DOUBLE')"
        deltas = (
            "SELECT try_cast(json_extract(new_row, ?) AS DOUBLE) - try_cast(json_extract(old_row, ?) AS DOUBLE) AS v "
            f"FROM {TABLE} WHERE {where} AND status <> '{REHASH}' AND list_contains(changed, ?) "
            f"AND json_type(new_row, ?) IN {numeric} AND json_type(old_row, ?) IN {numeric}")
        # a NaN or ±Infinity (flagged, never sent) has no delta (try_cast: the filters may run in any order)
        deltas = f"SELECT v FROM ({deltas}) WHERE isfinite(v)"
        params = [path, path, *own, field, path, path]
        head = self.con.execute(
            f"SELECT count(v), min(v), max(v), median(v), avg(v), count(v) FILTER (WHERE v > 0), "
            f"count(v) FILTER (WHERE v < 0), count(v) FILTER (WHERE v <> floor(v)) FROM ({deltas})",
            params).fetchone()
        if head is None or head[0] < 2:
            return None
        count, low, high, median, mean, up, down, fractional = head
        if not fractional and high - low < bins:
            bins = int(high - low) + 1             # whole-number deltas over a small range: one bar per value
            width = 1.0
        else:
            width = (high - low) / bins if high > low else 1.0
        counts = [0] * bins
        for b, c in self.con.execute(
                f"SELECT least(floor((v - ?) / ?)::BIGINT, {bins - 1}) AS b, count(*) FROM ({deltas}) GROUP BY b",
                [low, width, *params]).fetchall():
            counts[int(b)] += int(c)
        return {"field": field, "count": int(count), "min": low, "max": high, "median": median, "mean": mean,
                "increased": int(up), "decreased": int(down), "bin_width": width,
                "whole": not fractional and width == 1.0, "bins": counts}
