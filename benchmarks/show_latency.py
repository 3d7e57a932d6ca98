"""How fast a person can review a huge plan: `reflow show --limit 20` on a plan of 1M changed rows.

The plan is written straight into a state file with SQL (plans, plan_syncs, plan_rows), next to an
older plan of the same size, as a state file holds the last 10 plans. Then it times, on that file:

  - the plan summary (`load_plan` + the terminal text): no plan rows are read at all;
  - `show --limit 20`, `--field F --limit 20`, `--key K`, in-process through the CLI, and as a fresh
    `reflow` process (interpreter start included), with its peak memory;
  - the naive query (`WHERE plan_id AND sync ORDER BY seq LIMIT 20`) for comparison;
  - writing the HTML report (5,000 rows embedded).

    .venv/bin/python benchmarks/show_latency.py [--rows 1000000] [--keep DIR]

Also imported by the tests (`synthetic_plan`) to build smaller plans the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.plan import Plan  # noqa: E402
from engine.state import DB, State  # noqa: E402

PROJECT_YML = """name: bench
warehouse: {type: duckdb, path: warehouse.duckdb}
state_path: .reflow/state.duckdb
connections:
  braze: {type: braze, endpoint: "http://127.0.0.1:9", api_key: "{{ env_var('BRAZE_API_KEY', 'unused') }}"}
