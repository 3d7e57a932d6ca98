"""Diff benchmark: Reflow's plan vs the raw two-phase DuckDB SQL vs a pandas merge, same data.

    python benchmarks/diff_bench.py --rows 1000000 [--rows 10000000] [--no-pandas]

Data: a 16-column table (varchar key, ints, doubles, decimal, varchar, bool, date, timestamp,
timestamptz, list, struct) of N rows; then 1% of rows changed (one or two columns each), 0.5%
added, 0.5% removed. Every measured step runs in its own fresh process; wall time covers the
step itself and peak memory is the process's max RSS (os.wait4).

Measured:
  reflow-plan       build_plan with the Braze users destination (payloads built and validated,
                    plan rows saved), against a snapshot of the old data
  reflow-nochange   build_plan when nothing changed
  raw-sql           phase 1 FULL JOIN on (key, hash) + phase 2 join of the delta to old rows
                    with changed-column lists: the physical limit on this machine
  pandas            pandas merge on the key + column-wise comparison (a common peer approach)
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
ROOT = HERE.parent
WORK = HERE / ".work"

COLUMNS = """
    'k' || lpad(i::varchar, 9, '0') AS customer_id,
    (i % 1000)::INTEGER AS orders_count,
    (i * 7 % 100000)::BIGINT AS points,
    (i % 97) * 1.25 AS lifetime_value,
    ((i % 1000) / 7.0)::DOUBLE AS score,
    ((i % 5000) / 100)::DECIMAL(10, 2) AS balance,
    'name_' || (i % 50000)::varchar AS first_name,
    ['bronze', 'silver', 'gold', 'platinum'][1 + i % 4] AS loyalty_tier,
    ['US', 'GB', 'DE', 'FR', 'MX'][1 + i % 5] AS country,
    (i % 2 = 0) AS is_vip,
    DATE '1960-01-01' + (i % 15000)::INTEGER AS dob,
    TIMESTAMP '2024-01-01' + to_seconds(i % 31536000) AS last_seen_at,
    TIMESTAMPTZ '2023-01-01 00:00:00+00' + to_seconds(i % 9999999) AS signup_at,
    ['a', 'b', 'c'][1:1 + (i % 3)] AS favourite_categories,
    {'channel': ['push', 'email'][1 + i % 2], 'level': (i % 9)::INTEGER} AS preferences,
    'user' || (i % 100000)::varchar || '@example.com' AS email
