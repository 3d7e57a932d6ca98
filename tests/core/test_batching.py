"""The runner groups stored payloads into requests in DuckDB, a window of plan rows at a time:
requests stay full across windows, gaps in the plan rows (invalid rows) are skipped, groups over
the byte budget are split by the destination, and every row is sent once, in plan order."""

from __future__ import annotations

import json

import pytest

from engine import runner
from engine.destinations.memory import MemoryDestination


@pytest.mark.parametrize("window", [1, 7, 10_000])
def test_requests_are_full_across_windows_and_rows_go_once_in_order(lab, monkeypatch, window):
    monkeypatch.setattr(runner, "READ_CHUNK", window)
    lab.insert_people(50)
    invalid = {f"p{i:05d}": "bad" for i in (3, 4, 5, 17, 30)}     # gaps in the rows to send
    sync = lab.sync()
    dest = MemoryDestination(max_objects_per_request=4, invalid_keys=invalid)
    plan = lab.plan(sync, dest)
    result = lab.apply(plan, sync, dest)
    sent = [k for b in dest.received for k in b.keys]
    assert sent == sorted(f"p{i:05d}" for i in range(50) if f"p{i:05d}" not in invalid)
    sizes = [len(b.keys) for b in dest.received]
    assert sizes[:-1] == [4] * (len(sizes) - 1) and sizes[-1] == 45 - 4 * (len(sizes) - 1)
    s = result.syncs[0]
    assert (s.acknowledged, s.invalid, s.requests) == (45, 5, 12)
    assert s.data_points == plan.syncs[0].data_points
    assert [json.loads(i)["key"] for b in dest.received for i in b.items] == sent    # item i belongs to key i


def test_a_group_over_the_byte_budget_is_split_by_the_destination(lab, monkeypatch):
    monkeypatch.setattr(runner, "READ_CHUNK", 9)
    lab.insert_people(30)
    sync = lab.sync()
    dest = MemoryDestination(max_objects_per_request=6, max_body_bytes=700)
    plan = lab.plan(sync, dest)
    result = lab.apply(plan, sync, dest)
    for b in dest.received:
        assert len(b.keys) <= 6 and len(",".join(b.items).encode()) <= 700
    assert any(len(b.keys) < 6 for b in dest.received[:-1])          # the budget, not the count, cut some
    assert sorted(k for b in dest.received for k in b.keys) == [f"p{i:05d}" for i in range(30)]
    assert result.syncs[0].acknowledged == 30 and result.syncs[0].data_points == plan.syncs[0].data_points


def test_rejected_rows_in_a_partly_acknowledged_request_keep_their_own_data_points(lab, run_once):
    lab.insert_people(12)
    sync = lab.sync()
    plan, result = run_once(sync, MemoryDestination(max_objects_per_request=5, reject_keys={"p00002": "no"}))
    s = result.syncs[0]
    per_row = plan.syncs[0].data_points // 12
    assert (s.acknowledged, s.rejected) == (11, 1) and s.data_points == 11 * per_row
