"""The warehouse-side SQL of the diff's first phase (engine/warehouse/dialects.py): generated per dialect,
and, on a real PostgreSQL, hashes that mean the same thing every run and keys spelled as Reflow spells them."""

from __future__ import annotations

import os

import duckdb
import pytest

from engine import diff
from engine.warehouse.dialects import (
    DIALECTS,
    BigQuery,
    Databricks,
    Field,
    Postgres,
    Redshift,
    Snowflake,
    dialect_for,
    key_kinds_supported,
    kind,
    names_digest,
)

FIELDS = [Field("email", "email", "VARCHAR"), Field("signed_up", "created_at", "TIMESTAMP WITH TIME ZONE"),
          Field("ltv", "lifetime_value", "DOUBLE"), Field("vip", "is_vip", "BOOLEAN"),
          Field("tags", "tags", "VARCHAR[]"), Field("meta", "meta", "JSON"), Field("born", "birthday", "DATE"),
          Field("source", None, "VARCHAR", "warehouse")]


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_every_dialect_generates_key_and_hash_over_every_kind(name):
    d = dialect_for(name)
    assert d is not None and d.name == name
    sql = d.hashed("select * from shop.customers", ["customer_id", "region"], FIELDS)
    assert sql.startswith("SELECT ") and "AS __key" in sql and "AS __hash" in sql
    assert "select * from shop.customers" in sql
    for f in FIELDS:
        if f.column:
            assert d.quote(f.column) in sql, (name, f.column)
    assert d.literal("warehouse") in sql                       # a constant field is hashed as its text
    assert d.literal(names_digest(FIELDS)) in sql              # the names enter every hash
    assert d.recipe == ("postgres-hte/v4" if name == "postgres" else f"{name}-md5/v2")
    assert d.experimental is (name != "postgres")


def test_dialect_specific_functions():
    assert "float8send" in Postgres().normalised("c", "float")
    assert "AT TIME ZONE 'UTC'" in Postgres().normalised("c", "timestamptz")
    assert "CONVERT_TIMEZONE('UTC'" in Snowflake().normalised("c", "timestamptz")
    assert "TO_JSON_STRING" in BigQuery().normalised("c", "json")
    assert BigQuery().quote("a`b") == "`a\\`b`" and Databricks().quote("a`b") == "`a``b`"
    assert "TO_HEX(MD5(" in BigQuery().row_hash(FIELDS)
    assert "convert_timezone('UTC'" in Redshift().normalised("c", "timestamptz")
    assert "to_json(array(" in Databricks().key(["a", "b"])
    assert dialect_for("sqlserver") is None
    assert "hashtextextended" in Postgres().row_hash(FIELDS) and "md5(" not in Postgres().row_hash(FIELDS)
    assert "md5(" in Redshift().row_hash(FIELDS) and Redshift().recipe == "redshift-md5/v2"


def test_kinds_and_key_types():
    assert [kind(t) for t in ("TIMESTAMPTZ", "TIMESTAMP", "DATE", "DECIMAL(10,2)", "BIGINT", "BOOLEAN", "JSON",
                              "INTEGER[]", "VARCHAR", "UUID")] == \
        ["timestamptz", "timestamp", "date", "float", "int", "bool", "json", "list", "text", "other"]
    assert key_kinds_supported(["BIGINT", "VARCHAR"]) is None
    assert "DOUBLE" in (key_kinds_supported(["DOUBLE"]) or "")


def test_a_renamed_field_changes_every_hash():
    renamed = [Field("email_address" if f.name == "email" else f.name, f.column, f.type, f.text) for f in FIELDS]
    assert names_digest(renamed) != names_digest(FIELDS)
    reordered = list(reversed(FIELDS))
    assert Postgres().row_hash(reordered) == Postgres().row_hash(FIELDS)


def test_rows_by_key_quotes_every_key_as_a_literal():
    sql = Postgres().rows("select 1", ["id"], FIELDS[:1], ["a'b", "c"])
    assert "('a''b')" in sql and "('c')" in sql
    assert Postgres().rows("select 1", ["id"], FIELDS[:1], None).count("WHERE __key IN") == 0


# ---------------------------------------------------------------- on a real PostgreSQL

def _pg():
    dsn = os.environ.get("REFLOW_TEST_PG")
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail("REFLOW_TEST_PG is not set in CI")
        pytest.skip("no PostgreSQL configured (REFLOW_TEST_PG)")
    import psycopg2

    return psycopg2.connect(dsn)


