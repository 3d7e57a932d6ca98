"""dbt-postgres streaming benchmark: a 1M-row dbt model on PostgreSQL planned by Reflow.

    REFLOW_TEST_PG="host=127.0.0.1 port=55432 user=postgres dbname=postgres" \\
        python benchmarks/dbt_postgres_stream.py [--rows 1000000] [--columns 8|12] [--memory-limit 1GB]

Builds a throwaway dbt project (one table model, `big_users`: 8 columns of text, numeric,
boolean, timestamptz, jsonb and integer; --columns 12 adds text, date, double precision and
timestamp) on the PostgreSQL of REFLOW_TEST_PG, and a Reflow project beside it with one users sync
(`first_run: baseline`, so nothing needs a Braze endpoint).
Then, each step in its own fresh process, wall time and peak RSS (os.wait4 ru_maxrss):

  psql COPY       `psql -c "COPY (SELECT * FROM big_users) TO STDOUT" > /dev/null`: the same rows
                  leaving PostgreSQL as fast as its client can take them (the physical limit)
  validate        every row landed in DuckDB (landing only, no diff)
  first plan      every row landed in DuckDB, diffed, planned as baseline
  apply           records the baseline snapshot (no network: baseline rows send nothing)
  no-change plan  every row streamed again; nothing to send
  changed plan    after 1% of rows changed in PostgreSQL: only those are planned

The manifest is parsed (and the model built) before measuring, so no dbt subprocess runs
inside a measured step. The PostgreSQL schema is dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODEL = """{{ config(materialized='table') }}
select 'u' || i as user_id,
       'user' || i || '@example.com' as email,
       'First' || (i % 1000) as first_name,
       ((i % 5000)::numeric(12, 2) / 7)::numeric(12, 2) as lifetime_value,
       (i % 3 = 0) as vip,
       timestamptz '2024-01-01 00:00:00+00' + (i % 100000) * interval '1 minute' as last_seen,
       jsonb_build_object('tier', i % 4, 'score', i % 97) as prefs,
       (i % 50)::int as orders{extra}
from generate_series(1, {{ env_var('BENCH_ROWS') }}) as i
"""

EXTRA = """,
       (array['DE', 'FR', 'US', 'BR', 'JP'])[1 + i % 5] as country,
       date '2020-01-01' + (i % 1500) as signup_day,
       (i % 1000) / 7.0::float8 as score,
       timestamp '2024-06-01 00:00:00' + (i % 86400) * interval '1 second' as updated_at"""
EXTRA_FIELDS = ", country: country, signup_day: signup_day, score: score, updated_at: updated_at"

SYNC = """name: big_users
model: big_users
primary_key: user_id
first_run: baseline
destination:
  connection: braze
  object: users
  identifier: {{external_id: user_id}}
  fields: {{email: email, first_name: first_name, lifetime_value: lifetime_value, vip: vip,
           last_seen: last_seen, prefs: prefs, orders: orders{extra}}}
