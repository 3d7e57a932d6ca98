"""Where models run. `open_warehouse` picks the implementation from the project file."""

from __future__ import annotations

from engine.project import Project
from engine.warehouse.base import Warehouse


def open_warehouse(project: Project) -> Warehouse:
    if project.warehouse.type == "duckdb":
        from engine.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(project)
    from engine.errors import ProjectError

    raise ProjectError(
        f"{project.file}: warehouse.type: '{project.warehouse.type}' is not supported yet "
        "(supported: duckdb)"
    )