def _hashes(rows_sql: str, fields: list[Field], key: list[str]) -> list[tuple[str, str]]:
    conn = _pg()
    try:
        with conn.cursor() as cur:
            cur.execute(Postgres().hashed(rows_sql, key, fields) + " ORDER BY 1")
            return [(str(k), str(h)) for k, h in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.postgres
def test_postgres_hash_is_stable_and_normalised():
    fields = [Field("t", "t", "TIMESTAMP WITH TIME ZONE"), Field("x", "x", "DOUBLE"), Field("j", "j", "JSON"),
              Field("s", "s", "VARCHAR")]
    a = _hashes("""SELECT * FROM (VALUES
        (1, '2026-01-01 10:00:00.123+00'::timestamptz, 1::numeric, '{"a": 1, "b": 2}'::jsonb, 'ab'),
        (2, '2026-01-01 11:00:00.123456+01'::timestamptz, 1.0::numeric, '{"b": 2, "a": 1}'::jsonb, 'ab'),
        (3, '2026-01-01 10:00:00.123+00'::timestamptz, 1::numeric, '{"a": 1, "b": 2}'::jsonb, NULL),
        (4, '2026-01-01 10:00:00.123+00'::timestamptz, 1::numeric, '{"a": 1, "b": 2}'::jsonb, '')
        ) AS v(id, t, x, j, s)""", fields, ["id"])
    by_key = dict(a)
    # the same instant to the millisecond (another zone, microseconds), the same number, the same JSON
    assert by_key["1"] == by_key["2"]
    # NULL and '' differ
    assert len({by_key["1"], by_key["3"], by_key["4"]}) == 3
    assert all(len(h) == 16 and int(h, 16) >= 0 for _, h in a)
    assert a == _hashes("""SELECT * FROM (VALUES
        (1, '2026-01-01 10:00:00.123+00'::timestamptz, 1::numeric, '{"a": 1, "b": 2}'::jsonb, 'ab'),
        (2, '2026-01-01 11:00:00.123456+01'::timestamptz, 1.0::numeric, '{"b": 2, "a": 1}'::jsonb, 'ab'),
        (3, '2026-01-01 10:00:00.123+00'::timestamptz, 1::numeric, '{"a": 1, "b": 2}'::jsonb, NULL),
        (4, '2026-01-01 10:00:00.123+00'::timestamptz, 1::numeric, '{"a": 1, "b": 2}'::jsonb, '')
        ) AS v(id, t, x, j, s)""", fields, ["id"])


@pytest.mark.postgres
def test_postgres_dates_and_times_hash_by_instant_whatever_the_session():
    """Dates and times enter the hash by their binary form cut to the millisecond (recipe v4): the session's
    TimeZone and DateStyle change nothing, a change under the millisecond is none (the local normal form
    cuts there too), and a millisecond, an era or infinity is a change."""
    fields = [Field("t", "t", "TIMESTAMP WITH TIME ZONE"), Field("l", "l", "TIMESTAMP"), Field("d", "d", "DATE")]
    rows = """SELECT * FROM (VALUES
        (1, '2026-01-01 10:00:00.123+00'::timestamptz, '2026-01-01 10:00:00.123'::timestamp, '2026-01-01'::date),
        (2, '2026-01-01 10:00:00.123999+00'::timestamptz, '2026-01-01 10:00:00.1239'::timestamp, '2026-01-01'::date),
        (3, '2026-01-01 10:00:00.124+00'::timestamptz, '2026-01-01 10:00:00.123'::timestamp, '2026-01-01'::date),
        (4, '2026-01-01 10:00:00.123+00'::timestamptz, '2026-01-01 10:00:00.123'::timestamp, '0044-03-15 BC'::date),
        (5, '2026-01-01 10:00:00.123+00'::timestamptz, '2026-01-01 10:00:00.123'::timestamp, '0044-03-15'::date),
        (6, 'infinity'::timestamptz, '-infinity'::timestamp, 'infinity'::date),
        (7, NULL::timestamptz, NULL::timestamp, NULL::date)
        ) AS v(id, t, l, d)"""
    conn = _pg()
    try:
        seen = []
        for zone, style in (("UTC", "ISO, MDY"), ("Pacific/Chatham", "SQL, DMY"), ("Asia/Kolkata", "German")):
            with conn.cursor() as cur:
                cur.execute(f"SET TimeZone = '{zone}'; SET DateStyle = '{style}'")
                cur.execute(Postgres().hashed(rows, ["id"], fields) + " ORDER BY 1")
                seen.append(dict((str(k), str(h)) for k, h in cur.fetchall()))
    finally:
        conn.close()
    assert seen[0] == seen[1] == seen[2]
    h = seen[0]
    assert h["1"] == h["2"]
    assert len({h["1"], h["3"], h["4"], h["5"], h["6"], h["7"]}) == 6


@pytest.mark.postgres
def test_postgres_values_are_not_ambiguous_across_columns():
    fields = [Field("a", "a", "VARCHAR"), Field("b", "b", "VARCHAR")]
    rows = dict(_hashes("SELECT * FROM (VALUES (1, 'ab', 'c'), (2, 'a', 'bc'), (3, '1:a', NULL)) AS v(id, a, b)",
                        fields, ["id"]))
    assert len(set(rows.values())) == 3


@pytest.mark.postgres
def test_postgres_keys_are_spelled_as_the_local_diff_spells_them():
    # every control character (nine of them are escaped with a hex letter: PostgreSQL writes it in lowercase,
    # DuckDB in uppercase), next to literal backslashes and a text spelling an escape itself
    controls = ", ".join(f"({100 + c}, 'k' || chr({c}) || 'z')" for c in range(1, 32))
    values = ("(1, 'x'), (20, 'a\"é/' || chr(1)), (300, ''), "
              "(400, '\\' || chr(11)), (401, '\\\\' || chr(31) || chr(26)), (402, '\\u001f'), "
              "(403, chr(14) || chr(14) || '\\u000e' || chr(15)), (404, chr(27) || '\"' || chr(28) || chr(29) || chr(30)), "
              + controls)
    conn = _pg()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {Postgres().key(['id', 'name'])} AS k, {Postgres().key(['id'])} AS single "
                        f"FROM (VALUES {values}) AS m(id, name) ORDER BY id")
            remote = cur.fetchall()
    finally:
        conn.close()
    con = duckdb.connect()
    local = con.execute(f"SELECT {diff.key_expr(['id', 'name'])}, {diff.key_expr(['id'])} FROM "
                        f"(VALUES {values}) AS m(id, name) ORDER BY id").fetchall()
    assert len(local) == 39
    assert [tuple(r) for r in remote] == [tuple(r) for r in local]


