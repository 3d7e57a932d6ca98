"""A held send_all first run's samples are its first rows in key order (the order a plan's rows are
numbered in when they are not held), found without sorting every key: the same rows as the full sort,
whatever mix of numeric, JSON-array and text keys the model gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.diff import KEY_ORDER
from engine.state import State
from engine.state.plan_rows import HeldSends, SyncRows

KEYS = st.one_of(st.integers(-10**6, 10**6).map(str), st.text("ab_-[]1 ,9Z\u00e9", min_size=1, max_size=6),
                 st.lists(st.integers(0, 30), min_size=1, max_size=3).map(lambda xs: "[" + ",".join(map(str, xs)) + "]"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(KEYS, min_size=1, max_size=40, unique=True), per_op=st.integers(1, 6))
def test_held_samples_are_the_first_rows_in_key_order(tmp_path_factory: pytest.TempPathFactory,
                                                      keys: list[str], per_op: int) -> None:
    path: Path = tmp_path_factory.mktemp("held") / "state.duckdb"
    with State.open(path, command="test") as state:
        state.ensure_sync("people")
        values = ", ".join(f"({i}, '{k.replace(chr(39), chr(39) * 2)}')" for i, k in enumerate(keys))
        # every fifth row is left to the Python path (`__python`): never a held row sent, nor a sample
        select = (f"SELECT k AS __key, 1::UBIGINT AS __hash, k AS name, false AS __refused, "
                  f"i % 5 = 4 AS __python, 1 AS __points FROM (VALUES {values}) AS v(i, k) ORDER BY i")
        rows = SyncRows(state.con, "plan_1", "people", 1).hold(
            select, [("name", "VARCHAR")], HeldSends("'POST /users/track'", "to_json(r.name)::VARCHAR"))
        sampled = [key for _, key, *_ in rows.samples(per_op)]
        sent = [k for i, k in enumerate(keys) if i % 5 != 4]
        expected = [r[0] for r in state.con.execute(
            f"SELECT __k FROM (SELECT unnest(?) AS __k) {KEY_ORDER} LIMIT {per_op}", [sent]).fetchall()]
    assert sampled == expected
