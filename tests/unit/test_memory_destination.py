"""MemoryDestination: the in-memory destination the core's tests run against."""

from __future__ import annotations

import json
import threading

import pytest

from engine.destinations.base import ACKNOWLEDGED, NOT_ATTEMPTED, REJECTED, Batch, Item, PlanRow, Skip
from engine.destinations.memory import MemoryDestination
from engine.errors import DestinationError


def test_prepare_added_sends_all_values_as_canonical_json() -> None:
    dest = MemoryDestination()
    item = dest.prepare(PlanRow("k1", "added", {"b": 2, "a": {"y": 1, "x": None}}))
    assert item == Item("memory", '{"fields":{"a":{"x":null,"y":1},"b":2},"key":"k1","op":"added"}', 2)


def test_prepare_changed_sends_only_changed_values() -> None:
    dest = MemoryDestination()
    row = PlanRow("k1", "changed", {"a": 1, "b": 3}, old_values={"a": 1, "b": 2}, changed=("b",))
    item = dest.prepare(row)
    assert isinstance(item, Item)
    assert json.loads(item.item_json) == {"key": "k1", "op": "changed", "fields": {"b": 3}}
    assert item.data_points == 1


def test_removed_rows_follow_sends_removed() -> None:
    row = PlanRow("k1", "removed", {"a": 1})
    assert isinstance(MemoryDestination(sends_removed=True).prepare(row), Item)
    assert isinstance(MemoryDestination(sends_removed=False).prepare(row), Skip)


def test_append_only_skips_changes_and_removals() -> None:
    dest = MemoryDestination(append_only=True)
    assert dest.capabilities.append_only
    assert isinstance(dest.prepare(PlanRow("k", "changed", {"a": 2}, {"a": 1}, ("a",))), Skip)
    assert isinstance(dest.prepare(PlanRow("k", "removed", {"a": 2})), Skip)
    assert isinstance(dest.prepare(PlanRow("k", "added", {"a": 2})), Item)


def test_batches_respect_max_objects_per_request() -> None:
    dest = MemoryDestination(max_objects_per_request=3)
    batches = list(dest.batches("memory", [(str(i), "{}") for i in range(7)]))
    assert [len(b.keys) for b in batches] == [3, 3, 1]
    assert batches[2].keys == ("6",)


def test_estimate_counts_requests_and_data_points() -> None:
    dest = MemoryDestination(max_objects_per_request=75)
    est = dest.estimate({"memory": (151, 400)})
    assert est.requests == {"memory": 3}
    assert est.data_points == 400
    assert est.seconds == pytest.approx(3 / 1000)


def test_send_acknowledges_and_records() -> None:
    dest = MemoryDestination()
    batch = Batch("memory", ("a", "b"), ('{"x":1}', '{"x":2}'))
    results = dest.send(batch)
    assert [(r.key, r.outcome) for r in results] == [("a", ACKNOWLEDGED), ("b", ACKNOWLEDGED)]
    assert dest.received == [batch]
    assert dest.acknowledged == {"a": '{"x":1}', "b": '{"x":2}'}
    assert dest.sent_items == [{"x": 1}, {"x": 2}]


def test_reject_keys_with_reasons() -> None:
    dest = MemoryDestination(reject_keys={"b": "email: bad"})
    results = dest.send(Batch("memory", ("a", "b"), ("1", "2")))
    assert results[1].outcome == REJECTED and results[1].reason == "email: bad"
    assert results[0].outcome == ACKNOWLEDGED
    plain = MemoryDestination(reject_keys=["a"]).send(Batch("memory", ("a",), ("1",)))
    assert plain[0].outcome == REJECTED and plain[0].reason


def test_fail_after_batches_raises_destination_error() -> None:
    dest = MemoryDestination(fail_after_batches=2)
    dest.send(Batch("memory", ("a",), ("1",)))
    dest.send(Batch("memory", ("b",), ("1",)))
    with pytest.raises(DestinationError):
        dest.send(Batch("memory", ("c",), ("1",)))
    assert set(dest.acknowledged) == {"a", "b"}


def test_fail_batches_are_not_attempted() -> None:
    dest = MemoryDestination(fail_batches={1})
    first = dest.send(Batch("memory", ("a",), ("1",)))
    second = dest.send(Batch("memory", ("b", "c"), ("1", "2")))
    assert first[0].outcome == ACKNOWLEDGED
    assert [r.outcome for r in second] == [NOT_ATTEMPTED, NOT_ATTEMPTED]
    assert "b" not in dest.acknowledged


def test_invalid_keys_are_reported_by_prepare() -> None:
    dest = MemoryDestination(invalid_keys={"k": "email: 'x' is not a valid email address"})
    assert dest.prepare(PlanRow("k", "added", {})).reason == "email: 'x' is not a valid email address"  # type: ignore[union-attr]


def test_send_is_thread_safe() -> None:
    dest = MemoryDestination(latency=0.001)
    batches = [Batch("memory", (f"k{i}",), ("{}",)) for i in range(40)]
    threads = [threading.Thread(target=dest.send, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(dest.received) == 40
    assert len(dest.acknowledged) == 40
