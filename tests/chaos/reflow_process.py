"""`reflow ...` as a process of its own, against the sandbox: for tests that interrupt it, delete its
files or watch it from another process while it runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SLOW_CONCURRENCY = 2         # requests in flight for the `slow_project` fixture (conftest.py)
SLOW_LATENCY_MS = 250        # the sandbox's answer delay those tests set


class Processes:
    """Starts `reflow` processes; `stop_all` kills those still running (the fixture's teardown)."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, project: Path, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "--project-dir", str(project), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        while self.started:
            proc = self.started.pop()
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


def wait_for_requests(sandbox: Any, n: int, proc: subprocess.Popen[str], limit: float = 60) -> bool:
    """Wait until the sandbox has answered n requests in total; False if the process ended first."""
    deadline = time.monotonic() + limit
    while sandbox.stats()["requests_total"] < n:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the apply never reached the sandbox"
        time.sleep(0.01)
    return True
