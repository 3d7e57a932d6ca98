"""Cohort benchmark: a cohort of 1,000,000 members, then 1% churn, through `reflow plan` and
`reflow apply --yes` to the sandbox, for both methods.

    python benchmarks/cohort_bench.py [--members 1000000] [--churn 0.01] [--method attribute|partner|both]

The sandbox runs in its own process with Braze's documented limits (/users/track 3,000 requests / 3 s,
the partner cohort import 250,000 / hour); the client keeps its defaults (1,000 /users/track requests/s;
the partner bucket 250,000 / hour = 69.4/s). First run: every member enters. Then `churn` of the members
leave and as many new ones enter (1%: 10,000 leave, 10,000 enter); the incremental run sends exactly
those. Reported per method and run: rows sent, requests (from the sandbox's counters), and the wall
time of plan and of apply (each its own process, start-up included). The members have no Braze profile
in the sandbox (a cohort never creates users), which changes nothing on the client's side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "cohort"
KEY = "bench-sandbox-key"
PARTNER_KEY, IMPORT_KEY = "bench-partner-key", "bench-import-key"

PROJECT = """
name: cohort_bench
warehouse: {type: duckdb, path: warehouse.duckdb}
state_path: .reflow/state.duckdb
connections:
  braze:
    type: braze
    endpoint: "{{ env_var('BRAZE_REST_ENDPOINT') }}"
    api_key: "{{ env_var('BRAZE_API_KEY') }}"
    concurrency: 32
    cohort_import:
      partner: bench
      partner_api_key: "{{ env_var('BRAZE_PARTNER_API_KEY') }}"
      data_import_key: "{{ env_var('BRAZE_DATA_IMPORT_KEY') }}"
"""
SYNC = """
model: members
primary_key: customer_id
destination:
  connection: braze
  object: cohorts
  method: {method}
  identifier: {{external_id: customer_id}}
  cohort: {{id: bench, name: "Benchmark cohort"}}
{attribute}guards: {{max_removed_pct: 5}}
"""


def reflow(*args: str, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(WORK), *args], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"reflow {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start, proc.stdout


def requests_total(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_sandbox/stats", timeout=60) as resp:
        return int(json.loads(resp.read())["requests_total"])


def run(method: str, members: int, churn: float) -> dict[str, object]:
    import duckdb

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "models").mkdir(parents=True)
    (WORK / "syncs").mkdir()
    (WORK / "reflow_project.yml").write_text(PROJECT)
    (WORK / "models" / "members.sql").write_text("select customer_id from {{ ref('people') }} where member\n")
    attribute = "  attribute: warehouse_cohorts\n" if method == "attribute" else ""
    (WORK / "syncs" / "members.yml").write_text(SYNC.format(method=method, attribute=attribute))
    moved = int(members * churn)
    con = duckdb.connect(str(WORK / "warehouse.duckdb"))
    con.execute(f"CREATE TABLE people AS SELECT 'c_' || lpad(i::varchar, 8, '0') AS customer_id, i < {members} "
                f"AS member FROM range({members + moved}) r(i)")
    con.close()
    sandbox = subprocess.Popen([sys.executable, "-m", "engine", "sandbox", "--port", "0", "--api-key", KEY,
                                "--partner-api-key", PARTNER_KEY, "--data-import-key", IMPORT_KEY],
                               stdout=subprocess.PIPE, text=True)
    out: dict[str, object] = {"method": method, "members": members}
    try:
        assert sandbox.stdout is not None
        url = sandbox.stdout.readline().strip().split("listening on ", 1)[1]
        env = {**os.environ, "BRAZE_REST_ENDPOINT": url, "BRAZE_API_KEY": KEY,
               "BRAZE_PARTNER_API_KEY": PARTNER_KEY, "BRAZE_DATA_IMPORT_KEY": IMPORT_KEY}
        for step in ("first", "incremental"):
            if step == "incremental":
                con = duckdb.connect(str(WORK / "warehouse.duckdb"))
                con.execute(f"UPDATE people SET member = NOT member WHERE customer_id < 'c_{moved:08d}' "
                            f"OR customer_id >= 'c_{members:08d}'")
                con.close()
            before = requests_total(url)
            plan_wall, plan_out = reflow("plan", env=env)
            apply_wall, apply_out = reflow("apply", "--yes", env=env)
            note = next((line.strip() for line in plan_out.splitlines() if "note: cohort bench" in line), "")
            out[step] = {"plan_seconds": round(plan_wall, 1), "apply_seconds": round(apply_wall, 1),
                         "requests": requests_total(url) - before, "plan": note.removeprefix("note: "),
                         "apply": apply_out.strip().splitlines()[-1]}
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument("--method", choices=("attribute", "partner", "both"), default="both")
    args = parser.parse_args()
    methods = ("attribute", "partner") if args.method == "both" else (args.method,)
    for method in methods:
        print(json.dumps(run(method, args.members, args.churn), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
