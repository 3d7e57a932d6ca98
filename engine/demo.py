"""The main job: the example project synced to a local Braze sandbox, twice.

1. build the sample warehouse, start the sandbox on a free local port;
2. `reflow plan` (the diff) and `reflow apply --yes`: a full sync;
3. mutate the sample data a little;
4. `reflow plan` and `reflow apply --yes` again: only the changes are sent;
5. print what landed in the sandbox, and stop it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.errors import UserError
from engine.project import find_project, load_project

DEMO_KEY = "demo-sandbox-key"

# The catalog the example's catalog sync writes to. In a real workspace you create it once in
# the Braze dashboard; the demo creates it in the sandbox through Braze's own POST /catalogs.
PRODUCTS_CATALOG = {"catalogs": [{
    "name": "products", "description": "Reflow example products",
    "fields": [{"name": "id", "type": "string"}, {"name": "name", "type": "string"},
               {"name": "category", "type": "string"}, {"name": "price", "type": "number"},
               {"name": "in_stock", "type": "boolean"}, {"name": "tags", "type": "array"}],
}]}


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def banner(text: str) -> None:
    say("")
    say(f"━━ {text} " + "━" * max(0, 70 - len(text)))


@contextmanager
def sandbox_process(api_key: str) -> Iterator[str]:
    cmd = [sys.executable, "-m", "engine", "sandbox", "--host", "127.0.0.1", "--port", "0", "--api-key", api_key]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if "listening on " not in line:
            err = proc.stderr.read() if proc.stderr else ""
            raise UserError(f"the sandbox did not start: {line or err.strip()}")
        url = line.split("listening on ", 1)[1].strip()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def http(method: str, url: str, body: Any = None, api_key: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def reflow(root: Path, *args: str) -> int:
    """Run a reflow command as a user would, in its own process."""
    say(f"$ reflow {' '.join(args)}")
    proc = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(root), *args], check=False)
    return proc.returncode


def run_demo(project_dir: Path | None, *, keep: bool = True) -> int:
    root = find_project(project_dir)
    project = load_project(root)
    started = time.monotonic()
    for stale in (project.state_path, Path(str(project.state_path) + ".wal")):
        if stale.exists():
            stale.unlink()
    spill = project.state_path.parent / "spill"
    if spill.exists():
        shutil.rmtree(spill, ignore_errors=True)

    banner("1. Build the example warehouse")
    if reflow(root, "example", "build") != 0:
        return 1
    with sandbox_process(DEMO_KEY) as url:
        os.environ["BRAZE_REST_ENDPOINT"] = url
        os.environ["BRAZE_API_KEY"] = DEMO_KEY
        say(f"Braze sandbox running at {url}")
        http("POST", f"{url}/catalogs", PRODUCTS_CATALOG, DEMO_KEY)

        banner("2. Full sync: plan, then apply exactly that plan")
        if reflow(root, "plan") != 0 or reflow(root, "apply", "--yes") != 0:
            return 1
        first = http("GET", f"{url}/_sandbox/stats")
        say(_stats_line("after the full sync", first))

        banner("3. The warehouse changes a little")
        if reflow(root, "example", "mutate") != 0:
            return 1

        banner("4. Incremental sync: only the changes are sent")
        if reflow(root, "plan") != 0 or reflow(root, "apply", "--yes") != 0:
            return 1
        second = http("GET", f"{url}/_sandbox/stats")
        say(_stats_line("after the incremental sync", second))
        dp = second.get("data_points", 0) - first.get("data_points", 0)
        say(f"The incremental sync cost {dp:,} data points "
            f"(the full sync cost {first.get('data_points', 0):,}).")

        members = [u["external_id"] for u in http("GET", f"{url}/_sandbox/users")["users"]
                   if "high_value" in (u["custom_attributes"].get("warehouse_cohorts") or [])]
        say(f"Cohort high_value (the high_value_customers sync, method attribute): {len(members):,} profiles "
            "hold it in warehouse_cohorts; the incremental sync sent only the members who entered or left.")

        banner("5. What landed in Braze (sandbox)")
        user = http("GET", f"{url}/_sandbox/users?external_id=c_00001")
        say(json.dumps(user, indent=2, default=str)[:2000])
        if reflow(root, "plan") != 0:
            return 1
    say("")
    say(f"Done in {time.monotonic() - started:.1f} s. The sandbox is stopped; `reflow history` shows the runs.")
    return 0


def _stats_line(label: str, stats: dict[str, Any]) -> str:
    keys = ("users", "events", "purchases", "catalog_items", "data_points", "requests")
    parts = [f"{k} {stats[k]:,}" for k in keys if isinstance(stats.get(k), int)]
    return f"Sandbox {label}: " + ", ".join(parts)
