"""PostgreSQL → DuckDB landing through COPY lands exactly what the named-cursor path landed.

land() streams the server's CSV into DuckDB; land_rows() is the old row path (psycopg2 values bound
to DuckDB), kept as the fallback. Every edge of every type COPY carries must land the same value
with the same DuckDB type, in a session whose TimeZone is not UTC."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from dbtshop import pg_dsn

import engine.errors
from engine.errors import WarehouseError
from engine.warehouse import dbt as dbt_warehouse
from engine.warehouse import pg_copy
from engine.warehouse.dbt import LANDED, land, land_rows

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

EDGES = r"""
select i as id,
       case i when 1 then '' when 2 then null else 'plain' end as empty_or_null,
       case i when 1 then E'two\nlines, "quoted", and \\ a backslash' when 2 then E'\\N'
              else 'ünïcödé ✓ 𝄞' end as awkward,
       case i when 1 then '"' when 2 then ',' else E'\r\n' end as punctuation,
       ('2024-07-01 12:00:00.123456+00'::timestamptz + i * interval '1 day') as at_tz,
       case i when 1 then '-infinity'::timestamptz when 2 then 'infinity'::timestamptz
              else '1900-01-01 00:00:00 Europe/Amsterdam'::timestamptz end as edge_tz,
       case i when 1 then '-infinity'::timestamp when 2 then 'infinity'::timestamp
              else '2024-02-29 23:59:59.999999'::timestamp end as edge_ts,
       case i when 1 then '-infinity'::date when 2 then 'infinity'::date else '2024-02-29'::date end as edge_day,
       case i when 1 then '24:00:00'::time else '10:00:00.5'::time end as clock,
       case i when 1 then interval '1 year 2 mons 3 days 04:05:06.789' when 2 then interval '-04:05:06'
              else interval '-1 year -2 days +03:00' end as span,
       case i when 1 then 1.23456789012345678901234567890123::numeric when 2 then 'NaN'::numeric
              else ('1' || repeat('0', 400))::numeric end as num,
       case i when 1 then '-Infinity'::float8 when 2 then 'NaN'::float8 else 0.1::float8 end as dbl,
       case i when 1 then 0.1::real else '-Infinity'::real end as flt,
       case i when 1 then true when 2 then null else false end as flag,
       case i when 1 then 9223372036854775807 else -9223372036854775808 end as big,
       case i when 1 then array['a,b', 'q"r', null, '', E'\u00e9\n', '{x}', 'NULL', ' s ', E'back\\slash']
              else array[]::text[] end as texts,
       array['NaN'::float8, 'Infinity', 0.1] as floats,
       array[1.5, 'NaN', 1.23456789012345678901234567890123]::numeric[] as nums,
       array['2024-01-01 10:00+02'::timestamptz, null] as moments,
       array[true, null] as flags,
       array[9223372036854775807, -1]::bigint[] as bigs,
       case i when 1 then '{"b":1,  "a":[1,2], "s": "é\n"}'::json else null end as doc_json,
       '{"b":1,  "a":[1,2], "s": "é"}'::jsonb as doc_jsonb,
       case i when 1 then ''::bytea when 2 then null else decode('00ff0a2c22', 'hex') end as raw,
       '6c0e9b3e-8d6b-4a8b-9c55-0a1b2c3d4e5f'::uuid as ref,
       'a b'::char(5) as padded,
       'xyz'::name as label,
       '100% sure' as pct, i % 2 as parity
