"""PostgreSQL → DuckDB landing: a named cursor, batch by batch, with sensible DuckDB types."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from dbtshop import pg_dsn

from engine.errors import WarehouseError
from engine.warehouse.dbt import LANDED, land

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

SQL = """
select i as id,
       (i * 1.25)::numeric(10, 2) as amount,
       i::real / 4 as ratio,
       i % 2 = 0 as even,
       'name ' || i as name,
       ('2024-01-01 10:00:00+02'::timestamptz + i * interval '1 day') as at_tz,
       ('2024-01-01 10:00:00'::timestamp + i * interval '1 hour') as at,
       ('2024-01-01'::date + i) as day,
       json_build_object('i', i, 'tags', json_build_array('a', 'b')) as doc_json,
       jsonb_build_object('i', i) as doc_jsonb,
       array[i, i + 1]::int[] as ints,
       array['x', 'y' || i]::text[] as texts,
       array[1.5, i]::numeric[] as nums,
       '6c0e9b3e-8d6b-4a8b-9c55-0a1b2c3d4e5f'::uuid as ref,
       interval '2 hours' as span,
       decode('ab01', 'hex') as raw,
       null::text as nothing
from generate_series(1, 5) as i
"""


@pytest.fixture(params=[False, True], ids=["transaction", "autocommit"])
def handle(request: pytest.FixtureRequest) -> Iterator[Any]:
    import psycopg2

    conn = psycopg2.connect(pg_dsn())
    conn.autocommit = request.param
    try:
        yield conn
    finally:
        conn.close()


def test_rows_land_with_their_types_in_small_batches(handle: Any) -> None:
    con = duckdb.connect()
    try:
        assert land(con, handle, SQL, model="typed", target="pg", batch=2) == 5
        types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {LANDED})").fetchall())
        assert types == {
            "id": "INTEGER", "amount": "DOUBLE", "ratio": "DOUBLE", "even": "BOOLEAN", "name": "VARCHAR",
            "at_tz": "TIMESTAMP WITH TIME ZONE", "at": "TIMESTAMP", "day": "DATE", "doc_json": "JSON",
            "doc_jsonb": "JSON", "ints": "INTEGER[]", "texts": "VARCHAR[]", "nums": "DOUBLE[]", "ref": "VARCHAR",
            "span": "INTERVAL", "raw": "BLOB", "nothing": "VARCHAR",
        }
        row = con.execute(f"SELECT *, timezone('UTC', at_tz) AS utc FROM {LANDED} WHERE id = 2").fetchone()
        cols = [d[0] for d in con.description]
        got = dict(zip(cols, row, strict=True))
        assert got["amount"] == 2.5 and got["ratio"] == 0.5 and got["even"] is True
        assert got["utc"] == dt.datetime(2024, 1, 3, 8, 0)
        assert got["at"] == dt.datetime(2024, 1, 1, 12, 0) and got["day"] == dt.date(2024, 1, 3)
        assert json.loads(got["doc_json"]) == {"i": 2, "tags": ["a", "b"]}
        assert json.loads(got["doc_jsonb"]) == {"i": 2}
        assert got["ints"] == [2, 3] and got["texts"] == ["x", "y2"] and got["nums"] == [1.5, 2.0]
        assert str(uuid.UUID(got["ref"])) == got["ref"]
        assert got["span"] == dt.timedelta(hours=2) and got["raw"] == b"\xab\x01" and got["nothing"] is None
        # the connection is left clean: no open transaction, usable again
        assert land(con, handle, "select 1 as one where false", model="empty", target="pg") == 0
        assert con.execute(f"SELECT count(*) FROM {LANDED}").fetchone() == (0,)
        assert [r[0] for r in con.execute(f"DESCRIBE {LANDED}").fetchall()] == ["one"]
    finally:
        con.close()


def test_a_failing_model_is_a_warehouse_error_and_the_connection_survives(handle: Any) -> None:
    con = duckdb.connect()
    try:
        with pytest.raises(WarehouseError, match=r"model 'broken' failed on dbt target 'pg': .*no_such_table"):
            land(con, handle, "select * from no_such_table", model="broken", target="pg")
        assert land(con, handle, "select 1 as ok", model="ok", target="pg") == 1
    finally:
        con.close()
