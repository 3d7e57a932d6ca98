"""The DuckDB fast path for users payloads builds exactly what the Python path builds.

Each example plans the same data twice, once with the fast path and once with it switched off,
first as a full sync and again after a change, and compares every plan row: status, channel,
payload (parsed) and data points. Values are chosen to sit on both sides of Braze's rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from braze_checks import rows_as_sent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.destinations.braze.destination import make_destination
from engine.destinations.braze.sql_users import kind_of, struct_fields
from engine.planner import build_plan
from engine.project import ConnectionConfig, Project, WarehouseConfig
from engine.specs import DestinationSpec, Identifier, SyncSpec
from engine.state import DB, State
from engine.warehouse.duckdb import DuckDBWarehouse

TEXT = st.sampled_from(["a@b.com", "x.y+z@example.co.uk", "bad@", "ünï@example.com", "a@b.com\n", "US", "us",
                        "US\n", "|US", "USA", "U", "U.", "opted_in ",
                        "XX", "DE", "en", "EN", "M", "Q", "opted_in", "nope", "2001-02-03", "2023-02-30",
                        "0000-01-01", "+15555550123", "12", "   ", "", "é" * 255, "é" * 256, "e\u0301" * 128,
                        "x" * 255, "x" * 256, "😀", "tab\there", 'quote"d', "back\\slash"])
JSON_TEXTS = ['"s"', "1", "-5", "1.5", "1.50", "1e400", "true", "null", '{"a":1,"b":"x"}', '{"a":1,"a":2}',
              '{"inc":1}', '{"c":{"d":1}}', "[1,2]", '["x","y"]', "[]", "{}", "[1,[2]]", '{"k":"\\u0001"}',
              "12345678901234567890", "123456789012345678901234", '{"a":null}', "[null]", '"\\u00e9"', '"x\\/y"']
ROW = st.fixed_dictionaries({
    "id": st.sampled_from(["c_1", "c_2", "c_3", "c_4", " ", "ç_5", "c_6"]),
    "email": st.one_of(st.none(), TEXT), "country": st.one_of(st.none(), TEXT),
    "dob": st.one_of(st.none(), TEXT), "gender": st.one_of(st.none(), TEXT),
    "first_name": st.one_of(st.none(), TEXT), "phone": st.one_of(st.none(), TEXT),
    "email_subscribe": st.one_of(st.none(), TEXT),
    "score": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64)),
    "visits": st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), "vip": st.one_of(st.none(), st.booleans()),
    "tags": st.one_of(st.none(), st.lists(TEXT, max_size=3), st.lists(st.just("t"), min_size=25, max_size=26)),
    # times Braze cannot store (infinite, years past 3000) beside ordinary ones; "" for a computed time
    # (a first run judges times typed, a later one reads their text: both on each side of years 0 and 3000, in UTC)
    "when": st.sampled_from(["", "", "infinity", "-infinity", "3500-01-01 00:00:00+00", "3000-12-31 00:00:00+00",
                             "3000-12-31 23:59:59.9999-05", "0000-06-01 00:00:00+00", "0001-01-01 00:30:00+01",
                             "0002-01-01 00:00:00+00"]),
    "prefs": st.one_of(st.none(), st.fixed_dictionaries({"channel": st.one_of(st.none(), TEXT),
                                                          "n": st.one_of(st.none(), st.integers(0, 9))})),
    # a JSON column: the shapes the SQL sends as they are, and the ones it leaves to the Python path
    "doc": st.one_of(st.none(), st.sampled_from(JSON_TEXTS), st.builds(json.dumps, st.one_of(
        TEXT, st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False),
        st.dictionaries(st.sampled_from(["a", "b", "a.b", "$time", "inc", "", " x", "é"]),
                        st.one_of(TEXT, st.integers(-9, 9), st.booleans(), st.none()), max_size=3),
        st.lists(st.one_of(st.sampled_from(["x", "y"]), st.integers(0, 3)), max_size=27)))),
})
TABLE = """create table people_raw (id varchar, email varchar, country varchar, dob varchar, gender varchar,
           first_name varchar, phone varchar, email_subscribe varchar, score double, visits bigint, vip boolean,
           tags varchar[], prefs struct(channel varchar, n integer), seen_at timestamptz, born date,
           seen_local timestamp, doc json)"""

VARIANTS = {
    "explicit": dict(identifier=Identifier("external_id", "id"), on_removed="unset",
                     fields={"email": "email", "country": "country", "dob": "dob", "gender": "gender",
                             "first_name": "first_name", "phone": "phone", "email_subscribe": "email_subscribe",
                             "score": "score", "visits": "visits", "vip": "vip", "tags": "tags", "prefs": "prefs",
                             "seen_at": "seen_at", "born": "born", "doc": "doc"}),
    "auto-update-skip": dict(identifier=Identifier("external_id", "id"), mode="update", nulls="skip",
                             on_removed="unset"),
    "alias": dict(identifier=Identifier("user_alias", "id", alias_label="crm"), fields={"email": "email",
                  "score": "score", "prefs": "prefs", "tags": "tags", "first_name": "first_name"}),
    "email-identifier": dict(identifier=Identifier("email", "email"), on_removed="unset",
                             fields={"phone": "phone", "first_name": "first_name", "country": "country"}),
    # times as the standard fields that take one (a DATE dob), that take any short text, as custom ones
    "times-as-standard-fields": dict(identifier=Identifier("external_id", "id"), on_removed="unset",
                                     fields={"dob": "born", "home_city": "seen_at", "last_visit": "seen_local",
                                             "seen_at": "seen_at", "first_name": "first_name"}),
    # a time as a standard field no time is valid for: every row is the Python path's
    "time-as-country": dict(identifier=Identifier("external_id", "id"), fields={"country": "born"}),
}


def _project(root: Path, name: str) -> Project:
    return Project(root=root, name="x", warehouse=WarehouseConfig(path="wh.duckdb"),
                   state_path=root / f"state_{name}" / "state.duckdb",
                   connections={"braze": ConnectionConfig(name="braze", endpoint="http://127.0.0.1:9")})


def _plan_rows(root: Path, variant: dict[str, Any], fast: bool) -> dict[str, tuple[Any, ...]]:
    name = "fast" if fast else "slow"
    project = _project(root, name)
    sync = SyncSpec(name="people", model="people", primary_key=("id",),
                    destination=DestinationSpec(connection="braze", object="users", **variant),
                    path="syncs/people.yml", raw={})
    dest = make_destination(project.connections["braze"], None, sync)
    if not fast:
        dest.sql_items = lambda columns, **_: None  # type: ignore[method-assign]
    with State.open(project.state_path, command="test") as state:
        plan = build_plan(project, [sync], state, DuckDBWarehouse(project), lambda s: dest)
        rows = rows_as_sent(state, plan)
        # record the plan as applied so that the next plan diffs against it
        st_ = state.sync("people")
        assert st_ is not None
        state.con.execute(f"delete from {st_.table}")
        state.con.execute(f"insert into {st_.table} select key, new_hash, new_row from {DB}.plan_rows "
                          "where plan_id = ? and op <> 'removed'", [plan.plan_id])
        state.con.execute(f"update {DB}.syncs set version = version + 1")
    return {r[0]: (r[1], r[2], r[3], json.loads(r[4]) if r[4] else None, r[5],
                   r[6] if r[2] == "invalid" else None) for r in rows}

def _load(root: Path, rows: list[dict[str, Any]]) -> None:
    con = duckdb.connect(str(root / "wh.duckdb"))
    con.execute("drop table if exists people_raw")
    con.execute(TABLE)
    seen: set[str] = set()
    for i, r in enumerate(rows):
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        con.execute("insert into people_raw values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "coalesce(nullif(?, '')::timestamptz, timestamptz '2024-01-01 00:00:00+00' + to_seconds(?)), "
                    "coalesce(nullif(?, '')::timestamptz::date, date '2000-01-01' + ?::int), "
                    "coalesce(timezone('UTC', nullif(?, '')::timestamptz), timestamp '2024-01-01' + to_seconds(?)), "
                    "?::json)",
                    [r["id"], r["email"], r["country"], r["dob"], r["gender"], r["first_name"], r["phone"],
                     r["email_subscribe"], r["score"], r["visits"], r["vip"], r["tags"], r["prefs"],
                     r.get("when", ""), i, r.get("when", ""), i, r.get("when", ""), i, r.get("doc")])
    con.close()


@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(ROW, min_size=1, max_size=8), second=st.lists(ROW, min_size=1, max_size=8))
def test_fast_path_equals_python_path(tmp_path_factory: pytest.TempPathFactory, variant: str,
                                      first: list[dict[str, Any]], second: list[dict[str, Any]]) -> None:
    root = tmp_path_factory.mktemp("fast")
    (root / "models").mkdir()
    (root / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}")
    for rows in (first, first[: len(first) // 2] + second):
        _load(root, rows)
        fast, slow = _plan_rows(root, VARIANTS[variant], True), _plan_rows(root, VARIANTS[variant], False)
        assert fast == slow


@pytest.mark.parametrize("doc", [None, '"s"', "7", "true", '{"a":1,"b":"x"}', '["x","y"]'])
def test_the_fast_path_is_taken_for_ordinary_rows(tmp_path: Path, doc: str | None) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}")
    _load(tmp_path, [{"id": f"c_{i}", "email": f"u{i}@example.com", "country": "US", "dob": "1990-01-02",
                      "gender": "F", "first_name": "Ann", "phone": "+15555550123", "email_subscribe": "opted_in",
                      "score": 1.5, "visits": 3, "vip": True, "tags": ["a"], "prefs": {"channel": "push", "n": 1},
                      "doc": doc}
                     for i in range(50)])
    project = _project(tmp_path, "fast")
    sync = SyncSpec(name="people", model="people", primary_key=("id",), path="syncs/p.yml", raw={},
                    destination=DestinationSpec(connection="braze", object="users", **VARIANTS["explicit"]))
    dest = make_destination(project.connections["braze"], None, sync)
    calls = []
    original = dest.prepare
    dest.prepare = lambda row: calls.append(row) or original(row)  # type: ignore[method-assign]
    with State.open(project.state_path, command="test") as state:
        plan = build_plan(project, [sync], state, DuckDBWarehouse(project), lambda s: dest)
    assert plan.syncs[0].counts.added == 50 and calls == []


def test_struct_types_are_parsed() -> None:
    assert struct_fields('STRUCT("channel" VARCHAR, categories VARCHAR[], "a ""q"" b" INTEGER)') == [
        ("channel", "VARCHAR"), ("categories", "VARCHAR[]"), ('a "q" b', "INTEGER")]
    assert kind_of("STRUCT(a INTEGER, b VARCHAR[])").points == 2
    assert kind_of('STRUCT("a.b" INTEGER)').name is None          # a key Braze refuses: Python decides
    assert kind_of("STRUCT(a STRUCT(b INTEGER))").name is None     # nested objects: Python path
    assert kind_of("INTEGER[][]").name is None
    assert kind_of("MAP(VARCHAR, INTEGER)").name is None
    assert kind_of("STRUCT(a JSON, b INTEGER)").name is None        # a JSON value's shape is its own
    assert kind_of("DECIMAL(10,2)").name == "number" and kind_of("TIMESTAMP WITH TIME ZONE").name == "string"


def test_removed_rows_take_the_fast_path_too(tmp_path_factory: pytest.TempPathFactory) -> None:
    rows = [{"id": f"c_{i}", "email": f"u{i}@example.com", "country": "US", "dob": None, "gender": None,
             "first_name": "Ann", "phone": None, "email_subscribe": None, "score": 1.0, "visits": i, "vip": None,
             "tags": None, "prefs": None} for i in range(20)]
    for variant in ("explicit", "auto-update-skip"):
        root = tmp_path_factory.mktemp(variant)
        (root / "models").mkdir()
        (root / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}")
        _load(root, rows)
        _plan_rows(root, VARIANTS[variant], True)          # the first sync, recorded as applied
        _load(root, rows[:5])
        project = _project(root, "fast")
        sync = SyncSpec(name="people", model="people", primary_key=("id",), path="syncs/p.yml", raw={},
                        destination=DestinationSpec(connection="braze", object="users", **VARIANTS[variant]))
        dest = make_destination(project.connections["braze"], None, sync)
        calls: list[Any] = []
        original = dest.prepare
        dest.prepare = lambda row, o=original, c=calls: c.append(row) or o(row)  # type: ignore[method-assign]
        with State.open(project.state_path, command="test") as state:
            plan = build_plan(project, [sync], state, DuckDBWarehouse(project), lambda s, d=dest: d)
            items = state.con.execute(f"select item from {DB}.plan_rows where plan_id = ? and op = 'removed'",
                                      [plan.plan_id]).fetchall()
        assert plan.syncs[0].counts.removed == 15 and calls == [], variant
        first = json.loads(items[0][0])
        assert first["_update_existing_only"] is True and set(first) - {"external_id", "_update_existing_only"}
        assert all(v is None for k, v in first.items() if k not in ("external_id", "_update_existing_only"))


@pytest.mark.parametrize(("change", "left_out"), [
    ({"score": float("nan")}, "score"), ({"score": float("inf")}, "score"), ({"score": float("-inf")}, "score"),
    ({"tags": ["t"] * 26}, "tags"), ({"when": "infinity"}, "seen_at"), ({"when": "-infinity"}, "seen_at"),
    ({"when": "3500-01-01 00:00:00+00"}, "seen_at"), ({"when": "3000-12-31 23:59:59.9999-05"}, "seen_at"),
])
def test_values_braze_would_mangle_leave_the_fast_path(tmp_path: Path, change: dict[str, Any], left_out: str) -> None:
    """A row otherwise valid, holding one value Braze would mangle: both paths leave that field out."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}")
    row = {"id": "c_1", "email": "a@b.com", "country": "US", "dob": None, "gender": None, "first_name": "Ann",
           "phone": None, "email_subscribe": None, "score": 1.5, "visits": 1, "vip": None, "tags": ["t"],
           "prefs": None, "when": "2024-01-01 00:00:00+00"}
    _load(tmp_path, [row | change])
    fast, slow = (_plan_rows(tmp_path, VARIANTS["explicit"], f) for f in (True, False))
    assert fast == slow
    op, status, _, payload, _, _ = fast["c_1"]
    assert (op, status) == ("added", "send") and left_out not in payload and payload["first_name"] == "Ann"


