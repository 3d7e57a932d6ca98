"""Plan + apply one users sync against a destination that applies each batch (appending its payloads
to a JSON-lines "Braze" file, fsync'd) and then, on the batch named by argv[3], kills its own process
with SIGKILL before answering: the request reached Braze, the answer never reached Reflow.

    python kill_worker.py ROOT BRAZE_LOG KILL_ON_BATCH      (KILL_ON_BATCH -1: never)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from crash_worker import project_and_sync

from engine.destinations.memory import MemoryDestination
from engine.planner import build_plan
from engine.runner import apply_plan
from engine.state import State
from engine.warehouse.duckdb import DuckDBWarehouse


class Braze(MemoryDestination):
    def __init__(self, log: Path, kill_on: int) -> None:
        super().__init__(default_concurrency=1, max_objects_per_request=10)
        self.log = open(log, "a", encoding="utf-8")  # noqa: SIM115
        self.kill_on = kill_on
        self.calls = 0

    def send(self, batch):  # type: ignore[no-untyped-def]
        results = super().send(batch)
        self.log.write("".join(item + "\n" for item in batch.items))
        self.log.flush()
        os.fsync(self.log.fileno())
        if self.calls == self.kill_on:
            os.kill(os.getpid(), signal.SIGKILL)
        self.calls += 1
        return results


def main() -> int:
    root, log, kill_on = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    project, sync = project_and_sync(root)
    dest = Braze(log, kill_on)
    with State.open(project.state_path, command="kill-test") as state:
        plan = build_plan(project, [sync], state, DuckDBWarehouse(project), lambda s: dest)
        result = apply_plan(state, plan, {"people": sync}, lambda s: dest)
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
