"""Phase 1 of the diff on a plain DuckDB connection: counts, the key check from its counts, and the
optimizer setting it scopes to itself."""

from __future__ import annotations

import duckdb
import pytest

from engine import diff
from engine.errors import KeyCheckError


@pytest.fixture
def con():
    c = duckdb.connect(":memory:")
    c.execute("CREATE TABLE snap (key VARCHAR, row_hash UBIGINT, row_json VARCHAR)")
    c.execute("CREATE TABLE model AS SELECT 'k' || i AS id, i AS v FROM range(10) t(i)")
    c.execute(f"INSERT INTO snap SELECT {diff.KEY}, {diff.hash_expr(COLUMNS)}, '{{}}' FROM {SOURCE}")
    yield c
    c.close()


COLUMNS = [diff.Column("v", "BIGINT")]
SOURCE = diff.projected("model", [("v", "v")], ["id"])      # the model through the sync's projection


def delta(con: duckdb.DuckDBPyConnection) -> diff.DeltaCounts:
    return diff.compute_delta(con, SOURCE, COLUMNS, "id", "snap", sync="s")


def test_counts_and_the_rowid_of_each_old_row(con):
    con.execute("UPDATE model SET v = 100 WHERE id = 'k3'")
    con.execute("DELETE FROM model WHERE id = 'k4'")
    con.execute("INSERT INTO model VALUES ('k10', 10)")
    counts = delta(con)
    assert counts == diff.DeltaCounts(total=10, added=1, candidates=1, removed=1)
    rows = con.execute(f"SELECT __op, __k, __rid FROM {diff.DELTA} ORDER BY __k").fetchall()
    rowids = dict(con.execute("SELECT key, rowid FROM snap").fetchall())
    assert rows == [("added", "k10", None), ("changed", "k3", rowids["k3"]), ("removed", "k4", rowids["k4"])]


@pytest.mark.parametrize("statement", [
    "INSERT INTO model VALUES ('k5', 5)",                        # an exact copy: same hash as the snapshot
    "INSERT INTO model VALUES ('k6', 60)",                       # a changed copy
    "INSERT INTO model VALUES ('new', 1), ('new', 2)",           # a new key twice
    "INSERT INTO model VALUES (NULL, 1)",                        # a null key
    "DELETE FROM model WHERE id = 'k1'; INSERT INTO model VALUES ('k2', 2)",   # one gone, one doubled
])
def test_key_problems_are_found_from_the_counts(con, statement):
    con.execute(statement)
    with pytest.raises(KeyCheckError, match="Nothing was sent"):
        delta(con)


def test_the_build_side_setting_is_scoped_to_phase_1(con):
    con.execute("SET disabled_optimizers = 'late_materialization'")
    delta(con)
    assert con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0] == "late_materialization"


def test_a_delta_runs_its_phases_in_order_and_drops_its_scratch_relations(con):
    con.execute("UPDATE model SET v = 100 WHERE id = 'k3'")
    con.execute("DELETE FROM model WHERE id = 'k4'")
    with diff.Delta(con, sync="s") as d:
        with pytest.raises(RuntimeError, match="render"):
            d.render()                       # phase 2 before phase 1: a caller's bug, said at once
        assert d.compare(SOURCE, COLUMNS, "id", "snap") == diff.DeltaCounts(total=9, added=0, candidates=1, removed=1)
        with pytest.raises(RuntimeError, match="rows"):
            _ = d.rows                       # no delta rows before phase 2
        assert d.render() == 2
        assert con.execute(f"SELECT __key, __op FROM {d.rows} ORDER BY __rn").fetchall() == [
            ("k3", "changed"), ("k4", "removed")]
        with pytest.raises(RuntimeError, match="mark"):
            next(d.stream_marked())
        assert d.mark("r.__op = 'removed'") == 1
        assert [[r.key for r in chunk] for chunk in d.stream_marked()] == [["k4"]]
        with pytest.raises(RuntimeError, match="already open"):
            diff.Delta(con, sync="other")    # its scratch tables would be this one's
    scratch = con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'reflow_%'").fetchall()
    assert scratch == []                     # dropped on leaving the block
    with diff.Delta(con, sync="s") as again:     # closed: the connection takes a new one
        assert again.compare(SOURCE, COLUMNS, "id", "snap").total == 9


@pytest.mark.parametrize("type_", ["TIMESTAMP WITH TIME ZONE[]", "TIMESTAMP[]", "TIMESTAMP[2]", "TIMESTAMP_NS[]"])
def test_a_list_of_timestamps_is_normalised_element_by_element(type_):
    """Each element as a timestamp is (ISO text in UTC, to the millisecond), whatever the session's zone; the
    hash sees no change under the millisecond and sees one at it. A list was once taken for a timestamp."""
    con = duckdb.connect(":memory:")
    try:
        col = diff.Column("a", type_)
        values = {}
        for name, first in (("a", "10:00:00.123456"), ("b", "10:00:00.123999"), ("c", "10:00:00.124")):
            con.execute(f"CREATE TABLE {name} AS SELECT ['2026-03-01 {first}+00', NULL]::{type_} AS a")
            for zone in ("UTC", "Asia/Tokyo"):
                con.execute(f"SET TimeZone = '{zone}'")
                row = con.execute(f"SELECT {diff.normalized(col)}, hash({diff.hashable(col)}) FROM {name}").fetchone()
                values.setdefault(name, set()).add(row)
        assert all(len(v) == 1 for v in values.values()), values
        (a,), (b,), (c,) = values["a"], values["b"], values["c"]
        assert a[0] == '["2026-03-01T10:00:00.123Z",null]' and a == b
        assert c[0] == '["2026-03-01T10:00:00.124Z",null]' and c[1] != a[1]
    finally:
        con.close()