@pytest.mark.parametrize(("field", "value", "valid"), [
    ("country", "US", True), ("country", "ZW", True), ("country", "USA", False), ("country", "US\n", False),
    ("country", "|US", False), ("country", "U", False), ("country", "us", False), ("country", "", False),
    ("gender", "F", True), ("gender", "FF", False), ("gender", "F|M", False),
    ("email_subscribe", "opted_in", True), ("email_subscribe", "opted_in ", False),
    ("email_subscribe", "subscribed_", False), ("email_subscribe", "opted", False),
])
def test_a_value_one_of_a_list_is_matched_whole(tmp_path: Path, field: str, value: str, valid: bool) -> None:
    """Country, gender and subscription state are taken as they are only when the whole value is one of
    Braze's: a value holding one (or part of one) gives on the fast path what it gives in Python."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}")
    row = {"id": "c_1", "email": "a@b.com", "country": "US", "dob": None, "gender": None, "first_name": "Ann",
           "phone": None, "email_subscribe": None, "score": 1.5, "visits": 1, "vip": None, "tags": ["t"],
           "prefs": None, "when": "2024-01-01 00:00:00+00"}
    _load(tmp_path, [row | {field: value}])
    fast, slow = (_plan_rows(tmp_path, VARIANTS["explicit"], f) for f in (True, False))
    assert fast == slow
    payload = fast["c_1"][3]
    assert (payload.get(field) == value) is valid, fast


@pytest.mark.parametrize("when", ["0000-06-01 00:00:00+00", "0001-01-01 00:30:00+01", "0002-01-01 00:00:00+00",
                                  "3000-12-31 23:59:59.9999-05", "3000-12-31 00:00:00+00", "infinity",
                                  "2024-05-06 07:08:09.5+00"])
def test_times_on_each_side_of_the_years_braze_keeps_agree_typed_and_as_text(tmp_path: Path, when: str) -> None:
    """A first run judges a time typed (the held rows), a later one its normalised text: a time as a DATE
    `dob`, as a standard text field, as a country (never valid), as a custom attribute, on both sides of
    the years 0-3000 in UTC, gives what the Python path gives, in both."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}")
    row = {"id": "c_1", "email": "a@b.com", "country": "US", "dob": None, "gender": None, "first_name": "Ann",
           "phone": None, "email_subscribe": None, "score": 1.5, "visits": 1, "vip": None, "tags": ["t"],
           "prefs": None, "when": when}
    variant = VARIANTS["times-as-standard-fields"]
    _load(tmp_path, [row])
    first = [_plan_rows(tmp_path, variant, f) for f in (True, False)]
    assert first[0] == first[1]
    if when.startswith("2024"):       # an ordinary row, every field sent
        assert set(first[0]["c_1"][3]) == {"external_id", "first_name", "dob", "home_city", "last_visit", "seen_at"}
    _load(tmp_path, [row | {"first_name": "Bo"}, row | {"id": "c_2"}])      # a changed row, an added one
    fast, slow = (_plan_rows(tmp_path, variant, f) for f in (True, False))
    assert fast == slow and set(fast) == {"c_1", "c_2"}
    assert first[0]["c_1"][3] == fast["c_2"][3] | {"external_id": "c_1"}   # judged typed or as text: the same


