"""The warehouse contract: make a model's result readable from the planner's DuckDB connection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import duckdb

from engine.errors import WarehouseError
from engine.sql import first_line, quote, sql_str

if TYPE_CHECKING:
    from engine.models import RenderedModel
    from engine.project import Project
    from engine.specs import SyncSpec
    from engine.warehouse.dialects import Dialect


Meter = Callable[[int, int], None]          # told (rows, bytes) as they cross from the warehouse


@dataclass
class ReadCost:
    """What a warehouse sent Reflow: rows, and bytes over the wire (none from a warehouse `in_process`)."""

    rows: int = 0
    bytes: int = 0

    def add(self, rows: int, nbytes: int) -> None:
        self.rows += rows
        self.bytes += nbytes


class Warehouse(Protocol):
    name: str
    cost: ReadCost                     # cumulative, for the plan's per-sync cost (the planner takes differences)

    @property
    def in_process(self) -> bool:
        """DuckDB read inside this process: the diff's own SQL runs on it (`diff: hashes` then reads
        (key, hash) pairs in process) and `dialect` is None."""

    @property
    def dialect(self) -> Dialect | None:
        """SQL for the diff's first phase on the warehouse (engine/warehouse/dialects.py); None for DuckDB
        in this process, or for an adapter Reflow has no such SQL for (its syncs then diff locally)."""

    @property
    def mirror_writable(self) -> bool:
        """Can Reflow keep a mirror of the snapshot's hashes on this warehouse (`diff: warehouse`)?"""

    def columns(self, con: duckdb.DuckDBPyConnection, sql: str, *, model: str) -> list[tuple[str, str]]:
        """The model's columns and their DuckDB types, without running it or landing its rows."""

    def land_query(self, con: duckdb.DuckDBPyConnection, sql: str, table: str, *, model: str) -> int:
        """Run `sql` (in `dialect`) on the warehouse; land its result in the DuckDB `table` on `con`."""

    def write(self, steps: list[tuple[str, Any]]) -> None:
        """Writes to the warehouse in one committed transaction (the mirror of `diff: warehouse`)."""

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A small read on the warehouse (the mirror's bookkeeping)."""

    def relation_for(self, table: str) -> str:
        """SQL for a warehouse table that is not a model (what `ref('table')` renders to)."""

    def source_for(self, schema: str, table: str) -> str:
        """SQL for `source(schema, table)`."""

    def render(self, project: Project, model: str) -> RenderedModel:
        """A model rendered with this warehouse's names, target and compiler (models.render_model)."""

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make the warehouse readable from `con` (read-only)."""

    def relation(self, con: duckdb.DuckDBPyConnection, sql: str, *, model: str) -> str:
        """Return SQL (a parenthesised query or a table name) that reads the model's result on `con`."""

    def definition(self, project: Project, sync: SyncSpec) -> str:
        """A stable text that changes whenever the definition of the model the sync reads changes (not
        its data): part of a plan's fingerprint, so `apply` refuses a plan whose model was redefined.
        "" when the rendered SQL already says it all (a Reflow model on DuckDB)."""

    def close(self) -> None: ...


def describe_in_process(con: duckdb.DuckDBPyConnection, relation: str) -> list[tuple[str, str]]:
    """A DuckDB warehouse's `columns`: the relation's columns and types (the query is planned, not run)."""
    return [(str(r[0]), str(r[1])) for r in con.execute(f"DESCRIBE SELECT * FROM {relation} AS m").fetchall()]


def land_in_process(con: duckdb.DuckDBPyConnection, sql: str, table: str, cost: ReadCost) -> int:
    """A DuckDB warehouse's `land_query`: `sql` run on `con` itself into `table`; its rows counted in `cost`."""
    con.execute(f"CREATE OR REPLACE TABLE {table} AS {sql}")
    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    rows = int(row[0]) if row else 0
    cost.add(rows, 0)
    return rows


def attach_read_only(con: duckdb.DuckDBPyConnection, path: object, alias: str, *, what: str, hint: str) -> None:
    """ATTACH a DuckDB file read-only as `alias`; a failure names `what` and ends with `hint`."""
    try:
        con.execute(f"ATTACH {sql_str(str(path))} AS {quote(alias)} (READ_ONLY)")
    except duckdb.Error as exc:
        raise WarehouseError(f"cannot open {what}: {first_line(exc)} ({hint})") from exc
