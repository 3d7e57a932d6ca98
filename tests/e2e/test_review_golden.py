"""Golden files of the plan a person reviews: terminal text (plain, not a TTY), Markdown and JSON, for the
example project's first run, its no-change run and the run after `reflow example mutate`.

Volatile parts (plan ids, timestamps, fingerprints) are normalised. To regenerate after an intended
change: `REFLOW_UPDATE_GOLDEN=1 .venv/bin/pytest tests/e2e/test_review_golden.py`, then read the diff.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytestmark = pytest.mark.e2e

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SCHEMA = Path(__file__).resolve().parent.parent.parent / "schemas" / "plan.schema.json"
UPDATE = os.environ.get("REFLOW_UPDATE_GOLDEN") == "1"

PLAN_ID = re.compile(r"plan_\d{8}T\d{6}_\d+")
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def normalise_text(text: str) -> str:
    return PLAN_ID.sub("plan_<ID>", text)


def normalise_json(data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(PLAN_ID.sub("plan_<ID>", json.dumps(data)))
    data["created_at"] = STAMP.sub("<CREATED_AT>", data["created_at"])
    for s in data["syncs"]:
        s["fingerprint"] = "<FINGERPRINT>"
        s["snapshot_version"] = "<VERSION>"  # one step per checkpoint: depends on batch timing
        s["destination"]["endpoint"] = "<SANDBOX HOST:PORT>"     # a free port each run
    return data


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE or not path.exists():
        if not UPDATE and os.environ.get("CI") == "true":
            pytest.fail(f"golden file {path} is missing; generate it with REFLOW_UPDATE_GOLDEN=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, (f"{name} differs from the golden file; if the change is intended, "
                                "regenerate with REFLOW_UPDATE_GOLDEN=1 and review the diff")


def plan_three_ways(cli: Any, stage: str) -> dict[str, Any]:
    """`reflow plan` as text, Markdown and JSON; each a fresh plan of the same unchanged state."""
    code, text, err = cli("plan")
    assert code == 0, err
    code, markdown, err = cli("plan", "--format", "markdown")
    assert code == 0, err
    code, raw, err = cli("plan", "--json")
    assert code == 0, err
    data = json.loads(raw)
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(data)
    check_golden(f"plan_{stage}.txt", normalise_text(text))
    check_golden(f"plan_{stage}.md", normalise_text(markdown))
    check_golden(f"plan_{stage}.json", json.dumps(normalise_json(data), indent=2, ensure_ascii=False) + "\n")
    assert PLAN_ID.search(text.splitlines()[0]) and PLAN_ID.search(markdown), "every form names its plan"
    return data


def test_plan_golden_first_nochange_and_mutated_runs(cli, braze_env):
    first = plan_three_ways(cli, "first_run")
    assert first["has_changes"] and first["totals"]["changed"] == 0
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err

    again = plan_three_ways(cli, "no_change")
    assert not again["has_changes"]
    code, text, _ = cli("plan")
    assert len(text.strip().splitlines()) == 1, "a no-change run says so in one line"
    assert text.startswith("No changes")

    code, out, err = cli("example", "mutate")
    assert code == 0, err
    mutated = plan_three_ways(cli, "mutated")
    users = next(s for s in mutated["syncs"] if s["name"] == "braze_users")
    assert users["changed"] and users["fields"], "the mutation changes user fields"


def test_plan_text_shows_fields_samples_guards_and_invalid_rows(cli, braze_env, example_project):
    """The terminal plan of a change with an invalid row and a blocked guard names all of it."""
    import duckdb

    assert cli("plan")[0] == 0 and cli("apply", "--yes")[0] == 0
    con = duckdb.connect(str(example_project / "warehouse.duckdb"))
    con.execute("update customers set loyalty_tier = 'platinum' where customer_id in ('c_00002', 'c_00003')")
    con.execute("update customers set email = 'not an email' where customer_id = 'c_00004'")
    con.execute("delete from products where product_id in (select product_id from products order by 1 limit 11)")
    con.close()
    code, text, err = cli("plan", "--select", "braze_users", "catalog_products")
    assert code == 0, err
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("field") and "rows changed" in line)
    assert "became null" in lines[header] and "old → new" in lines[header]
    tier = next(line for line in lines if line.strip().startswith("loyalty_tier"))
    assert tier.split()[1] == "2" and "→ 'platinum'" in tier
    assert any(line.startswith("  changed c_00002: loyalty_tier") for line in lines)
    assert any(line.startswith("  invalid c_00004:") and "email" in line for line in lines)
    assert "✗1 invalid" in text
    assert "guard max_removed: 11 (limit 10) BLOCKED" in text
    assert "Blocked by 1 guard" in text and "--allow-guard max_removed" in text
    code, md, _ = cli("plan", "--select", "braze_users", "catalog_products", "--format", "markdown")
    assert "[!CAUTION]" in md and "`catalog_products.max_removed`" in md
    assert "`loyalty_tier` for 120 Braze users, hold back 1 invalid row" in md
