"""A tiny project with one DuckDB warehouse table, a model over it, and syncs built in code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from engine.destinations.memory import MemoryDestination
from engine.planner import build_plan
from engine.project import ConnectionConfig, Project, WarehouseConfig
from engine.runner import apply_plan
from engine.specs import DestinationSpec, Guards, Identifier, SyncSpec
from engine.state import State
from engine.warehouse.duckdb import DuckDBWarehouse


class Lab:
    """A project in tmp_path whose warehouse rows tests edit with plain SQL."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "models").mkdir()
        (root / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}\n")
        self.project = Project(
            root=root, name="lab", warehouse=WarehouseConfig(path="wh.duckdb"),
            state_path=root / ".reflow" / "state.duckdb",
            connections={"mem": ConnectionConfig(name="mem", endpoint="http://127.0.0.1:1")},
        )
        self.sql("""create table people_raw (id varchar, name varchar, tier varchar, score double,
                    joined timestamp, prefs struct(a int, tags varchar[]))""")

    def sql(self, statement: str, params: list[Any] | None = None) -> None:
        con = duckdb.connect(str(self.root / "wh.duckdb"))
        try:
            con.execute(statement, params or [])
        finally:
            con.close()

    def insert_people(self, n: int, start: int = 0) -> None:
        self.sql(f"""insert into people_raw select 'p' || lpad(i::varchar, 5, '0'), 'name ' || i,
                     ['bronze','silver','gold'][1 + i % 3], i * 1.5, timestamp '2024-01-01' + to_days(i::int),
                     {{'a': i::int, 'tags': ['x', 'y']}} from range({start}, {start + n}) t(i)""")

    def sync(self, **overrides: Any) -> SyncSpec:
        dest = DestinationSpec(connection="mem", object=overrides.pop("object", "users"),
                               identifier=Identifier("external_id", "id"),
                               on_removed=overrides.pop("on_removed", "unset"),
                               on_unmapped=overrides.pop("on_unmapped", "keep"))
        base: dict[str, Any] = dict(name="people", model="people", primary_key=("id",), destination=dest,
                                    guards=Guards(), path="syncs/people.yml", raw={"name": "people"})
        base.update(overrides)
        return SyncSpec(**base)

    def plan(self, sync: SyncSpec, dest: MemoryDestination) -> Any:
        with State.open(self.project.state_path, command="plan") as state:
            return build_plan(self.project, [sync], state, DuckDBWarehouse(self.project), lambda s: dest)

    def apply(self, plan: Any, sync: SyncSpec, dest: MemoryDestination, **kw: Any) -> Any:
        with State.open(self.project.state_path, command="apply") as state:
            return apply_plan(state, plan, {sync.name: sync}, lambda s: dest, **kw)

    def snapshot(self, sync: str = "people") -> dict[str, dict[str, Any]]:
        import json

        with State.open(self.project.state_path, command="test", read_only=True) as state:
            st = state.sync(sync)
            if st is None:
                return {}
            rows = state.con.execute(f"select key, row_json from {st.table}").fetchall()
        return {k: json.loads(v) for k, v in rows}


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


@pytest.fixture
def run_once(lab: Lab) -> Callable[..., Any]:
    def go(sync: SyncSpec, dest: MemoryDestination) -> tuple[Any, Any]:
        plan = lab.plan(sync, dest)
        return plan, lab.apply(plan, sync, dest)

    return go
