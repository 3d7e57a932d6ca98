"""Send benchmark: 100,000 changed users through `reflow apply` to the sandbox.

    python benchmarks/send_bench.py [--users 100000] [--latency-ms 50] [--rate 1000] [--concurrency 64] [--pin]

The sandbox runs in its own process with injected latency and no rate limit of its own; the
client's rate limiter is set to `--rate` requests/s. The first sync is recorded with
`first_run: baseline` (nothing sent); then every user changes one field, and `reflow plan` and
`reflow apply --yes` run as separate processes. Reported: requests/s and rows/s achieved by
apply, and the client's CPU milliseconds per request (user + system time of the plan and apply
processes: payload building happens in plan, sending in apply), from os.wait4. The send rate is
given twice: over the apply process's life (start-up included) and over the sync's send (its run
in `reflow history`). With --pin, the sandbox runs on CPU 1 and every reflow command on CPU 0, so
that the client has exactly one core of its own and the sandbox does not compete for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "send"
KEY = "bench-sandbox-key"

PROJECT = """
name: send_bench
warehouse: {{type: duckdb, path: warehouse.duckdb}}
state_path: .reflow/state.duckdb
connections:
  braze:
    type: braze
    endpoint: "{{{{ env_var('BRAZE_REST_ENDPOINT') }}}}"
    api_key: "{{{{ env_var('BRAZE_API_KEY') }}}}"
    rate_limit: {rate}
    concurrency: {concurrency}
    timeout: 30
"""
SYNC = """
model: bench_users
primary_key: customer_id
destination:
  connection: braze
  object: users
  identifier: {external_id: customer_id}
first_run: baseline
"""


def build(users: int) -> None:
    import duckdb

    con = duckdb.connect(str(WORK / "warehouse.duckdb"))
    con.execute(f"""CREATE OR REPLACE TABLE users AS SELECT 'c_' || lpad(i::varchar, 7, '0') AS customer_id,
        'First' || (i % 1000) AS first_name, ['bronze', 'silver', 'gold'][1 + i % 3] AS loyalty_tier,
        (i % 500) * 1.5 AS lifetime_value, i % 50 AS orders_count, 'US' AS country
        FROM range({users}) r(i)""")
    con.close()


PIN: dict[str, list[str]] = {"client": [], "sandbox": []}


def reflow(*args: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Run one reflow command; return (wall seconds, CPU seconds, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen([*PIN["client"], sys.executable, "-m", "engine", "--project-dir", str(WORK), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"reflow {' '.join(args)} failed:\n{out}")
    return wall, usage.ru_utime + usage.ru_stime, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pin", action="store_true", help="client on CPU 0, sandbox on CPU 1 (taskset)")
    args = parser.parse_args()
    if args.pin:
        PIN["client"], PIN["sandbox"] = ["taskset", "-c", "0"], ["taskset", "-c", "1"]

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "models").mkdir(parents=True)
    (WORK / "syncs").mkdir()
    (WORK / "reflow_project.yml").write_text(PROJECT.format(rate=args.rate, concurrency=args.concurrency))
    (WORK / "models" / "bench_users.sql").write_text("select * from {{ ref('users') }}\n")
    (WORK / "syncs" / "bench_users.yml").write_text(SYNC)
    build(args.users)

    sandbox = subprocess.Popen(
        [*PIN["sandbox"], sys.executable, "-m", "engine", "sandbox", "--port", "0", "--api-key", KEY,
         "--latency-ms", str(args.latency_ms), "--rate-limit", "100000000/1"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert sandbox.stdout is not None
        url = sandbox.stdout.readline().strip().split("listening on ", 1)[1]
        env = {**os.environ, "BRAZE_REST_ENDPOINT": url, "BRAZE_API_KEY": KEY}
        reflow("run", env=env)                                    # baseline: records, sends nothing
        import duckdb

        con = duckdb.connect(str(WORK / "warehouse.duckdb"))
        con.execute("UPDATE users SET loyalty_tier = loyalty_tier || '+'")
        con.close()
        plan_wall, plan_cpu, _ = reflow("plan", "--json", env=env)
        apply_wall, apply_cpu, out = reflow("apply", "--yes", env=env)
        send_seconds = float(json.loads(reflow("history", "--json", env=env)[2])[0]["duration_seconds"])
        # the fixed cost of a command (interpreter, imports, project, state): a no-change plan + apply
        _, idle_plan_cpu, _ = reflow("plan", "--json", env=env)
        _, idle_apply_cpu, _ = reflow("apply", "--yes", env=env)
        import urllib.request

        with urllib.request.urlopen(f"{url}/_sandbox/stats", timeout=30) as resp:
            stats = json.loads(resp.read())
    finally:
        sandbox.terminate()
        _, _, sandbox_usage = os.wait4(sandbox.pid, 0)
    sandbox_cpu = sandbox_usage.ru_utime + sandbox_usage.ru_stime
    requests = sum(sum(codes.values()) for route, codes in stats["requests"].items() if "users/track" in route)
    result = {
        "users": args.users, "latency_ms": args.latency_ms, "rate_limit": args.rate,
        "concurrency": args.concurrency, "requests": requests,
        "plan_seconds": round(plan_wall, 2), "apply_seconds": round(apply_wall, 2),
        "pinned": args.pin,
        "requests_per_second": round(requests / apply_wall, 1),
        "rows_per_second": round(args.users / apply_wall),
        "pct_of_limit": round(100 * requests / apply_wall / args.rate, 1),
        "send_seconds": send_seconds,
        "requests_per_second_during_send": round(requests / send_seconds, 1),
        "pct_of_limit_during_send": round(100 * requests / send_seconds / args.rate, 1),
        "cpu_seconds": {"plan": round(plan_cpu, 3), "apply": round(apply_cpu, 3), "idle_plan": round(idle_plan_cpu, 3), "idle_apply": round(idle_apply_cpu, 3)},
        "cpu_ms_per_request_apply": round(1000 * apply_cpu / max(requests, 1), 3),
        "cpu_ms_per_request_plan_and_apply": round(1000 * (plan_cpu + apply_cpu) / max(requests, 1), 3),
        "fixed_cpu_seconds_per_command": round((idle_plan_cpu + idle_apply_cpu) / 2, 2),
        "cpu_ms_per_request_send_path": round(
            1000 * (plan_cpu + apply_cpu - idle_plan_cpu - idle_apply_cpu) / max(requests, 1), 3),
        "sandbox_cpu_ms_per_request": round(1000 * sandbox_cpu / max(requests, 1), 3),
        "sandbox_data_points": stats.get("data_points"),
    }
    print(json.dumps(result, indent=2))
    print(out.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
