"""Browsing a saved plan's rows: filters, order, limits, exports and statistics on a synthetic plan."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import UserError
from engine.show import count_rows, csv_record, iter_plan_rows, numeric_deltas, plan_rows

BENCH = Path(__file__).resolve().parent.parent.parent / "benchmarks" / "show_latency.py"


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("show_latency", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def synthetic_plan(state_path: Path, rows: int, *, older: bool = False) -> Iterator[tuple[Any, Any]]:
    """The benchmark's plan builder: `rows` changed rows, even ones change `score`, odd ones `tier`."""
    with load_bench().synthetic_plan(state_path, rows, older=older) as pair:
        yield pair


@pytest.fixture
def plan10k(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    with synthetic_plan(tmp_path / "state.duckdb", 10_000, older=True) as pair:
        yield pair


def test_rows_come_in_plan_order_with_their_exact_payload(plan10k):
    state, plan = plan10k
    rows = plan_rows(state, plan, limit=5)
    assert [r["key"] for r in rows] == [f"u_{i:07d}" for i in range(5)]
    first = rows[0]
    assert first["kind"] == "changed" and first["changed"] == ["score"]
    assert first["diff"] == {"score": {"old": 0, "new": 1}}
    assert first["payload"] == {"external_id": "u_0000000", "score": 1}
    assert json.loads(first["payload_json"]) == first["payload"]


def test_filters_by_field_key_and_op(plan10k):
    state, plan = plan10k
    tier = plan_rows(state, plan, field="tier", limit=3)
    assert [r["key"] for r in tier] == ["u_0000001", "u_0000003", "u_0000005"]
    assert all(r["payload"] == {"external_id": r["key"], "tier": "gold"} for r in tier)
    [last] = plan_rows(state, plan, key="u_0009999")
    assert last["changed"] == ["tier"]
    assert plan_rows(state, plan, op="added") == []
    assert count_rows(state, plan, op="changed") == 10_000
    assert count_rows(state, plan, field="score") == 5_000
    assert count_rows(state, plan, key="u_0009999") == 1


def test_only_this_plans_rows_even_with_an_older_plan_in_the_file(plan10k):
    state, plan = plan10k
    everything = list(iter_plan_rows(state, plan))          # no limit: an export
    assert len(everything) == 10_000
    assert len({r["key"] for r in everything}) == 10_000
    keys = [r["key"] for r in everything]
    assert keys == sorted(keys)


def test_a_sparse_filter_past_the_first_windows_is_found(plan10k):
    state, plan = plan10k
    rows = plan_rows(state, plan, key="u_0009998", field="score")
    assert [r["key"] for r in rows] == ["u_0009998"]
    assert len(plan_rows(state, plan, field="tier", limit=0)) == 5_000


def test_unknown_sync_or_op_is_a_user_error(plan10k):
    state, plan = plan10k
    with pytest.raises(UserError, match="no sync 'nope'.*big_users"):
        plan_rows(state, plan, sync="nope")
    with pytest.raises(UserError, match="--op must be one of"):
        plan_rows(state, plan, op="deleted")


def test_numeric_deltas_are_computed_in_sql(plan10k):
    state, plan = plan10k
    [sp] = plan.syncs
    d = numeric_deltas(state, plan, sp, "score")
    assert d is not None
    assert (d["count"], d["min"], d["max"], d["increased"], d["decreased"]) == (5000, 1.0, 1.0, 5000, 0)
    assert d["whole"] and d["bins"] == [5000]
    assert numeric_deltas(state, plan, sp, "tier") is None       # text: no distribution


def test_numeric_deltas_skip_nan_and_infinity(plan10k):
    """An invalid row whose new value is NaN or Infinity (flagged, never sent) has no delta to chart."""
    from engine.state import DB

    state, plan = plan10k
    [sp] = plan.syncs
    state.con.execute(f"UPDATE {DB}.plan_rows SET status = 'invalid', new_row = '{{\"score\": NaN}}' "
                      "WHERE plan_id = ? AND key = 'u_0000000'", [plan.plan_id])
    state.con.execute(f"UPDATE {DB}.plan_rows SET status = 'invalid', new_row = '{{\"score\": Infinity}}' "
                      "WHERE plan_id = ? AND key = 'u_0000002'", [plan.plan_id])
    d = numeric_deltas(state, plan, sp, "score")
    assert d is not None and (d["count"], d["min"], d["max"], d["bins"]) == (4998, 1.0, 1.0, [4998])


def test_csv_record_keeps_the_payload_text_exactly(plan10k):
    state, plan = plan10k
    [row] = plan_rows(state, plan, limit=1)
    cells = csv_record(row)
    assert cells[:6] == ["big_users", "u_0000000", "changed", "changed", "send", "score"]
    assert cells[8] == row["payload_json"]
    assert json.loads(cells[6]) == {"score": {"old": 0, "new": 1}}
