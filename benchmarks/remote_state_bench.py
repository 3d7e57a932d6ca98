"""Remote state benchmark: what keeping the state of a 1M-row sync in S3 costs, against a local state file.

    python benchmarks/remote_state_bench.py [--users 1000000] [--changed 100000]

A users sync of `--users` rows is recorded with `first_run: baseline` (nothing sent: the snapshot holds
every row), then `--changed` users change one field and are sent to the sandbox. The same commands run
twice, as separate processes: with `state_path: .reflow/state.duckdb`, and with
`state_path: s3://bench/prod/state.duckdb` on moto's S3 server (its own process on 127.0.0.1, so the
client does not share its interpreter). Reported: wall time of each command both ways, and, measured
in-process on the final state, the pieces of the difference: taking and releasing the lock, downloading
the state object into a fresh working folder, one upload (CHECKPOINT + conditional PUT: what each
sync's fold and each `upload_every` interval costs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work" / "remote_state"
URL = "s3://bench/prod/state.duckdb"

PROJECT = """
name: remote_state_bench
warehouse: {{type: duckdb, path: ../warehouse.duckdb}}
state_path: {state}
connections:
  braze:
    type: braze
    endpoint: "{{{{ env_var('BRAZE_REST_ENDPOINT') }}}}"
    api_key: "{{{{ env_var('BRAZE_API_KEY') }}}}"
    rate_limit: 1000
    concurrency: 32
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(users: int, changed: int, step: int) -> None:
    import duckdb

    con = duckdb.connect(str(WORK / "warehouse.duckdb"))
    con.execute(f"""CREATE OR REPLACE TABLE users AS SELECT 'c_' || lpad(i::varchar, 7, '0') AS customer_id,
        'First' || (i % 1000) AS first_name, ['bronze', 'silver', 'gold'][1 + i % 3] AS loyalty_tier,
        (i % 97) + CASE WHEN i < {changed} THEN {step} ELSE 0 END AS order_count
        FROM range({users}) AS t(i)""")
    con.close()


def project(name: str, state: str) -> Path:
    folder = WORK / name
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "syncs").mkdir(exist_ok=True)
    (folder / "reflow_project.yml").write_text(PROJECT.format(state=state))
    (folder / "models" / "bench_users.sql").write_text("select * from users")
    (folder / "syncs" / "bench_users.yml").write_text(SYNC)
    return folder


def reflow(folder: Path, env: dict[str, str], *args: str) -> float:
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(folder), *args], env=env,
                          capture_output=True, text=True, check=False)
    took = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"reflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def pieces(folder: Path, env: dict[str, str]) -> dict[str, float]:
    """Lock, download, upload of the final remote state, measured in this process."""
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    from engine.project import load_project
    from engine.state import State
    from engine.state.remote import RemoteState
    from engine.state.remote_lock import RemoteLock

    proj = load_project(folder)
    assert proj.state_url
    remote = RemoteState(proj.state_url, proj.state_path)
    out: dict[str, float] = {}
    began = time.perf_counter()
    remote.bucket.probe()
    out["probe (list the prefix)"] = time.perf_counter() - began
    lock = RemoteLock(remote.bucket, "bench", 120)
    began = time.perf_counter()
    lock.acquire()
    out["lock: create (If-None-Match)"] = time.perf_counter() - began
    began = time.perf_counter()
    lock.release()
    out["lock: release (read + delete)"] = time.perf_counter() - began
    fresh = WORK / "fresh" / "state.duckdb"
    shutil.rmtree(fresh.parent, ignore_errors=True)
    fresh.parent.mkdir(parents=True)
    began = time.perf_counter()
    remote.bucket.download(remote.where.key, fresh)
    out["download into a fresh working folder"] = time.perf_counter() - began
    out["state object MB"] = fresh.stat().st_size / 1e6
    with State.open(proj.state_path, command="bench", remote=remote) as state:
        began = time.perf_counter()
        state.con.execute("CHECKPOINT rstate")
        out["upload: CHECKPOINT"] = time.perf_counter() - began
        began = time.perf_counter()
        remote.upload()
        out["upload: conditional PUT (If-Match)"] = time.perf_counter() - began
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=100_000)
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    build(args.users, 0, 0)

    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sandbox_port = free_port()
    sandbox = subprocess.Popen([sys.executable, "-m", "engine", "sandbox", "--port", str(sandbox_port),
                                "--api-key", "bench-key"], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BRAZE_REST_ENDPOINT": f"http://127.0.0.1:{sandbox_port}",
               "BRAZE_API_KEY": "bench-key", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true"}
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", sandbox_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        import boto3

        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="bench",
                     aws_secret_access_key="bench-secret").create_bucket(Bucket="bench")
        local = project("local", ".reflow/state.duckdb")
        remote = project("remote", URL)
        elsewhere = project("elsewhere", URL)
        rows: dict[str, dict[str, float]] = {}

        def both(label: str, *command: str, remote_folder: Path = remote) -> None:
            rows[label] = {"local": reflow(local, env, *command), "remote": reflow(remote_folder, env, *command)}
            print(f"{label}: local {rows[label]['local']:.2f} s, remote {rows[label]['remote']:.2f} s", flush=True)

        both(f"run, first ({args.users:,} rows recorded as baseline, nothing sent)", "run")
        both("plan, no changes (remote: working copy current, no download)", "plan")
        rows["plan, no changes, another folder (remote: downloads the state)"] = {
            "local": rows["plan, no changes (remote: working copy current, no download)"]["local"],
            "remote": reflow(elsewhere, env, "plan")}
        print(rows, flush=True)
        build(args.users, args.changed, 1)
        both(f"run, {args.changed:,} users changed and sent", "run")
        build(args.users, args.changed, 2)
        both(f"run, {args.changed:,} users changed, another folder (remote: downloads)", "run",
             remote_folder=elsewhere)
        parts = pieces(remote, env)
        print(json.dumps({"commands": rows, "pieces": parts}, indent=2))
    finally:
        for proc in (moto, sandbox):
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