from generate_series(1, 3) as i
"""


@pytest.fixture(params=[False, True], ids=["transaction", "autocommit"])
def handle(request: pytest.FixtureRequest) -> Iterator[Any]:
    import psycopg2

    conn = psycopg2.connect(pg_dsn())
    conn.autocommit = request.param
    with conn.cursor() as cur:
        cur.execute("SET TimeZone = 'America/New_York'")
    if not conn.autocommit:
        conn.commit()
    try:
        yield conn
    finally:
        conn.close()


def _landed(lander: Any, handle: Any, sql: str) -> tuple[list[Any], list[Any], list[Any]]:
    con = duckdb.connect()
    try:
        lander(con, handle, sql, model="edges", target="pg")
        types = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {LANDED})").fetchall()
        rows = con.execute(f"SELECT * FROM {LANDED} ORDER BY 1").fetchall()
        texts = con.execute(f"SELECT columns(*)::VARCHAR FROM {LANDED} ORDER BY 1").fetchall()
        return types, rows, texts
    finally:
        con.close()


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(type(a) is type(b) and a == b)


def test_copy_lands_every_edge_exactly_as_the_row_path_did(handle: Any) -> None:
    copied = _landed(land, handle, EDGES)
    rowwise = _landed(land_rows, handle, EDGES)
    assert copied[0] == rowwise[0]
    assert _same(copied[1], rowwise[1])
    assert copied[2] == rowwise[2]


def test_the_edges_land_as_their_values(handle: Any) -> None:
    _, rows, _ = _landed(land, handle, EDGES)
    con = duckdb.connect()
    try:
        land(con, handle, EDGES, model="edges", target="pg")
        cols = [d[0] for d in con.execute(f"SELECT * FROM {LANDED}").description]
        utc = con.execute(f"SELECT id, timezone('UTC', at_tz), timezone('UTC', edge_tz) FROM {LANDED} ORDER BY 1").fetchall()
    finally:
        con.close()
    one, two, three = (dict(zip(cols, r, strict=True)) for r in rows)
    assert one["empty_or_null"] == "" and two["empty_or_null"] is None          # NULL is not ''
    assert one["awkward"] == 'two\nlines, "quoted", and \\ a backslash' and two["awkward"] == "\\N"
    assert three["awkward"] == "ünïcödé ✓ 𝄞" and three["punctuation"] == "\r\n" and one["punctuation"] == '"'
    # timestamptz in a New York session lands as the instant, in UTC
    assert utc[0][1] == dt.datetime(2024, 7, 2, 12, 0, 0, 123456)
    assert utc[0][2] == dt.datetime(1, 1, 1) and utc[1][2] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
    assert utc[2][2] == dt.datetime(1899, 12, 31, 23, 40, 28)                   # Amsterdam's LMT, +00:19:32
    assert one["edge_day"] == dt.date(1, 1, 1) and two["edge_day"] == dt.date(9999, 12, 31)
    assert one["edge_ts"] == dt.datetime(1, 1, 1) and three["edge_ts"] == dt.datetime(2024, 2, 29, 23, 59, 59, 999999)
    assert one["clock"] == dt.time(0, 0) and two["clock"] == dt.time(10, 0, 0, 500000)
    assert one["span"] == dt.timedelta(days=428, seconds=14706, microseconds=789000)
    assert two["span"] == dt.timedelta(hours=-4, minutes=-5, seconds=-6)
    assert one["num"] == 1.2345678901234567 and math.isnan(two["num"]) and three["num"] == math.inf
    assert one["dbl"] == -math.inf and math.isnan(two["dbl"]) and three["dbl"] == 0.1
    assert one["flt"] == 0.1 and two["flt"] == -math.inf
    assert (one["flag"], two["flag"], three["flag"]) == (True, None, False)
    assert one["big"] == 2**63 - 1 and two["big"] == -(2**63)
    assert one["texts"] == ["a,b", 'q"r', None, "", "é\n", "{x}", "NULL", " s ", "back\\slash"]
    assert two["texts"] == []
    assert one["floats"][1:] == [math.inf, 0.1] and math.isnan(one["floats"][0])
    assert one["nums"][0] == 1.5 and one["nums"][2] == 1.2345678901234567
    assert [m and m.astimezone(dt.UTC) for m in one["moments"]] == [dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.UTC), None]
    assert one["flags"] == [True, None] and one["bigs"] == [2**63 - 1, -1]
    assert one["doc_json"] == r'{"b":1,  "a":[1,2], "s": "é\n"}' and two["doc_json"] is None   # the server's text
    assert json.loads(one["doc_jsonb"]) == {"a": [1, 2], "b": 1, "s": "é"}
    assert one["raw"] == b"" and two["raw"] is None and three["raw"] == b"\x00\xff\n,\""
    assert one["padded"] == "a b  " and one["label"] == "xyz" and (one["pct"], one["parity"]) == ("100% sure", 1)


def test_a_type_copy_cannot_render_as_psycopg2_does_falls_back_to_rows(handle: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    real = dbt_warehouse.land_rows

    def spy(*args: Any, **kwargs: Any) -> int:
        used.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(dbt_warehouse, "land_rows", spy)
    sql = ("select i as id, array['{\"a\": 1}'::json, null] as docs, "
           "'10:00+02'::timetz as clock from generate_series(1, 2) as i")
    con = duckdb.connect()
    try:
        assert land(con, handle, sql, model="objects", target="pg") == 2
        assert used == [sql]
        assert con.execute(f"SELECT docs, clock FROM {LANDED} WHERE id = 1").fetchone() == \
            ('[{"a": 1}, null]', "10:00:00+02:00")       # psycopg2's renderings, as before
        used.clear()
        assert land(con, handle, "select 1 as one", model="plain", target="pg") == 1
        assert used == []
    finally:
        con.close()


def test_copy_carries_a_type_as_text_unless_psycopg2_casts_it() -> None:
    """A type psycopg2 leaves as a string (inet, an enum, citext, ...) crosses as its text; one it
    casts to a Python object (a range once psycopg2.extras registers it) needs the row path."""
    class Column:
        def __init__(self, name: str, type_code: int) -> None:
            self.name, self.type_code = name, type_code

    columns = [Column("id", 23), Column("addr", 869), Column("span", 3904)]
    planned = pg_copy.plan(columns, pg_types=dbt_warehouse._PG, pg_arrays=dbt_warehouse._PG_ARRAYS,
                           casters=lambda oid: False)
    assert planned is not None and [(c.name, c.duck_type, c.pg_expr) for c in planned] == \
        [("id", "INTEGER", "{c}"), ("addr", "VARCHAR", "{c}"), ("span", "VARCHAR", "{c}")]
    assert pg_copy.plan(columns, pg_types=dbt_warehouse._PG, pg_arrays=dbt_warehouse._PG_ARRAYS,
                        casters=lambda oid: oid == 3904) is None


def test_output_settings_are_set_for_the_copy_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A session with DateStyle 'SQL, DMY' (the row path cannot parse its dates) and
    extra_float_digits 0: values land exactly, the model's date literals keep their DMY meaning,
    and the session's settings are as they were."""
    import psycopg2

    conn = psycopg2.connect(pg_dsn())
    conn.autocommit = True
    con = duckdb.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET DateStyle = 'SQL, DMY'")
            cur.execute("SET extra_float_digits = 0")
        sql = "select '03/04/2024'::date as day, 0.1::float8 + 0.2::float8 as sum, now()::timestamp as at"
        land(con, conn, sql, model="styled", target="pg")
        day, total = con.execute(f"SELECT day, sum FROM {LANDED}").fetchone()   # type: ignore[misc]
        assert day == dt.date(2024, 4, 3) and total == 0.1 + 0.2
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('DateStyle'), current_setting('extra_float_digits')")
            assert cur.fetchone() == ("SQL, DMY", "0")
    finally:
        con.close()
        conn.close()


