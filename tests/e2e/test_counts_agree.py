"""Counts add up: the plan's totals, apply's summary, `reflow status` and `reflow history` tell one story
about a plan holding every row state (added, changed, removed, unchanged, invalid; after apply:
acknowledged, rejected by Braze, pending because Braze could not be reached)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import duckdb
import pytest
from cli_runner import Cli, sandbox_project, warehouse_sql

from engine.sandbox.testing import running_sandbox

pytestmark = pytest.mark.e2e

PROJECT = sandbox_project("counts", """  nowhere:
    type: braze
    endpoint: "http://127.0.0.1:%d"
    api_key: "{{ env_var('BRAZE_API_KEY') }}"
    max_retries: 0
""")
SYNC = """model: %s
primary_key: id
destination:
  connection: %s
  object: users
  identifier: {external_id: user_id}
  fields: {email: email, tier: tier}
  on_removed: unset
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def people_project(root: Path) -> Path:
    (root / "models").mkdir(parents=True)
    (root / "syncs").mkdir()
    (root / "reflow_project.yml").write_text(PROJECT % closed_port())
    (root / "models" / "people.sql").write_text("select * from {{ ref('people_table') }}")
    (root / "syncs" / "people.yml").write_text(SYNC % ("people", "braze"))
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    con.execute("CREATE TABLE people_table (id VARCHAR, user_id VARCHAR, email VARCHAR, tier VARCHAR)")
    con.execute("INSERT INTO people_table SELECT 'p' || lpad(i::VARCHAR, 2, '0'), 'u' || lpad(i::VARCHAR, 2, '0'), "
                "'p' || i || '@example.com', 'bronze' FROM range(1, 11) AS t(i)")
    con.close()
    return root


def apply_counts(out: str, sync: str) -> dict[str, int]:
    line = next(x for x in out.splitlines() if x.startswith(f"{sync}: "))
    found = re.match(r"[\w]+: ([\d,]+) acknowledged, ([\d,]+) rejected, ([\d,]+) pending", line)
    assert found, line
    return dict(zip(("acknowledged", "rejected", "pending"), (int(g.replace(",", "")) for g in found.groups()),
                    strict=True))


def status_counts(out: str, sync: str) -> dict[str, str]:
    lines = out.splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = re.findall(r"\S+(?: \S+)*", header)
    row = next(x for x in lines[1:] if x.startswith(sync + " "))
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(names, cells, strict=True))


def test_plan_apply_status_and_history_agree_on_every_row_state(tmp_path, capsys, monkeypatch):
    root = people_project(tmp_path / "counts")
    cli = Cli(root, capsys)
    with running_sandbox(reject_external_ids="u12") as sandbox:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
        code, out, err = cli("run")
        assert code == 0, out + err
        # the next day: 2 changed, 1 removed, 2 added (one of which Braze rejects), 3 invalid (no user id),
        # 7 unchanged; and a second sync whose Braze cannot be reached (its 2 rows stay pending)
        warehouse_sql(root, "UPDATE people_table SET tier = 'gold' WHERE id IN ('p01', 'p02')",
            "DELETE FROM people_table WHERE id = 'p03'",
            "INSERT INTO people_table VALUES ('p11', 'u11', 'p11@example.com', 'new'), "
            "('p12', 'u12', 'p12@example.com', 'new'), ('p13', NULL, 'p13@example.com', 'new'), "
            "('p14', NULL, 'p14@example.com', 'new'), ('p15', NULL, 'p15@example.com', 'new')")
        (root / "models" / "elsewhere.sql").write_text("select * from {{ ref('people_table') }} where id < 'p03'")
        (root / "syncs" / "elsewhere.yml").write_text(SYNC % ("elsewhere", "nowhere"))

        code, out, err = cli("plan", "--json")
        assert code == 0, err
        plan = json.loads(out)
        people, elsewhere = (next(s for s in plan["syncs"] if s["name"] == n) for n in ("people", "elsewhere"))
        assert {k: people[k] for k in ("added", "changed", "removed", "unchanged", "invalid", "to_send")} == {
            "added": 2, "changed": 2, "removed": 1, "unchanged": 7, "invalid": 3, "to_send": 5}
        assert people["added"] + people["changed"] + people["unchanged"] + people["invalid"] == people["total"] == 14
        assert (elsewhere["added"], elsewhere["to_send"]) == (2, 2)
        totals = plan["totals"]
        assert (totals["added"], totals["invalid"]) == (4, 3)

        code, out, err = cli("show", "--format", "json", "--limit", "0")
        rows = json.loads(out)
        assert sum(r["kind"] == "invalid" for r in rows) == 3
        assert sum(r["status"] == "send" for r in rows) == 7

        code, out, err = cli("plan")
        assert "Total: 7 rows to send" in out, out          # invalid rows are not subtracted twice
        assert "✗3 invalid" in out

        code, out, err = cli("apply", "--yes")
        assert code == 3, out + err
        applied = {name: apply_counts(out, name) for name in ("people", "elsewhere")}
        assert applied["people"] == {"acknowledged": 4, "rejected": 1, "pending": 3}
        assert applied["elsewhere"] == {"acknowledged": 0, "rejected": 0, "pending": 2}
        sent = sum(a["acknowledged"] + a["rejected"] for a in applied.values()) + applied["elsewhere"]["pending"]
        assert sent == people["to_send"] + elsewhere["to_send"]

        code, out, err = cli("status")
        assert code == 0, err
        for name, counts in applied.items():
            row = status_counts(out, name)
            assert (int(row["rejected"]), int(row["pending"])) == (counts["rejected"], counts["pending"]), out
        assert int(status_counts(out, "people")["snapshot rows"]) == 10 - 1 + 1     # p03 left, p11 came

        code, out, err = cli("history", "--json")
        runs: dict[str, dict] = {}
        for run in json.loads(out):                     # newest first: this apply's runs
            runs.setdefault(run["sync"], run)
        for name, counts in applied.items():
            run = runs[name]
            assert (run["acknowledged"], run["rejected"], run["pending"]) == (
                counts["acknowledged"], counts["rejected"], counts["pending"]), run
