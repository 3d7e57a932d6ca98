"""Run plan + apply for the crash test, with a destination that logs every acknowledged key to a file
(fsync'd before it answers), so that the parent can kill us at any moment and check delivery."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.destinations.base import ACKNOWLEDGED, RowResult
from engine.destinations.memory import MemoryDestination
from engine.planner import build_plan
from engine.project import ConnectionConfig, Project, WarehouseConfig
from engine.runner import apply_plan
from engine.specs import DestinationSpec, Identifier, SyncSpec
from engine.state import State
from engine.warehouse.duckdb import DuckDBWarehouse


class LoggingDestination(MemoryDestination):
    def __init__(self, log: Path) -> None:
        super().__init__(latency=0.01, default_concurrency=4, max_objects_per_request=25)
        self.log = open(log, "a", encoding="utf-8")  # noqa: SIM115

    def send(self, batch):  # type: ignore[no-untyped-def]
        results = super().send(batch)
        with self._lock:
            items = dict(zip(batch.keys, batch.items, strict=True))
            self.log.write("".join(f"{r.key}\t{items[r.key]}\n" for r in results if r.outcome == ACKNOWLEDGED))
            self.log.flush()
            os.fsync(self.log.fileno())
        return [RowResult(r.key, r.outcome, r.reason) for r in results]


def project_and_sync(root: Path) -> tuple[Project, SyncSpec]:
    """The lab project of tests/core/conftest.py, and its users sync, for a worker process."""
    project = Project(root=root, name="crash", warehouse=WarehouseConfig(path="wh.duckdb"),
                      state_path=root / ".reflow" / "state.duckdb",
                      connections={"mem": ConnectionConfig(name="mem")})
    sync = SyncSpec(name="people", model="people", primary_key=("id",),
                    destination=DestinationSpec(connection="mem", object="users",
                                                identifier=Identifier("external_id", "id"), on_removed="unset"),
                    path="syncs/people.yml", raw={"name": "people"})
    return project, sync


def main() -> int:
    root, log = Path(sys.argv[1]), Path(sys.argv[2])
    project, sync = project_and_sync(root)
    dest = LoggingDestination(log)
    with State.open(project.state_path, command="crash-test") as state:
        plan = build_plan(project, [sync], state, DuckDBWarehouse(project), lambda s: dest)
        print("planned", flush=True)
        result = apply_plan(state, plan, {"people": sync}, lambda s: dest)
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
