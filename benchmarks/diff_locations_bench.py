"""`diff: local | hashes | warehouse` on PostgreSQL (issue 14): what each location reads, and how fast.

    REFLOW_TEST_PG="host=127.0.0.1 port=55432 user=postgres dbname=postgres" \\
        python benchmarks/diff_locations_bench.py [--rows 1000000] [--columns 12] [--memory-limit 512MB]
        [--location local --location hashes --location warehouse]

The dbt project, model and sync of benchmarks/dbt_postgres_stream.py (which owns the shared code): one
`big_users` table model on PostgreSQL, built once; then, for each location in turn, with its own state
file (`state_path`) and the project's `warehouse: {type: dbt, diff: <location>, mirror_schema: …}`, each
step a fresh process (wall, peak RSS via os.wait4, load average as it ends):

  first plan      baseline: every row read (local: landed; hashes/warehouse: (key, hash), then the rows);
                  with --send-all, a send_all first plan first (planned only)
  apply           records the baseline (warehouse: writes the mirror's keys)
  no-change plan  nothing to send
  changed plan    after `orders + 1` on 1% of the rows in PostgreSQL (reverted, and the table vacuumed,
                  before the next location starts, so every location sees the same data)

Every plan runs with `--json`: the sync's `read` gives the rows and bytes that crossed the wire from
PostgreSQL. The physical limit, `psql COPY (SELECT * FROM big_users) TO STDOUT > /dev/null`, is timed
in the same run, and its bytes counted in a separate run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dbt_postgres_stream import bench_project, load_average, write_reflow_project  # noqa: E402

LOCATIONS = ("local", "hashes", "warehouse")


def plan_step(bench, label: str, location: str) -> dict[str, object]:
    r = bench.reflow(label, "plan", "--json")
    plan = json.loads(str(r["output"]))
    sync = plan["syncs"][0]
    read = sync.get("read") or {}
    r.update(read=read, changed=sync.get("changed"), plan_rows=sync)
    if read.get("diff") != location:
        print(f"  note: asked {location}, used {read.get('diff')}: {read.get('note')}", flush=True)
    return r


def run_location(bench, location: str, memory_limit: str, mirror_schema: str,
                 send_all: bool = False) -> list[dict[str, object]]:
    write_reflow_project(bench.root, memory_limit,
                         warehouse=f"{{type: dbt, diff: {location}, mirror_schema: {mirror_schema}}}",
                         state_path=f".reflow/{location}.duckdb")
    out = []
    if send_all:        # the first plan of a sync that sends every row (planned only: nothing to send it to)
        sync = bench.root / "syncs" / "big_users.yml"
        text = sync.read_text()
        sync.write_text(text.replace("first_run: baseline", "first_run: send_all"))
        out.append(plan_step(bench, "first plan (send_all)", location))
        sync.write_text(text)
    out.append(plan_step(bench, "first plan (baseline)", location))
    out.append(bench.reflow("apply (records the baseline)", "apply", "--yes"))
    out.append(plan_step(bench, "no-change plan", location))
    changed = bench.change(+1)
    try:
        out.append(plan_step(bench, f"1%-change plan ({changed:,} rows)", location))
        assert out[-1]["changed"] == changed, (out[-1]["changed"], changed)
    finally:
        bench.change(-1)
        bench.vacuum()
    for r in out:
        print(f"  {location:9} {r['step']:32} {r['seconds']:7.1f} s  (CPU {r['cpu_seconds']} s)  {r['peak_rss_mb']:5} MB  "
              f"read {fmt_read(r.get('read'))}  load {r['load']}", flush=True)
    return out


def fmt_read(read) -> str:
    if not read:
        return "-"
    b = read.get("bytes")
    return f"{read.get('rows'):,} rows, {'-' if b is None else f'{b:,}'} B"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, choices=(8, 12), default=12)
    parser.add_argument("--memory-limit", default="512MB", help="the Reflow project's DuckDB memory_limit")
    parser.add_argument("--location", action="append", choices=LOCATIONS, help="default: all three")
    parser.add_argument("--keep", action="store_true", help="keep the project folder and schemas")
    parser.add_argument("--json-out", help="also write the results here")
    parser.add_argument("--send-all", action="store_true",
                        help="plan the first run as first_run: send_all too (before the baseline)")
    parser.add_argument("--text-prefs", action="store_true",
                        help="`prefs` as text, not jsonb (the users SQL payloads judge JSON values row by row; "
                             "before 2026-12-06 they did not, and with jsonb a send_all first run was planned "
                             "in Python)")
    args = parser.parse_args()
    locations = args.location or list(LOCATIONS)
    if args.text_prefs:
        import os

        os.environ["BENCH_JSONB"] = "0"         # read by the model (dbt's env_var), in this process and its children
    results: dict[str, list[dict[str, object]]] = {}
    with bench_project(args.rows, args.columns, args.memory_limit, keep=args.keep) as bench:
        mirror_schema = f"{bench.schema}_mirror"
        bench.drop_schemas.append(mirror_schema)
        print(f"load before: {load_average()}", flush=True)
        copy = bench.psql_copy()
        copy_bytes = bench.psql_copy_bytes()
        print(f"  psql COPY {copy['seconds']} s, {copy['peak_rss_mb']} MB, {copy_bytes:,} B, load {copy['load']}",
              flush=True)
        for location in locations:
            results[location] = run_location(bench, location, args.memory_limit, mirror_schema, args.send_all)
        copy2 = bench.psql_copy()
        print(f"  psql COPY again {copy2['seconds']} s, load {copy2['load']}", flush=True)
    print(f"\n{args.rows:,} rows × {args.columns} columns, memory_limit {args.memory_limit}")
    print("| location | step | wall | bytes read | rows read | peak RSS | load |\n|---|---|---:|---:|---:|---:|---:|")
    for location, steps in results.items():
        for r in steps:
            read = r.get("read") or {}
            b = read.get("bytes")
            print(f"| {location} | {r['step']} | {r['seconds']} s | {'' if b is None else f'{b:,}'} | "
                  f"{read.get('rows', ''):{','}} | {r['peak_rss_mb']} MB | {r['load']} |"
                  if read else
                  f"| {location} | {r['step']} | {r['seconds']} s | | | {r['peak_rss_mb']} MB | {r['load']} |")
    print(f"| psql COPY | {copy['seconds']} s (again at the end: {copy2['seconds']} s) | {copy_bytes:,} | "
          f"{args.rows:,} | {copy['peak_rss_mb']} MB | {copy['load']} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "rows": args.rows, "columns": args.columns, "memory_limit": args.memory_limit,
            "psql_copy": {"seconds": [copy["seconds"], copy2["seconds"]], "bytes": copy_bytes,
                          "peak_rss_mb": copy["peak_rss_mb"], "load": [copy["load"], copy2["load"]]},
            "locations": {loc: [{k: v for k, v in r.items() if k not in ("output", "plan_rows")} for r in steps]
                          for loc, steps in results.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
