"""Hostile and broken inputs (tests/fixtures/hostile): each gives its exact error, never a traceback,
and nothing reaches Braze that should not. Broken sync specs (alias bombs, custom tags, unknown keys,
wrong types, syntax errors) are covered by tests/unit/test_specs.py with tests/fixtures/bad_specs.

Decisions recorded here:
- Keys that differ only in case or trailing whitespace ('C_1', 'c_1', 'c_1 ') are distinct keys, to
  Reflow as to Braze (external ids are case-sensitive); nothing is normalised, in a deterministic way.
- A future `dob` is sent: Braze has no rule against it (and clamps future event times to now itself).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HOSTILE = FIXTURES / "hostile"
MINIMAL = FIXTURES / "projects" / "minimal"


def make_project(root: Path, case: str | None = None) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(MINIMAL, root)
    if case:
        shutil.copytree(HOSTILE / case, root, dirs_exist_ok=True)
    duckdb.connect(str(root / "warehouse.duckdb")).close()
    return root


def reflow(project: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--project-dir", str(project), *args])
    return code, out.getvalue(), err.getvalue()


def _deep(root: Path) -> None:
    (root / "syncs" / "braze_users.yml").write_text(
        "model: braze_users\nprimary_key: customer_id\ndestination: " + "[" * 5000 + "]" * 5000 + "\n")


def _huge_yaml(root: Path) -> None:
    (root / "syncs" / "huge.yml").write_text("model: braze_users\ndescription: |\n" + ("  " + "x" * 99 + "\n") * 20_000)


def _huge_sql(root: Path) -> None:
    (root / "models" / "braze_users.sql").write_text("select 1 as customer_id -- " + "x" * 6_000_000 + "\n")


Generate = Callable[[Path], None]

# case (a folder of tests/fixtures/hostile, or a generator) -> exit code and the exact stderr of `reflow run`
REFUSED: dict[str, tuple[str | Generate, int, str]] = {
    "malformed project YAML": ("project_malformed", 1,
        "error: reflow_project.yml:4:1: YAML syntax error: expected ',' or '}', but got '<stream end>'\n"
        "1 problem in reflow_project.yml\n"),
    "unknown key and wrong type in the project": ("project_unknown_key", 1,
        "error: reflow_project.yml:4:1: colour: unknown key; expected one of: name, warehouse, state_path, "
        "remote_state, memory_limit, vars, owner, connections\n"
        "reflow_project.yml:10:14: connections.braze.timeout: expected number, got string 'thirty'\n"
        "2 problems in reflow_project.yml\n"),
    "plain http endpoint to a remote host": ("project_http_endpoint", 1,
        "error: reflow_project.yml:7:15: connections.braze.endpoint: plain http:// would send the API key "
        "unencrypted; use https:// (or allow_http: true for testing)\n1 problem in reflow_project.yml\n"),
    "python object YAML tag": ("yaml_python_tag", 1,
        "error: syncs/braze_users.yml:6:15: unsupported YAML tag '!!python/object/apply:os.system'\n1 problem found\n"),
    "Jinja reaching __class__.__mro__": ("jinja_escape_mro", 1,
        "error: models/braze_users.sql:1: unsafe template access refused: access to attribute '__class__' of "
        "'str' object is unsafe.\n"),
    "Jinja reaching __globals__": ("jinja_escape_globals", 1,
        "error: models/braze_users.sql:1: unsafe template access refused: access to attribute '__init__' of "
        "'type' object is unsafe.\n"),
    "model reading the API key's env var": ("jinja_env_secret", 1,
        "error: models/braze_users.sql:4: env_var('BRAZE_API_KEY') feeds a secret (connections.braze.api_key) and "
        "cannot be read by a model\n"),
    "model rendering more than 50 MB": ("jinja_huge_output", 1,
        "error: models/braze_users.sql: the rendered SQL is larger than 50 MB; look for a loop that writes too much\n"),
    "SQL error in a model": ("sql_error", 1,
        "error: sync 'braze_users': model 'braze_users' (models/braze_users.sql) failed on the warehouse: "
        "Binder Error: Referenced column \"no_such_column\" "
        "not found in FROM clause!\n"),
    "non-UTF-8 SQL": ("non_utf8_sql", 1, "error: models/braze_users.sql: not valid UTF-8 text\n"),
    "a statement smuggled after the model": ("sql_smuggled_statement", 1,
        "error: model 'braze_users' is not one SQL query: Parser Error: syntax error at or near \")\"\n"),
    "a model reading Reflow's state": ("sql_reads_the_state", 1,
        "error: model 'braze_users' reads rstate.main.plan_rows: the catalogs memory, rstate, system, temp are "
        "Reflow's own, not the warehouse's\n"),
    "a model naming a table in a string": ("sql_query_function", 1,
        "error: model 'braze_users' calls query_table(): a model names the tables it reads (ref(), source() or a "
        "table name), not a string of SQL\n"),
    "non-UTF-8 YAML": ("non_utf8_yaml", 1,
        "error: syncs/braze_users.yml:3:18: not valid UTF-8 text (byte 0xe9)\n1 problem found\n"),
    "deeply nested YAML": (_deep, 1, "error: syncs/braze_users.yml:3:63: nesting deeper than 50 levels\n1 problem found\n"),
    "huge YAML file": (_huge_yaml, 1,
        "error: syncs/huge.yml: file is larger than 1 MB (2,040,034 bytes); refusing to read it\n1 problem found\n"),
    "huge SQL file": (_huge_sql, 1, "error: models/braze_users.sql: model file is larger than 5 MB\n"),
}


# failures of one sync's model (the plan records them and goes on with the other syncs)
SYNC_FAILURES = {"a statement smuggled after the model", "a model reading Reflow's state",
                 "a model naming a table in a string",
                 "Jinja reaching __class__.__mro__", "Jinja reaching __globals__", "SQL error in a model",
                 "non-UTF-8 SQL", "huge SQL file", "model reading the API key's env var",
                 "model rendering more than 50 MB"}


def test_every_hostile_folder_is_in_a_table():
    folders = {p.name for p in HOSTILE.iterdir() if p.is_dir()}
    used = {c for c, *_ in REFUSED.values() if isinstance(c, str)} | set(SENT_CASES)
    assert folders == used


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_with_its_exact_error_and_nothing_sent(name, tmp_path, braze_env):
    case, code, message = REFUSED[name]
    project = make_project(tmp_path / "p", case if isinstance(case, str) else None)
    if callable(case):
        case(project)
    for command in (("run",), ("plan",), ("validate",)):
        got, out, err = reflow(project, *command)
        expected = message
        if name in SYNC_FAILURES and command != ("validate",):
            # a sync's own failure: the plan goes on with the other syncs and names the one that failed
            expected = message.replace("error: ", "error: sync 'braze_users' was not planned: ", 1)
            assert "braze_users: not planned: " in out, out
        assert (got, err) == (code, expected), (command, out)
    assert braze_env.stats()["requests_total"] == 1          # only the fixture's catalog creation
    assert not Path("/tmp/reflow-pwned").exists()


# cases that run: what is sent, what is invalid (with its reason) and never sent
# case -> (exit code of `reflow run`, {external_id: first_name sent}, {invalid key: reason},
#          {key: why a field was left out while the rest of the row was sent})
SENT_CASES: dict[str, tuple[int, dict[str, str | None], dict[str, str], dict[str, str]]] = {
    # one value Braze would refuse drops that field, not the row
    "bad_values": (3, {"ok_1": "Ada", "future_dob": "Fay", "bad_email": "Bob", "long_name": None,
                       "bad_country": "Dee", "bad_dob": "Eve"}, {}, {
        "bad_email": "sent without email: 'not-an-email' is not a valid email address",
        "long_name": "sent without first_name: string of 300 characters is longer than 255",
        "bad_country": "sent without country: 'XX' is not an ISO-3166-1 alpha-2 country code (e.g. 'US', 'DE')",
        "bad_dob": "sent without dob: '31/12/1999' is not a date in the form YYYY-MM-DD"}),
    "wrong_column_types": (3, {"1": None, "2": None, "3": None}, {}, {
        k: "sent without email: 42 is not a string; first_name: ['a', 'b'] is not a string" for k in "123"}),
    "emoji_values": (0, {"1": "Zoë 🦄", "2": "علي", "3": "陈 👨\u200d👩\u200d👧"}, {}, {}),
    "case_keys": (0, {"C_1": "Upper", "c_1": "Lower", "c_1 ": "Space"}, {}, {}),
    "no_rows": (0, {"1": "Ada", "3": "Cy"}, {}, {}),   # first run; the wipe is tested below
}


@pytest.mark.parametrize("case", list(SENT_CASES))
def test_only_valid_rows_are_sent_and_invalid_ones_say_why(case, tmp_path, braze_env):
    code, sent, invalid, dropped = SENT_CASES[case]
    project = make_project(tmp_path / "p", case)
    got, out, err = reflow(project, "run")
    assert got == code and "Traceback" not in err, out + err
    assert {u["external_id"]: u.get("first_name") for u in braze_env.users()} == sent
    got, out, err = reflow(project, "show", "--op", "invalid", "--format", "json", "--limit", "0")
    assert got == 0, err
    assert {r["key"]: r["reason"] for r in json.loads(out)} == invalid
    got, out, err = reflow(project, "errors", "--json")
    assert {r["key"]: r["reason"] for r in json.loads(out)} == dropped
    # deterministic: a second plan sees the same keys; a value Braze refused is still refused (and now
    # nothing else of the row is left to send: the row is invalid until the model is fixed)
    got, out, err = reflow(project, "plan", "--json")
    plan = json.loads(out)["syncs"][0]
    assert (plan["added"], plan["changed"], plan["removed"], plan["invalid"]) == (0, 0, 0, len(invalid) + len(dropped))


def test_a_model_returning_no_rows_is_blocked_by_the_removal_guard(tmp_path, braze_env):
    project = make_project(tmp_path / "p", "no_rows")
    assert reflow(project, "run")[0] == 0
    before = braze_env.stats()["requests_total"]
    shutil.copy(project / "models" / "braze_users_empty.sql", project / "models" / "braze_users.sql")
    (project / "models" / "braze_users_empty.sql").unlink()
    code, out, err = reflow(project, "run")
    assert code == 4, out + err
    assert err == ("error: guard blocked the plan: braze_users: max_removed_pct: 100% (limit 20%) BLOCKED; nothing "
                   "was sent. Review it (`reflow show`), then pass --allow-guard max_removed_pct to send it\n")
    assert braze_env.stats()["requests_total"] == before
    assert {u["external_id"] for u in braze_env.users()} == {"1", "3"}


# ------------------------------------------------------------------------------------------ property-based


_value = st.one_of(st.none(), st.text(max_size=300), st.integers(-10**6, 10**6).map(str),
                   st.sampled_from(["a@example.com", "US", "1990-01-01", "", " ", "\u0000", "😀" * 100]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.text(min_size=1, max_size=20), _value, _value, _value), max_size=12,
                     unique_by=lambda r: r[0]))
def test_arbitrary_values_are_sent_or_invalid_never_a_crash(rows, tmp_path_factory, braze_env):
    """Any text (control characters, emoji, 300-character strings, nulls) in any column: the plan
    succeeds, each row is sent or is invalid with a reason, and only sent rows reach Braze."""
    project = make_project(tmp_path_factory.mktemp("prop") / "p", "bad_values")
    con = duckdb.connect(str(project / "warehouse.duckdb"))
    con.execute("create table raw (customer_id varchar, email varchar, first_name varchar, country varchar, "
                "dob varchar, orders int)")
    if rows:
        con.executemany("insert into raw values (?, ?, ?, ?, '1990-01-01', 1)", [list(r) for r in rows])
    con.close()
    (project / "models" / "customers.sql").write_text("select * from raw\n")
    braze_env.reset()
    code, out, err = reflow(project, "run", "--json")
    assert code in (0, 1, 3) and "Traceback" not in err and "unexpected" not in err, err
    if code == 1:                                        # only a clear key error is allowed to stop it
        assert "primary key" in err or "customer_id" in err, err
        assert braze_env.users() == []
        return
    got, shown, err = reflow(project, "show", "--format", "json", "--limit", "0")
    assert got == 0, err
    status = {r["key"]: r["status"] for r in json.loads(shown)}
    sent = {u["external_id"] for u in braze_env.users()}
    assert sent == {k for k, s in status.items() if s == "send"}
    assert all(s in ("send", "invalid") for s in status.values()), status
