"""The warehouse contract: make a model's result readable from the planner's DuckDB connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import duckdb

from engine.errors import WarehouseError
from engine.sql import first_line, quote, sql_str

if TYPE_CHECKING:
    from engine.models import RenderedModel
    from engine.project import Project
    from engine.specs import SyncSpec


class Warehouse(Protocol):
    name: str

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


def attach_read_only(con: duckdb.DuckDBPyConnection, path: object, alias: str, *, what: str, hint: str) -> None:
    """ATTACH a DuckDB file read-only as `alias`; a failure names `what` and ends with `hint`."""
    try:
        con.execute(f"ATTACH {sql_str(str(path))} AS {quote(alias)} (READ_ONLY)")
    except duckdb.Error as exc:
        raise WarehouseError(f"cannot open {what}: {first_line(exc)} ({hint})") from exc