"""


def write_plan(state: State, plan_id: str, sync: str, rows: int, seq0: int, created: str) -> None:
    """One plan of `rows` changed user rows: half change `score` (a number), half `tier` (text)."""
    con = state.con
    counts = {"total": rows * 2, "added": 0, "changed": rows, "removed": 0, "unchanged": rows, "retry": 0,
              "invalid": 0, "not_sent": 0, "baseline": 0}
    requests = -(-rows // 75)
    estimate = {"requests": {"POST /users/track": requests}, "data_points": rows, "seconds": requests / 1000}
    fields = [["score", rows - rows // 2, 0, [["u_0000000", 10, 11]]], ["tier", rows // 2, 0, [["u_0000001", "a", "b"]]]]
    info = {"model": sync, "object": "users", "connection": "braze", "samples": {}, "invalid_samples": [],
            "snapshot_rows": rows * 2, "first_run": False, "notes": []}
    con.execute("BEGIN")
    con.execute(f"INSERT INTO {DB}.plans (plan_id, created_at, status, created_by) "
                "VALUES (?, ?::TIMESTAMP, 'planned', 'bench')", [plan_id, created])
    con.execute(f"INSERT INTO {DB}.plan_syncs (plan_id, sync, snapshot_version, fingerprint, counts, estimate, "
                "guards, fields, info, seq_min, seq_max, identity) "
                "VALUES (?, ?, 0, 'fffffffffffffff0', ?, ?, '[]', ?, ?, ?, ?, '{\"object\": \"users\"}')",
                [plan_id, sync, json.dumps(counts), json.dumps(estimate), json.dumps(fields), json.dumps(info),
                 seq0, seq0 + rows - 1])
    con.execute(f"""
        INSERT INTO {DB}.plan_rows
        SELECT ?, ?, ? + i, printf('u_%07d', i), 'changed', 'send', false,
               CASE WHEN i % 2 = 0 THEN ['score'] ELSE ['tier'] END, hash(i),
               printf('{{"user_id":"u_%07d","score":%d,"tier":"%s","email":"u%d@example.com"}}', i,
                      i % 1000 + (i + 1) % 2, CASE WHEN i % 2 = 1 THEN 'gold' ELSE 'silver' END, i),
               printf('{{"user_id":"u_%07d","score":%d,"tier":"silver","email":"u%d@example.com"}}', i, i % 1000, i),
               'POST /users/track attributes',
               CASE WHEN i % 2 = 0 THEN printf('{{"external_id":"u_%07d","score":%d}}', i, i % 1000 + 1)
                    ELSE printf('{{"external_id":"u_%07d","tier":"gold"}}', i) END,
               1, NULL
        FROM range(?) t(i)""", [plan_id, sync, seq0, rows])
    con.execute("COMMIT")


@contextlib.contextmanager
def synthetic_plan(state_path: Path, rows: int, *, older: bool = False) -> Iterator[tuple[State, Plan]]:
    """A state file holding a plan of `rows` changed rows (and, with `older`, an earlier plan as big)."""
    from engine.state.plans import load_plan

    with State.open(state_path, command="bench") as state:
        seq = 1
        if older:
            write_plan(state, "plan_20250101T000000_0001", "big_users", rows, seq, "2025-01-01 00:00:00")
            seq += rows
        write_plan(state, "plan_20250102T000000_0002", "big_users", rows, seq, "2025-01-02 00:00:00")
        yield state, load_plan(state, "plan_20250102T000000_0002")


def timed(fn: Any, repeat: int = 5) -> float:
    """Best of `repeat` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build the project here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="reflow-show-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "reflow_project.yml").write_text(PROJECT_YML)
    state_path = root / ".reflow" / "state.duckdb"
    state_path.unlink(missing_ok=True)
    results: dict[str, Any] = {"rows": args.rows}
    start = time.perf_counter()
    with synthetic_plan(state_path, args.rows, older=True) as (state, plan):
        results["setup_seconds"] = round(time.perf_counter() - start, 1)
    from engine import console
    from engine.cli import main as reflow
    from engine.report_html import write_report
    from engine.state.plans import load_plan

    def cli(*argv: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            assert reflow(["--project-dir", str(root), *argv]) == 0

    with State.open(state_path, command="bench", read_only=True) as state:
        results["summary_ms"] = 1000 * timed(lambda: console.plan_text(load_plan(state)))
        naive = (f"SELECT * FROM {DB}.plan_rows WHERE plan_id = ? AND sync = ? AND status <> 'rehash' "
                 "ORDER BY seq LIMIT 20")
        results["naive_query_ms"] = 1000 * timed(
            lambda: state.con.execute(naive, [plan.plan_id, "big_users"]).fetchall())
        html = root / "report.html"
        results["html_report_s"] = timed(lambda: write_report(html, state, load_plan(state)), repeat=1)
        results["html_report_mb"] = round(html.stat().st_size / 1e6, 2)
    results["show_limit20_ms"] = 1000 * timed(lambda: cli("show", "--limit", "20"))
    results["show_field_limit20_ms"] = 1000 * timed(lambda: cli("show", "--field", "tier", "--limit", "20"))
    last = f"u_{args.rows - 1:07d}"
    results["show_key_ms"] = 1000 * timed(lambda: cli("show", "--key", last, "--format", "json"))
    reflow_bin = shutil.which("reflow") or str(Path(sys.executable).parent / "reflow")
    # a tiny launcher measures the child's peak memory (forking this big process would count its pages)
    launcher = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode); "
                "print(p.stdout)")
    out = subprocess.run([sys.executable, "-c", launcher, reflow_bin, "--project-dir", str(root), "show", "--limit",
                          "20"], capture_output=True, text=True, check=True).stdout
    seconds, rss_kb, code = out.splitlines()[0].split()
    results["show_limit20_process_s"] = float(seconds)
    results["show_process_peak_rss_mb"] = round(int(rss_kb) / 1024, 1)
    assert code == "0" and out.splitlines()[1].endswith(f"20 rows of {args.rows:,} matching"), out[:300]
    start = time.perf_counter()
    subprocess.run([reflow_bin, "--version"], capture_output=True, check=True)
    results["reflow_version_process_s"] = time.perf_counter() - start    # interpreter start, for reference
    for k, v in results.items():
        if isinstance(v, float):
            results[k] = round(v, 3)
    print(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    raise SystemExit(main())
