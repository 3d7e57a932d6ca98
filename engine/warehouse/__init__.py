"""Where models run. `open_warehouse` picks the implementation from the project file.

dbt warehouses live in engine/warehouse/dbt.py, imported only for `warehouse: {type: dbt}`."""

from __future__ import annotations

from engine.project import Project
from engine.warehouse.base import Warehouse


def open_warehouse(project: Project) -> Warehouse:
    if project.warehouse.type == "duckdb":
        from engine.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(project)
    if project.warehouse.type == "dbt":
        from engine.warehouse.dbt import DbtWarehouse

        return DbtWarehouse(project)
    from engine.errors import ProjectError

    raise ProjectError(
        f"{project.file}: warehouse.type: '{project.warehouse.type}' is not supported "
        "(supported: duckdb, dbt)"
    )