def test_a_field_changing_kind_changes_every_hash():
    """1 and '1', ARRAY['x'] and '["x"]' spell alike on the warehouse, but Braze holds a number or an array,
    then a string."""
    counted = [*FIELDS, Field("orders", "orders", "BIGINT")]
    for name, to in (("orders", "VARCHAR"), ("tags", "VARCHAR")):
        retyped = [Field(f.name, f.column, to if f.name == name else f.type, f.text) for f in counted]
        assert names_digest(retyped) != names_digest(counted), name
    widened = [Field(f.name, f.column, "INTEGER" if f.name == "orders" else f.type, f.text) for f in counted]
    assert names_digest(widened) == names_digest(counted)      # the same kind: no change


VALUES_PER_GROUP = "SELECT * FROM (VALUES (1, 'gold', 'Gold'), (2, 'gold', 'Gold VIP'), (3, 'silver', 'Silver'), " \
                   "(4, 'silver', 'Silver'), (5, 'bronze', NULL), (6, 'bronze', 'Bronze'), (7, NULL, 'x'), " \
                   "(8, NULL, 'y')) AS v(id, tier, tier_name)"


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_every_dialect_generates_the_values_of_groups_with_more_than_one(name):
    d = dialect_for(name)
    assert d is not None
    sql = d.values_per_group("select * from shop.tiers", ("cohort_id", "tier"), ("cohort_name", "tier_name"))
    assert d.quote("tier") in sql and d.quote("tier_name") in sql and "HAVING count(*) > 1" in sql
    assert f"AS {d.quote('cohort_id')}" in sql and f"AS {d.quote('cohort_name')}" in sql


@pytest.mark.postgres
def test_postgres_values_per_group_finds_only_the_groups_given_two_values():
    """gold has two names, bronze a name and a null (two values), silver one; rows of no group are no group."""
    conn = _pg()
    try:
        with conn.cursor() as cur:
            cur.execute(Postgres().values_per_group(VALUES_PER_GROUP, ("g", "tier"), ("n", "tier_name"))
                        + " ORDER BY 1, 2")
            found = cur.fetchall()
    finally:
        conn.close()
    assert found == [("bronze", "Bronze"), ("bronze", None), ("gold", "Gold"), ("gold", "Gold VIP")]
    con = duckdb.connect()
    con.execute("CREATE TABLE p (g VARCHAR, n VARCHAR)")
    con.executemany("INSERT INTO p VALUES (?, ?)", found)
    with pytest.raises(diff.PlanError, match="'bronze': \"Bronze\", null; 'gold': \"Gold\", \"Gold VIP\""):
        diff.check_one_value_per_group(con, "p", "g", "n", sync="s", label="tier", why="one name")