"""


def write_project(root: Path, dsn: dict[str, str], schema: str, memory_limit: str, columns: int) -> None:
    (root / "models").mkdir(parents=True)
    (root / "syncs").mkdir()
    (root / "dbt_project.yml").write_text("name: bench\nprofile: bench\nconfig-version: 2\nversion: '1.0'\n")
    (root / "profiles.yml").write_text(json.dumps({"bench": {"target": "pg", "outputs": {"pg": {
        "type": "postgres", "host": dsn.get("host", "127.0.0.1"), "port": int(dsn.get("port", 5432)),
        "user": dsn.get("user", "postgres"), "password": dsn.get("password", ""),
        "dbname": dsn.get("dbname", "postgres"), "schema": schema, "threads": 1}}}}))
    wide = columns == 12
    (root / "models" / "big_users.sql").write_text(MODEL.replace("{extra}", EXTRA if wide else ""))
    (root / "syncs" / "big_users.yml").write_text(SYNC.format(extra=EXTRA_FIELDS if wide else ""))
    (root / "reflow_project.yml").write_text(
        f"name: bench\nwarehouse: {{type: dbt}}\nmemory_limit: {memory_limit}\n"
        "connections:\n  braze: {type: braze, endpoint: 'http://127.0.0.1:9', api_key: bench-key-0000}\n")


def measure_wait4(label: str, args: list[str], env: dict[str, str], *, command: list[str] | None = None,
                  stdout: int | None = None) -> dict[str, object]:
    """Run one step in a fresh process; peak RSS of exactly that process via os.wait4."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command or [sys.executable, "-m", "engine", *args], env=env,
                                stdout=out if stdout is None else stdout, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read()
        errors = err.read()
    seconds = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"{label} failed ({code}):\n{text}\n{errors}")
    return {"step": label, "seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "output": text}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, choices=(8, 12), default=8)
    parser.add_argument("--memory-limit", default="1GB", help="the Reflow project's DuckDB memory_limit")
    parser.add_argument("--keep", action="store_true", help="keep the project folder and schema")
    args = parser.parse_args()
    dsn_text = os.environ.get("REFLOW_TEST_PG")
    if not dsn_text:
        raise SystemExit("set REFLOW_TEST_PG to a PostgreSQL DSN (see .ci/run)")
    dsn = dict(part.split("=", 1) for part in dsn_text.split())
    schema = f"reflow_bench_{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="reflow-dbt-bench-"))
    write_project(root, dsn, schema, args.memory_limit, args.columns)
    env = {**os.environ, "BENCH_ROWS": str(args.rows), "DO_NOT_TRACK": "1", "PYTHONPATH": str(ROOT),
           }
    env.pop("DBT_PROFILES_DIR", None)
    env.pop("DBT_TARGET", None)
    import psycopg2

    results = []
    try:
        sys.path.insert(0, str(ROOT))
        os.environ.update({"BENCH_ROWS": str(args.rows), "DO_NOT_TRACK": "1"})
        from engine.project import load_project
        from engine.warehouse.dbt import DbtWarehouse

        warehouse = DbtWarehouse(load_project(root))
        started = time.monotonic()
        warehouse.manifest()
        parse_seconds = time.monotonic() - started
        build_seconds = warehouse.build(["big_users"])
        print(f"dbt parse {parse_seconds:.1f} s, dbt build of {args.rows:,} rows {build_seconds:.1f} s", flush=True)

        common = ["--project-dir", str(root)]
        copy = f'COPY (SELECT * FROM "{schema}".big_users) TO STDOUT'
        with open(os.devnull, "wb") as devnull:
            results.append(measure_wait4("psql COPY … TO STDOUT > /dev/null", [], env,
                                         command=["psql", dsn_text, "-c", copy], stdout=devnull.fileno()))
        results.append(measure_wait4("validate (lands every row, no diff)", [*common, "validate"], env))
        results.append(measure_wait4("first plan (all rows, baseline)", [*common, "plan"], env))
        results.append(measure_wait4("apply (records the baseline)", [*common, "apply", "--yes"], env))
        results.append(measure_wait4("no-change plan", [*common, "plan"], env))
        conn = psycopg2.connect(dsn_text)
        with conn, conn.cursor() as cur:
            cur.execute(f'UPDATE "{schema}".big_users SET orders = orders + 1 '
                        "WHERE substr(user_id, 2)::int % 100 = 0")
            changed = cur.rowcount
        conn.close()
        results.append(measure_wait4(f"changed plan ({changed:,} rows changed)", [*common, "plan", "--json"], env))
        plan = json.loads(str(results[-1]["output"]))
        assert plan["syncs"][0]["changed"] == changed, plan["syncs"][0]
    finally:
        conn = psycopg2.connect(dsn_text)
        with conn, conn.cursor() as cur:
            if not args.keep:
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.keep:
        print(f"kept: project {root}, PostgreSQL schema {schema} (BENCH_ROWS={args.rows})")
    print(f"\n{args.rows:,} rows × {args.columns} columns, memory_limit {args.memory_limit}")
    print("| step | seconds | peak RSS |\n|---|---:|---:|")
    for r in results:
        print(f"| {r['step']} | {r['seconds']} | {r['peak_rss_mb']} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
