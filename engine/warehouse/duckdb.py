"""The embedded warehouse: a DuckDB file, attached read-only next to the state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from engine.errors import WarehouseError
from engine.models import RenderedModel, render_model
from engine.project import Project
from engine.sql import quote
from engine.warehouse.base import ReadCost, attach_read_only, describe_in_process, land_in_process
from engine.warehouse.guard import check_model_sql

if TYPE_CHECKING:
    from engine.specs import SyncSpec




class DuckDBWarehouse:
    def __init__(self, project: Project) -> None:
        self.path = (project.root / project.warehouse.path).resolve()
        self.name = Path(project.warehouse.path).stem
        self._display = project.warehouse.path
        self.cost = ReadCost()
        self.dialect = None
        self.in_process = True
        self.mirror_writable = False

    def relation_for(self, table: str) -> str:
        return f"{quote(self.name)}.{quote('main')}.{quote(table)}"

    def source_for(self, schema: str, table: str) -> str:
        return f"{quote(self.name)}.{quote(schema)}.{quote(table)}"

    def render(self, project: Project, model: str) -> RenderedModel:
        return render_model(project, model, relation_for=self.relation_for, source_for=self.source_for)

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        if not self.path.exists():
            raise WarehouseError(
                f"warehouse file {self._display} does not exist; build it first "
                "(for the example project: `reflow example build`)"
            )
        attached = {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
        if self.name in attached:
            return
        attach_read_only(con, self.path, self.name, what=f"warehouse {self._display}",
                         hint="is another process writing to it?")
        con.execute(f"USE {quote(self.name)}")

    def relation(self, con: duckdb.DuckDBPyConnection, sql: str, *, model: str) -> str:
        self.attach(con)
        check_model_sql(con, sql, model=model)         # one read-only query, away from Reflow's state
        return f"(\n{sql}\n)"

    def columns(self, con: duckdb.DuckDBPyConnection, sql: str, *, model: str) -> list[tuple[str, str]]:
        return describe_in_process(con, self.relation(con, sql, model=model))

    def land_query(self, con: duckdb.DuckDBPyConnection, sql: str, table: str, *, model: str) -> int:
        self.attach(con)
        return land_in_process(con, sql, table, self.cost)

    def write(self, steps: list[tuple[str, Any]]) -> None:
        raise WarehouseError("the embedded DuckDB warehouse keeps no mirror (diff: warehouse reads it in process)")

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise WarehouseError("the embedded DuckDB warehouse keeps no mirror (diff: warehouse reads it in process)")

    def definition(self, project: Project, sync: SyncSpec) -> str:
        """"": a Reflow model's rendered SQL (already in the plan's fingerprint) is its whole definition."""
        return ""

    def close(self) -> None:
        return None
