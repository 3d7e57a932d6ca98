"""A state file written by the released Reflow (state schema 2) is migrated in place on first open:
its snapshots held model columns, and are projected through today's mapping, so the first plan after
upgrading sends nothing that was already sent (tests/fixtures/state_v2/README.md says how the fixture
was produced: by that release's own code).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from cli_runner import Cli

from engine.state import SCHEMA_VERSION

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "state_v2"

pytestmark = pytest.mark.e2e


def load_tables(db: Path, folder: Path, schema: Path) -> None:
    """A DuckDB file from CREATE statements and one CSV per table."""
    con = duckdb.connect(str(db))
    try:
        for statement in schema.read_text().split(";\n"):
            if statement.strip():
                con.execute(statement)
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
            con.execute(f"COPY \"{table}\" FROM '{folder / (table + '.csv')}' (HEADER)")
    finally:
        con.close()


@pytest.fixture
def upgraded(tmp_path: Path) -> Path:
    """The released version's project, warehouse and state file, as a user has them on disk."""
    root = tmp_path / "project"
    shutil.copytree(FIXTURE / "models", root / "models")
    shutil.copytree(FIXTURE / "syncs", root / "syncs")
    shutil.copy(FIXTURE / "reflow_project.yml", root / "reflow_project.yml")
    (root / ".reflow").mkdir()
    load_tables(root / ".reflow" / "state.duckdb", FIXTURE / "state", FIXTURE / "state" / "schema.sql")
    load_tables(root / "warehouse.duckdb", FIXTURE / "warehouse", FIXTURE / "warehouse" / "schema.sql")
    return root




def test_the_first_plan_after_upgrading_sends_nothing(upgraded, braze_env, capsys):
    code, out, err = Cli(upgraded, capsys)("plan", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert not plan["has_changes"], [(s["name"], s["added"], s["changed"], s["removed"]) for s in plan["syncs"]]
    assert all(s["unmapped"] == [] and s["restart"] is None for s in plan["syncs"])
    con = duckdb.connect(str(upgraded / ".reflow" / "state.duckdb"), read_only=True)
    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    users = json.loads(con.execute("SELECT row_json FROM snap_1 WHERE key = 'c_00003'").fetchone()[0])
    con.close()
    assert version == (str(SCHEMA_VERSION),)
    assert users["external_id"] == "c_00003" and "customer_id" not in users      # Braze's names now
    code, out, err = Cli(upgraded, capsys)("apply", "--yes")
    assert code == 0 and "nothing to send" in out, out + err
    assert braze_env.stats()["requests_total"] == 1              # only the fixture's catalog creation


def test_a_plan_made_by_the_old_release_is_refused(upgraded, braze_env, capsys):
    con = duckdb.connect(str(upgraded / ".reflow" / "state.duckdb"), read_only=True)
    [(old_plan,)] = con.execute("SELECT plan_id FROM plans WHERE status = 'planned'").fetchall()
    con.close()
    code, out, err = Cli(upgraded, capsys)("apply", old_plan, "--yes", "--allow-guard", "max_removed_pct")
    assert code == 1 and "made by an older Reflow; run `reflow plan` again" in err, out + err
    assert braze_env.stats()["requests_total"] == 1


def test_after_upgrading_the_next_change_plans_the_same_rows_the_old_release_did(upgraded, braze_env, capsys):
    """The old release's last plan (left unapplied in the fixture) was made on the step-2 data: the
    migrated snapshot, diffed against the same data, plans the same keys the same way for every field
    the syncs map (rows whose only change was in a column no sync maps are no longer planned)."""
    con = duckdb.connect(str(upgraded / ".reflow" / "state.duckdb"), read_only=True)
    old = con.execute("""SELECT sync, key, op FROM plan_rows WHERE status = 'send'
                         AND NOT (sync IN ('order_events', 'purchases') AND op = 'changed')""").fetchall()
    con.close()
    assert Cli(upgraded, capsys)("plan")[0] == 0
    assert Cli(upgraded, capsys)("apply", "--yes")[0] == 0       # records the re-hashed rows
    (upgraded / "warehouse.duckdb").unlink()
    load_tables(upgraded / "warehouse.duckdb", FIXTURE / "warehouse_step2", FIXTURE / "warehouse" / "schema.sql")
    code, out, err = Cli(upgraded, capsys)("plan", "--json")
    assert code == 0, err
    code, rows, err = Cli(upgraded, capsys)("show", "--limit", "0", "--format", "json")
    new = {(r["sync"], r["key"], r["op"]) for r in json.loads(rows) if r["status"] == "send"}
    assert new == set(old)