"""


def generate(rows: int, path: Path) -> None:
    import duckdb

    if path.exists():
        path.unlink()
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE t_old AS SELECT {COLUMNS} FROM range({rows}) r(i)")
    removed, changed, added = rows // 200, rows // 100, rows // 200
    con.execute(f"""CREATE TABLE t_new AS
        SELECT * REPLACE (
            CASE WHEN hash(customer_id) % 100 = 0 THEN loyalty_tier || '_x' ELSE loyalty_tier END AS loyalty_tier,
            CASE WHEN hash(customer_id) % 200 = 0 THEN lifetime_value + 1 ELSE lifetime_value END AS lifetime_value)
        FROM t_old WHERE hash(customer_id) % 200 <> 7
        UNION ALL SELECT {COLUMNS} FROM range({rows}, {rows + added}) r(i)""")
    con.close()
    print(f"generated {rows:,} rows (~{changed:,} changed, ~{removed:,} removed, {added:,} added)", flush=True)


def project(work: Path, table: str, diff: str = "local"):  # type: ignore[no-untyped-def]
    from engine.project import ConnectionConfig, Project, WarehouseConfig

    (work / "models").mkdir(exist_ok=True)
    (work / "models" / "bench.sql").write_text(f"select * from {{{{ ref('{table}') }}}}\n")
    return Project(root=work, name="bench", warehouse=WarehouseConfig(path="wh.duckdb", diff=diff),
                   state_path=work / "state" / "state.duckdb", memory_limit="1GB",
                   connections={"braze": ConnectionConfig(name="braze", endpoint="http://127.0.0.1:9")})


def sync_spec(first_run: str = "send_all"):  # type: ignore[no-untyped-def]
    from engine.specs import DestinationSpec, Identifier, SyncSpec

    return SyncSpec(name="bench", model="bench", primary_key=("customer_id",), first_run=first_run,
                    destination=DestinationSpec(connection="braze", object="users",
                                                identifier=Identifier("external_id", "customer_id"),
                                                on_removed="unset"),
                    path="syncs/bench.yml", raw={"name": "bench"})


def step_reflow(work: Path, table: str, first_run: str, apply: bool, diff: str = "local") -> dict[str, object]:
    from engine.destinations.braze.destination import make_destination
    from engine.planner import build_plan
    from engine.runner import apply_plan
    from engine.state import State
    from engine.warehouse.duckdb import DuckDBWarehouse

    proj = project(work, table, diff)
    if os.environ.get("REFLOW_BENCH_API_KEY"):     # registered as a project registers its connection's key
        from engine.errors import register_secret

        register_secret(os.environ["REFLOW_BENCH_API_KEY"])
    sync = sync_spec(first_run)
    dest = make_destination(proj.connections["braze"], None, sync)
    with State.open(proj.state_path, command="bench", memory_limit=proj.memory_limit) as state:
        t0 = time.perf_counter()
        plan = build_plan(proj, [sync], state, DuckDBWarehouse(proj), lambda s: dest)
        seconds = time.perf_counter() - t0
        c = plan.syncs[0].counts
        if apply:
            apply_plan(state, plan, {"bench": sync}, lambda s: dest)
    return {"seconds": seconds, "added": c.added, "changed": c.changed, "removed": c.removed,
            "unchanged": c.unchanged, "baseline": c.baseline}


def step_raw_sql(work: Path) -> dict[str, object]:
    """The same diff, hand-written: the physical limit (snapshot prepared outside the timing)."""
    import duckdb

    con = duckdb.connect(":memory:", config={"memory_limit": "1GB", "temp_directory": str(work / "spill")})
    con.execute(f"ATTACH '{work / 'raw_snapshot.duckdb'}' AS snap")
    con.execute(f"ATTACH '{work / 'wh.duckdb'}' AS wh (READ_ONLY)")
    cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM wh.t_new").fetchall()]
    others = [c for c in cols if c != "customer_id"]
    t0 = time.perf_counter()
    con.execute(f"""CREATE TABLE delta AS
        SELECT CASE WHEN s.key IS NULL THEN 'added' WHEN n.key IS NULL THEN 'removed' ELSE 'changed' END AS op,
               coalesce(n.key, s.key) AS k, n.* EXCLUDE (key, h)
        FROM (SELECT customer_id AS key, hash({', '.join(cols)}) AS h, * FROM wh.t_new) n
        FULL JOIN (SELECT key, row_hash FROM snap.rows) s ON n.key = s.key
        WHERE n.h IS DISTINCT FROM s.row_hash""")
    flags = ", ".join(
        f"CASE WHEN to_json(d.{c})::VARCHAR IS DISTINCT FROM json_extract(s.row_json, '$.{c}')::VARCHAR "
        f"THEN '{c}' END" for c in others)
    con.execute(f"""CREATE TABLE changes AS
        SELECT d.k, d.op, list_filter([{flags}], lambda x: x IS NOT NULL) AS changed, s.row_json AS old_row
        FROM delta d LEFT JOIN snap.rows s ON d.op <> 'added' AND s.key = d.k""")
    n = con.execute("SELECT op, count(*) FROM changes GROUP BY op ORDER BY op").fetchall()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "ops": dict(n)}


def prepare_raw_snapshot(work: Path) -> None:
    import duckdb

    path = work / "raw_snapshot.duckdb"
    if path.exists():
        path.unlink()
    con = duckdb.connect(str(path))
    con.execute(f"ATTACH '{work / 'wh.duckdb'}' AS wh (READ_ONLY)")
    cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM wh.t_old").fetchall()]
    con.execute(f"""CREATE TABLE rows AS SELECT customer_id AS key, hash({', '.join(cols)}) AS row_hash,
                    to_json(struct_pack({', '.join(f'{c} := {c}' for c in cols)}))::VARCHAR AS row_json
                    FROM wh.t_old""")
    con.close()


def step_pandas(work: Path) -> dict[str, object]:
    import duckdb

    con = duckdb.connect(str(work / "wh.duckdb"), read_only=True)
    old = con.execute("SELECT * FROM t_old").df()
    new = con.execute("SELECT * FROM t_new").df()
    con.close()
    t0 = time.perf_counter()
    for frame in (old, new):       # nested values are not hashable/comparable as-is: compare as text
        for c in ("favourite_categories", "preferences"):
            frame[c] = frame[c].astype(str)
    merged = old.merge(new, on="customer_id", how="outer", suffixes=("_old", "_new"), indicator=True)
    added = int((merged["_merge"] == "right_only").sum())
    removed = int((merged["_merge"] == "left_only").sum())
    both = merged[merged["_merge"] == "both"]
    others = [c for c in old.columns if c != "customer_id"]
    mask = None
    for c in others:
        diff = ~((both[f"{c}_old"] == both[f"{c}_new"]) | (both[f"{c}_old"].isna() & both[f"{c}_new"].isna()))
        mask = diff if mask is None else (mask | diff)
    changed = int(mask.sum()) if mask is not None else 0
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "added": added, "removed": removed, "changed": changed,
            "note": "timed after loading both tables into DataFrames"}


def run_step(*args: str) -> dict[str, object]:
    """Run one step in a fresh process; return its result with wall seconds and peak RSS (MB)."""
    proc = subprocess.Popen([sys.executable, __file__, "--step", *args], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"step {args} failed")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_mb"] = round(usage.ru_maxrss / 1024)
    return result


def bench(rows: int, pandas: bool) -> dict[str, dict[str, object]]:
    work = WORK / f"diff_{rows}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    generate(rows, work / "wh.duckdb")
    results: dict[str, dict[str, object]] = {}
    results["reflow-baseline"] = run_step("reflow", str(work), "t_old", "baseline", "apply")
    print("baseline", results["reflow-baseline"], flush=True)
    results["reflow-nochange"] = run_step("reflow", str(work), "t_old", "send_all", "no-apply")
    print("no change", results["reflow-nochange"], flush=True)
    results["reflow-plan"] = run_step("reflow", str(work), "t_new", "send_all", "no-apply")
    print("plan", results["reflow-plan"], flush=True)
    prepare_raw_snapshot(work)
    results["raw-sql"] = run_step("raw", str(work))
    print("raw sql", results["raw-sql"], flush=True)
    if pandas:
        results["pandas"] = run_step("pandas", str(work))
        print("pandas", results["pandas"], flush=True)
    shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append")
    parser.add_argument("--no-pandas", action="store_true")
    parser.add_argument("--pandas-max-rows", type=int, default=10_000_000)
    parser.add_argument("--step", nargs="+")
    parser.add_argument("--out", type=Path, default=WORK / "diff_results.json")
    args = parser.parse_args()
    if args.step:
        kind, rest = args.step[0], args.step[1:]
        if kind == "reflow":
            # an optional fifth argument: the diff location (local | hashes; the embedded warehouse has no mirror)
            result = step_reflow(Path(rest[0]), rest[1], rest[2], rest[3] == "apply", *rest[4:5])
        elif kind == "raw":
            result = step_raw_sql(Path(rest[0]))
        else:
            result = step_pandas(Path(rest[0]))
        print(json.dumps(result, default=str))
        return 0
    all_results = {}
    for rows in args.rows or [1_000_000]:
        all_results[rows] = bench(rows, pandas=not args.no_pandas and rows <= args.pandas_max_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(all_results, indent=2, default=str))
    for rows, res in all_results.items():
        print(f"\n{rows:,} rows")
        for name, r in res.items():
            print(f"  {name:16} {r['seconds']:8.2f} s  {r['peak_mb']:6} MB")
        ratio = float(res["reflow-plan"]["seconds"]) / float(res["raw-sql"]["seconds"])  # type: ignore[arg-type]
        print(f"  reflow-plan / raw-sql = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
