"""The warehouse contract: make a model's result readable from the planner's DuckDB connection."""

from __future__ import annotations

from typing import Protocol

import duckdb


class Warehouse(Protocol):
    name: str

    def relation_for(self, table: str) -> str:
        """SQL for a warehouse table that is not a model (what `ref('table')` renders to)."""

    def source_for(self, schema: str, table: str) -> str:
        """SQL for `source(schema, table)`."""

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make the warehouse readable from `con` (read-only)."""

    def relation(self, con: duckdb.DuckDBPyConnection, sql: str, *, model: str) -> str:
        """Return SQL (a parenthesised query or a table name) that reads the model's result on `con`."""

    def close(self) -> None: ...
