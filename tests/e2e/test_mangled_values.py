"""Values Braze would mangle are flagged, not sent: NaN and ±Infinity (JSON has neither; they were sent as
unsets), infinite timestamps and years outside 0-3000 (they went out as the string "infinity"), arrays
longer than the workspace keeps (sent whole; Braze keeps the newest 25). Each is a warning line in the
plan with counts; a users attribute is left out of its row (the rest is sent), an event is invalid.
Every machine output stays strict JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_runner import Cli, sandbox_project, warehouse_sql

from engine.sandbox.testing import running_sandbox

pytestmark = pytest.mark.e2e

PROJECT = sandbox_project("mangled")
USERS = """model: people
primary_key: id
destination:
  connection: braze
  object: users
  identifier: {external_id: id}
  fields: {first_name: first_name, score: score, seen_at: seen_at, tags: tags, prefs: prefs}
"""
EVENTS = """model: visits
primary_key: visit_id
destination:
  connection: braze
  object: events
  identifier: {external_id: id}
  event: {name: visited, time: visited_at, properties: {amount: amount}}
"""
PEOPLE = """
CREATE OR REPLACE TABLE people_table AS SELECT * FROM (VALUES
  ('u1', 'Ada', 1.5::DOUBLE, TIMESTAMP '2024-05-01 10:00:00', ['a', 'b'], {'w': 1.0::DOUBLE}),
  ('u2', 'Bo',  2.5::DOUBLE, TIMESTAMP '2024-05-02 10:00:00', ['c'],      {'w': 2.0::DOUBLE}),
  ('u3', 'Cy',  3.5::DOUBLE, TIMESTAMP '2024-05-03 10:00:00', ['d'],      {'w': 3.0::DOUBLE}),
  ('u4', 'Di',  4.5::DOUBLE, TIMESTAMP '2024-05-04 10:00:00', ['e'],      {'w': 4.0::DOUBLE}),
  ('u5', 'Ed',  5.5::DOUBLE, TIMESTAMP '2024-05-05 10:00:00', ['f'],      {'w': 5.0::DOUBLE})
) AS t(id, first_name, score, seen_at, tags, prefs)
"""
MANGLE = [       # u1, u4, u5 change a good field too (the bad one is left out); u2, u3 only bad ones (invalid)
    "UPDATE people_table SET score = 'NaN'::DOUBLE, first_name = 'Ada Lovelace' WHERE id = 'u1'",
    "UPDATE people_table SET score = 'Infinity'::DOUBLE WHERE id = 'u2'",
    "UPDATE people_table SET score = '-Infinity'::DOUBLE, seen_at = 'infinity'::TIMESTAMP WHERE id = 'u3'",
    "UPDATE people_table SET seen_at = TIMESTAMP '3500-01-01 00:00:00', prefs = {'w': 'NaN'::DOUBLE}, "
    "first_name = 'Di Di' WHERE id = 'u4'",
    "UPDATE people_table SET tags = range(10000)::VARCHAR[], first_name = 'Ed Ed' WHERE id = 'u5'",
]
VISITS = """
CREATE OR REPLACE TABLE visits_table AS SELECT * FROM (VALUES
  ('v1', 'u1', TIMESTAMP '2024-05-01 10:00:00', 9.5::DOUBLE),
  ('v2', 'u2', 'infinity'::TIMESTAMP, 1.0::DOUBLE),
  ('v3', 'u3', TIMESTAMP '2024-05-03 10:00:00', 'NaN'::DOUBLE)
) AS t(visit_id, id, visited_at, amount)
"""


def strict(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity, as every JSON parser but Python's does."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def project(root: Path, users: str = USERS, project_text: str = PROJECT) -> Cli:
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "syncs").mkdir(exist_ok=True)
    (root / "reflow_project.yml").write_text(project_text)
    (root / "models" / "people.sql").write_text("select * from {{ ref('people_table') }}")
    (root / "models" / "visits.sql").write_text("select * from {{ ref('visits_table') }}")
    (root / "syncs" / "people.yml").write_text(users)
    warehouse_sql(root, PEOPLE, VISITS)
    return root


@pytest.fixture
def braze(monkeypatch):
    with running_sandbox() as sandbox:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
        yield sandbox


def test_mangled_values_are_warned_about_left_out_and_never_unset(tmp_path, capsys, braze):
    root = project(tmp_path / "p")
    cli = Cli(root, capsys)
    assert cli("run")[0] == 0
    assert braze.user("u1")["custom_attributes"]["score"] == 1.5
    warehouse_sql(root, *MANGLE)

    code, out, err = cli("plan")
    assert code == 0, err
    warnings = [line.strip() for line in out.splitlines() if line.strip().startswith("warning:")]
    assert warnings == [
        "warning: tags is an array longer than the workspace keeps (connection array_max) on 1 row; the field is "
        "left out of those rows (the rest of each row is sent); e.g. u5: tags: array of 10,000 elements; the "
        "workspace keeps at most 25 (connection array_max), Braze would drop the oldest",
        "warning: prefs is NaN or ±Infinity (JSON cannot carry it) on 1 row; the field is left out of those rows "
        "(the rest of each row is sent); e.g. u4: prefs.w: NaN is not a finite number; JSON cannot carry it, so "
        "Braze cannot store it",
        "warning: score is NaN or ±Infinity (JSON cannot carry it) on 2 rows; those rows are invalid and not sent; "
        "e.g. u2: score: Infinity is not a finite number; JSON cannot carry it, so Braze cannot store it",
        "warning: score is NaN or ±Infinity (JSON cannot carry it) on 1 row; the field is left out of those rows "
        "(the rest of each row is sent); e.g. u1: score: NaN is not a finite number; JSON cannot carry it, so "
        "Braze cannot store it",
        "warning: seen_at is a time Braze cannot store (infinite, or a year outside 0-3000) on 1 row; those rows "
        "are invalid and not sent; e.g. u3: seen_at: 'infinity' (an infinite timestamp or date) is not a time "
        "Braze can store",
        "warning: seen_at is a time Braze cannot store (infinite, or a year outside 0-3000) on 1 row; the field is "
        "left out of those rows (the rest of each row is sent); e.g. u4: seen_at: '3500-01-01T00:00:00.000Z' is "
        "outside the years 0-3000; Braze would store it as a string, not a time",
    ], out
    assert "~3 changed" in out and "✗2 invalid" in out and "Total: 3 rows to send" in out

    code, out, err = cli("plan", "--json")
    plan = strict(out)
    [people] = plan["syncs"]
    found = {(w["kind"], w["field"], w["action"]): w["rows"] for w in people["warnings"]}
    assert found == {("non_finite", "score", "left out"): 1, ("non_finite", "score", "invalid"): 2,
                     ("non_finite", "prefs", "left out"): 1, ("time_range", "seen_at", "invalid"): 1,
                     ("time_range", "seen_at", "left out"): 1, ("array_max", "tags", "left out"): 1}

    code, out, err = cli("plan", "--format", "markdown")
    assert "⚠ score is NaN or ±Infinity (JSON cannot carry it) on 2 rows" in out

    for fmt in ("json", "jsonl"):
        code, out, err = cli("show", "--format", fmt, "--limit", "0")
        assert code == 0, err
        rows = strict(out) if fmt == "json" else [strict(line) for line in out.splitlines()]
        assert {r["key"] for r in rows} == {"u1", "u2", "u3", "u4", "u5"}
        reasons = {r["key"]: r["reason"] for r in rows}
        assert "score: NaN is not a finite number" in reasons["u1"]
        assert "seen_at: 'infinity'" in reasons["u3"] and "score: -Infinity" in reasons["u3"]
        assert "seen_at: '3500-01-01T00:00:00.000Z' is outside the years 0-3000" in reasons["u4"]
        assert "prefs.w: NaN" in reasons["u4"]
    assert cli("show", "--html", str(tmp_path / "plan.html"))[0] == 0
    html = (tmp_path / "plan.html").read_text()
    data = html.split('<script type="application/json" id="reflow-data">', 1)[1].split("</script>", 1)[0]
    strict(data)

    code, out, err = cli("apply", "--yes")
    assert code == 3, out + err                      # 2 invalid rows pending, 3 sent without a field
    u1, u2, u3, u4, u5 = (braze.user(u)["custom_attributes"] for u in ("u1", "u2", "u3", "u4", "u5"))
    assert u1["score"] == 1.5 and u2["score"] == 2.5  # NaN and Infinity went out as unsets: Braze keeps its value
    assert u3["score"] == 3.5 and u3["seen_at"].startswith("2024-05-03")
    assert u4["prefs"] == {"w": 4.0} and u4["seen_at"].startswith("2024-05-04")
    assert u5["tags"] == ["f"]                       # not the newest 25 of 10,000
    assert braze.user("u1")["first_name"] == "Ada Lovelace"      # the rest of the row went out
    code, out, err = cli("errors", "--json")
    assert {e["key"] for e in strict(out)} == {"u1", "u4", "u5"}

    code, out, err = cli("plan", "--json")           # still flagged until the model is fixed; only bad
    [people] = strict(out)["syncs"]                 # values are left to send now: the rows are invalid
    assert {(w["field"], w["rows"], w["action"]) for w in people["warnings"]} == {
        ("score", 3, "invalid"), ("prefs", 1, "invalid"), ("seen_at", 2, "invalid"), ("tags", 1, "invalid")}
    assert (people["invalid"], people["to_send"]) == (5, 0)


def test_events_with_mangled_values_are_invalid_with_a_reason(tmp_path, capsys, braze):
    root = project(tmp_path / "p")
    (root / "syncs" / "people.yml").unlink()
    (root / "syncs" / "visits.yml").write_text(EVENTS)
    cli = Cli(root, capsys)
    code, out, err = cli("plan", "--json")
    [visits] = strict(out)["syncs"]
    assert (visits["added"], visits["invalid"]) == (1, 2)
    assert {(w["kind"], w["field"], w["rows"], w["action"]) for w in visits["warnings"]} == {
        ("time_range", "time", 1, "invalid"), ("non_finite", "properties.amount", 1, "invalid")}
    code, out, err = cli("show", "--format", "json", "--op", "invalid")
    rows = strict(out)
    assert {r["key"]: r["reason"] for r in rows} == {
        "v2": "time: 'infinity' (an infinite timestamp or date) is not a time Braze can store",
        "v3": "properties.amount: NaN is not a finite number; JSON cannot carry it, so Braze cannot store it"}
    assert [r["new"]["properties.amount"] for r in rows if r["key"] == "v3"] == ["NaN"]
    code, out, err = cli("plan")
    assert "Total: 1 row to send" in out and "✗2 invalid" in out


def test_array_max_is_the_connections_setting(tmp_path, capsys, braze):
    root = project(tmp_path / "p", project_text=PROJECT + "    array_max: 100\n")
    cli = Cli(root, capsys)
    warehouse_sql(root, "UPDATE people_table SET tags = range(100)::VARCHAR[] WHERE id = 'u1'",
        "UPDATE people_table SET tags = range(101)::VARCHAR[] WHERE id = 'u2'")
    code, out, err = cli("plan", "--json")
    [people] = strict(out)["syncs"]
    assert [(w["field"], w["rows"]) for w in people["warnings"]] == [("tags", 1)]
    assert "at most 100" in people["warnings"][0]["example"]["reason"] and people["warnings"][0]["example"]["key"] == "u2"

    (root / "reflow_project.yml").write_text(PROJECT + "    array_max: 101\n")
    code, out, err = cli("plan")
    assert code != 0 and "array_max" in out + err            # Braze's documented maximum is 100
