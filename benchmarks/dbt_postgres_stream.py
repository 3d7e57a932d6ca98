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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODEL = """{{ config(materialized='table') }}
select 'u' || i as user_id,
       'user' || i || '@example.com' as email,
       'First' || (i % 1000) as first_name,
       ((i % 5000)::numeric(12, 2) / 7)::numeric(12, 2) as lifetime_value,
       (i % 3 = 0) as vip,
       timestamptz '2024-01-01 00:00:00+00' + (i % 100000) * interval '1 minute' as last_seen,
       {% if env_var('BENCH_JSONB', '1') == '1' %}jsonb_build_object('tier', i % 4, 'score', i % 97)
       {%- else %}'tier ' || (i % 4) || ', score ' || (i % 97){% endif %} as prefs,
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
    write_reflow_project(root, memory_limit)


def write_reflow_project(root: Path, memory_limit: str, warehouse: str = "{type: dbt}",
                         state_path: str | None = None) -> None:
    """The Reflow project file beside the dbt project (`warehouse`: its YAML flow mapping)."""
    state = f"state_path: {state_path}\n" if state_path else ""
    (root / "reflow_project.yml").write_text(
        f"name: bench\nwarehouse: {warehouse}\nmemory_limit: {memory_limit}\n{state}"
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
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "output": text, "load": load_average()}


def load_average() -> str:
    """The 1-minute load average as the step ends (the machine is shared: wall times are read with it)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


@dataclass
class Bench:
    """A built dbt project on PostgreSQL with a Reflow project beside it (`bench_project`)."""

    root: Path
    schema: str
    dsn_text: str
    env: dict[str, str]
    rows: int
    drop_schemas: list[str] = field(default_factory=list)   # more schemas to drop afterwards

    @property
    def common(self) -> list[str]:
        return ["--project-dir", str(self.root)]

    def reflow(self, label: str, *args: str) -> dict[str, object]:
        return measure_wait4(label, [*self.common, *args], self.env)

    def psql_copy(self) -> dict[str, object]:
        """`psql COPY (SELECT * FROM big_users) TO STDOUT > /dev/null`: the physical limit."""
        copy = f'COPY (SELECT * FROM "{self.schema}".big_users) TO STDOUT'
        with open(os.devnull, "wb") as devnull:
            return measure_wait4("psql COPY … TO STDOUT > /dev/null", [], self.env,
                                 command=["psql", self.dsn_text, "-c", copy], stdout=devnull.fileno())

    def psql_copy_bytes(self) -> int:
        """The bytes the same COPY sends (counted in a separate, untimed run)."""
        copy = f'COPY (SELECT * FROM "{self.schema}".big_users) TO STDOUT'
        proc = subprocess.Popen(["psql", self.dsn_text, "-c", copy], stdout=subprocess.PIPE, env=self.env)
        assert proc.stdout is not None
        total = 0
        while chunk := proc.stdout.read(1 << 20):
            total += len(chunk)
        if proc.wait():
            raise SystemExit("psql COPY failed")
        return total

    def change(self, step: int = 1) -> int:
        """orders += step on 1% of the rows (user_id divisible by 100); returns how many rows."""
        import psycopg2

        conn = psycopg2.connect(self.dsn_text)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(f'UPDATE "{self.schema}".big_users SET orders = orders + %s '
                            "WHERE substr(user_id, 2)::int %% 100 = 0", [step])
                return int(cur.rowcount)
        finally:
            conn.close()

    def vacuum(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.dsn_text)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'VACUUM ANALYZE "{self.schema}".big_users')
        finally:
            conn.close()


def pg_dsn() -> str:
    dsn_text = os.environ.get("REFLOW_TEST_PG")
    if not dsn_text:
        raise SystemExit("set REFLOW_TEST_PG to a PostgreSQL DSN (see .ci/run)")
    return dsn_text


@contextmanager
def bench_project(rows: int, columns: int, memory_limit: str, *, keep: bool = False) -> Iterator[Bench]:
    """Write the dbt and Reflow projects, parse the manifest and build `big_users` (outside any measured
    step); afterwards drop the PostgreSQL schema(s) and the folder unless `keep`."""
    dsn_text = pg_dsn()
    dsn = dict(part.split("=", 1) for part in dsn_text.split())
    schema = f"reflow_bench_{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="reflow-dbt-bench-"))
    write_project(root, dsn, schema, memory_limit, columns)
    env = {**os.environ, "BENCH_ROWS": str(rows), "DO_NOT_TRACK": "1", "PYTHONPATH": str(ROOT)}
    env.pop("DBT_PROFILES_DIR", None)
    env.pop("DBT_TARGET", None)
    bench = Bench(root, schema, dsn_text, env, rows)
    import psycopg2

    try:
        sys.path.insert(0, str(ROOT))
        os.environ.update({"BENCH_ROWS": str(rows), "DO_NOT_TRACK": "1"})
        from engine.project import load_project
        from engine.warehouse.dbt import DbtWarehouse

        warehouse = DbtWarehouse(load_project(root))
        started = time.monotonic()
        warehouse.manifest()
        parse_seconds = time.monotonic() - started
        build_seconds = warehouse.build(["big_users"])
        # the new table vacuumed before anything is measured: else autovacuum's first pass over it (1.5 GB
        # at 10M rows, visibility map and hint bits) ran during the first measured step (a first plan then
        # took 75 s where the same plan after it took 55 s)
        started = time.monotonic()
        bench.vacuum()
        print(f"dbt parse {parse_seconds:.1f} s, dbt build of {rows:,} rows {build_seconds:.1f} s, "
              f"VACUUM ANALYZE {time.monotonic() - started:.1f} s", flush=True)
        yield bench
    finally:
        conn = psycopg2.connect(dsn_text)
        with conn, conn.cursor() as cur:
            if not keep:
                for name in [schema, *bench.drop_schemas]:
                    cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.close()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept: project {root}, PostgreSQL schemas {[schema, *bench.drop_schemas]} (BENCH_ROWS={rows})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, choices=(8, 12), default=8)
    parser.add_argument("--memory-limit", default="1GB", help="the Reflow project's DuckDB memory_limit")
    parser.add_argument("--keep", action="store_true", help="keep the project folder and schema")
    args = parser.parse_args()
    results = []
    with bench_project(args.rows, args.columns, args.memory_limit, keep=args.keep) as bench:
        results.append(bench.psql_copy())
        results.append(bench.reflow("validate (lands every row, no diff)", "validate"))
        results.append(bench.reflow("first plan (all rows, baseline)", "plan"))
        results.append(bench.reflow("apply (records the baseline)", "apply", "--yes"))
        results.append(bench.reflow("no-change plan", "plan"))
        changed = bench.change()
        results.append(bench.reflow(f"changed plan ({changed:,} rows changed)", "plan", "--json"))
        plan = json.loads(str(results[-1]["output"]))
        assert plan["syncs"][0]["changed"] == changed, plan["syncs"][0]
    print(f"\n{args.rows:,} rows × {args.columns} columns, memory_limit {args.memory_limit}")
    print("| step | seconds | peak RSS |\n|---|---:|---:|")
    for r in results:
        print(f"| {r['step']} | {r['seconds']} | {r['peak_rss_mb']} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
