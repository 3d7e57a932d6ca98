"""Phase 2 of a delta of added rows only (a first run): the same rows, columns and values as the
general phase 2, whether or not they are stored in key order; updates and streaming still work."""

from __future__ import annotations

import duckdb
import pytest

from engine import diff

COLUMNS = [diff.Column("v", "BIGINT"), diff.Column("t", "TIMESTAMP"), diff.Column("l", "VARCHAR[]"),
           diff.Column("s", "VARCHAR")]
SOURCE = diff.projected("model", [(c.name, c.name) for c in COLUMNS], ["id"])


@pytest.fixture
def con():
    c = duckdb.connect(":memory:")
    c.execute("CREATE TABLE snap (key VARCHAR, row_hash UBIGINT, row_json VARCHAR)")
    # keys out of key order in the model (10, 9, … then text keys), values of several types, nulls
    c.execute("""CREATE TABLE model AS
        SELECT CASE WHEN i < 12 THEN (12 - i)::VARCHAR ELSE 'k' || i END AS id, i AS v,
               TIMESTAMP '2024-01-01' + to_seconds(i) AS t, CASE WHEN i % 3 = 0 THEN NULL ELSE ['a', 'b"'] END AS l,
               CASE WHEN i % 4 = 0 THEN NULL ELSE 'x' || i END AS s
        FROM range(30) r(i)""")
    yield c
    c.close()


NAMES = ("__rn, __key, __op, __hash, __new_row, __old_row, __changed, __old_kept, __uncertain, __replaces, "
         "__collapsed, v, t, l, s")


def rows(con: duckdb.DuckDBPyConnection, *, all_added: bool, in_order: bool = True) -> list[tuple]:
    diff.compute_delta(con, SOURCE, COLUMNS, "id", "snap", sync="s")
    n = diff.prepare_rows(con, COLUMNS, "snap", all_added=all_added, stored_in_order=in_order)
    found = con.execute(f"SELECT {NAMES} FROM {diff.ROWS} ORDER BY __rn").fetchall()
    assert len(found) == n == 30
    return found


def test_the_rows_of_an_added_delta_are_those_of_the_general_phase_2(con):
    general = rows(con, all_added=False)
    types = con.execute(f"SELECT {NAMES} FROM {diff.ROWS} LIMIT 0").description
    diff.drop_scratch(con)
    for in_order in (True, False):
        assert rows(con, all_added=True, in_order=in_order) == general
        assert con.execute(f"SELECT {NAMES} FROM {diff.ROWS} LIMIT 0").description == types
        diff.drop_scratch(con)
    assert [r[1] for r in general][:3] == ["1", "2", "3"]        # numbered in natural key order


def test_updates_and_streaming_of_rows_not_stored_in_order(con):
    rows(con, all_added=True, in_order=False)
    con.execute(f"UPDATE {diff._rows_table(con)} SET __replaces = '{{}}' WHERE __key = '5'")
    assert diff.mark_rows(con, "r.__rn % 7 = 0 OR r.__replaces IS NOT NULL") == 5
    streamed = [r for chunk in diff.stream_rows_marked(con, chunk=2) for r in chunk]
    assert [r.rn for r in streamed] == [5, 7, 14, 21, 28]
    assert streamed[0].key == "5" and streamed[0].replaces == {} and streamed[0].new_row["v"] == 7
    diff.drop_scratch(con)
    assert not con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()[0]
    assert not con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] - 2   # snap and model only