JSON_SHAPES = JSON_TEXTS + ['{"a":"x","b":true,"c":-3}', '["t"]', json.dumps(["t"] * 25), json.dumps(["t"] * 26),
                           json.dumps("é" * 100), json.dumps("x" * 300), '{"$time":"2020-01-01"}', '{" a":1}',
                           '{"a.b":1}', '{"":1}', '{"add":[1]}', '[true,"x",3]', '{"a":1,"b":2,"a":3}']


def test_a_json_value_gives_what_the_python_path_gives(tmp_path: Path) -> None:
    """An otherwise valid row per JSON shape, as an added row (judged as it is held), then as a changed one
    (its doc set, another's cleared): the SQL sends what the Python path sends (the same payload and data
    points), or leaves the row to it. Each row is judged on its own: one table holds them all."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}")
    row = {"id": "c_1", "email": "a@b.com", "country": "US", "dob": None, "gender": None, "first_name": "Ann",
           "phone": None, "email_subscribe": None, "score": 1.5, "visits": 1, "vip": None, "tags": ["t"],
           "prefs": None, "when": "2024-01-01 00:00:00+00"}
    shapes = list(enumerate(JSON_SHAPES))
    _load(tmp_path, [row | {"id": f"a_{i}", "doc": doc} for i, doc in shapes]
          + [row | {"id": f"b_{i}", "doc": None} for i, _ in shapes])
    fast, slow = (_plan_rows(tmp_path, VARIANTS["explicit"], f) for f in (True, False))
    assert fast == slow and len(fast) == 2 * len(shapes)
    assert fast["a_8"][3]["doc"] == {"a": 1, "b": "x"} and fast["a_8"][4] == fast["b_8"][4] + 2    # 1 per key
    _load(tmp_path, [row | {"id": f"a_{i}", "doc": None} for i, _ in shapes]
          + [row | {"id": f"b_{i}", "doc": doc} for i, doc in shapes])
    fast, slow = (_plan_rows(tmp_path, VARIANTS["explicit"], f) for f in (True, False))
    assert fast == slow and {v[0] for v in fast.values()} == {"changed"} and len(fast) == 2 * len(shapes)


def test_a_struct_holding_json_gives_what_the_python_path_gives(tmp_path: Path) -> None:
    """A STRUCT field of type JSON: its value's nesting, keys and data points are the value's own (found by
    a sceptical review: the SQL once sent `{"b":1,"c":2}` inside one at 1 data point, and NaN unchecked)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "people.sql").write_text("select * from {{ ref('people_raw') }}")
    docs = ['{"b":1,"c":2}', '{"inc":1}', '{"x.y":1}', "[[1]]", "NaN", '"s"']
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("create table people_raw (id varchar, prefs struct(a json))")
    for i, doc in enumerate(docs):
        con.execute("insert into people_raw values (?, {'a': ?::json})", [f"c_{i}", doc])
    con.close()
    variant = dict(identifier=Identifier("external_id", "id"), fields={"prefs": "prefs"})
    fast, slow = (_plan_rows(tmp_path, variant, f) for f in (True, False))
    assert fast == slow and len(fast) == len(docs)
    assert fast["c_0"][4] == 3          # the object's key and the two keys inside it