def test_a_model_failing_mid_stream_is_located_and_scrubbed(handle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.errors, "_secrets", ("hunter2-pg-secret",))
    con = duckdb.connect()
    try:
        sql = "select i, 100 / (i - 150000) as ratio from generate_series(1, 200000) as i"
        with pytest.raises(WarehouseError, match=r"^model 'ratio' failed on dbt target 'pg': .*division by zero$"):
            land(con, handle, sql, model="ratio", target="pg")
        with pytest.raises(WarehouseError) as caught:
            land(con, handle, "select 'hunter2-pg-secret'::int as n", model="leaky", target="pg")
        assert "hunter2" not in caught.value.message and "***" in caught.value.message
        assert land(con, handle, "select 1 as ok;", model="ok", target="pg") == 1
    finally:
        con.close()


@pytest.mark.parametrize("where", ["before reading", "mid-stream"])
def test_a_duckdb_failure_stops_the_copy_and_leaves_the_connection_usable(
        handle: Any, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    real = pg_copy._read_sql

    def broken(path: str, columns: Any) -> str:
        if where == "before reading":
            return "SELECT no_such_function(1)"
        return real(path, columns).replace("SELECT c0", "SELECT CAST(CASE WHEN length(c0) > 5 THEN 'x' ELSE c0 END AS INTEGER)", 1)

    monkeypatch.setattr(pg_copy, "_read_sql", broken)
    con = duckdb.connect()
    try:
        with pytest.raises(WarehouseError, match=r"^model 'big': cannot land its rows in DuckDB: "):
            land(con, handle, "select i::text from generate_series(1, 2000000) as i", model="big", target="pg")
        monkeypatch.setattr(pg_copy, "_read_sql", real)
        assert land(con, handle, "select 2 as ok", model="ok", target="pg") == 1
    finally:
        con.close()


def test_a_value_larger_than_duckdbs_default_line_limit_lands(handle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[str] = []
    real = dbt_warehouse.land_rows
    monkeypatch.setattr(dbt_warehouse, "land_rows", lambda *a, **k: used.append(a[2]) or real(*a, **k))
    con = duckdb.connect()
    con.execute("SET memory_limit = '256MB'")
    try:
        land(con, handle, "select repeat('x', 5000000) as big, 1 as n", model="wide", target="pg")
        assert con.execute(f"SELECT length(big), n FROM {LANDED}").fetchone() == (5_000_000, 1)
        assert used == []
        # a row longer than the CSV reader's buffer lands through the row path
        sql = "select i as n, repeat('y', 40000000) as huge from generate_series(1, 2) as i"
        assert land(con, handle, sql, model="huge", target="pg") == 2
        assert con.execute(f"SELECT sum(length(huge)) FROM {LANDED}").fetchone() == (80_000_000,)
        assert used == [sql]
    finally:
        con.close()
