"""Values Braze would mangle, as prepare() sees them: NaN and ±Infinity, times it cannot store, arrays longer
than the workspace keeps. Each reason names the field and carries its kind (the plan counts them); a users
attribute is left out of its row, the rows of other objects are invalid."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from engine import strict_json
from engine.destinations.base import ARRAY_MAX, NON_FINITE, TIME_RANGE, Invalid, Item, PlanRow
from engine.destinations.braze.destination import BrazeDestination, make_destination
from engine.project import ConnectionConfig
from engine.specs import DestinationSpec, EventSpec, Identifier, PurchaseSpec, SyncSpec

CONN = ConnectionConfig("braze", instance="iad-01")


def dest(obj: str = "users", conn: ConnectionConfig = CONN, **kw: Any) -> BrazeDestination:
    kw.setdefault("identifier", Identifier("external_id", "id"))
    return make_destination(conn, None, SyncSpec("s", "m", ("id",), DestinationSpec("braze", obj, **kw)))


def left_out(result: object) -> list[tuple[str, str | None, str]]:
    """(field, kind, reason) of each field an Item leaves out."""
    assert isinstance(result, Item), result
    return [(d.field, d.kind, str(d)) for d in result.dropped]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("value", "shown"), [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")])
def test_a_non_finite_attribute_is_left_out_not_unset(value: float, shown: str) -> None:
    got = dest().prepare(PlanRow("k", "added", {"id": "u1", "score": value, "first_name": "Ada"}))
    assert left_out(got) == [("score", NON_FINITE, f"score: {shown} is not a finite number; JSON cannot carry it, "
                                                   "so Braze cannot store it")]
    assert json.loads(got.item_json) == {"external_id": "u1", "first_name": "Ada"}       # type: ignore[union-attr]


def test_a_changed_row_whose_only_change_is_nan_is_invalid() -> None:
    got = dest().prepare(PlanRow("k", "changed", {"id": "u1", "score": math.nan, "first_name": "Ada"},
                                 old_values={"score": 1.0}, changed=("score",)))
    assert isinstance(got, Invalid) and got.reason.startswith("score: NaN is not a finite number")
    assert [(p.field, p.kind) for p in got.problems] == [("score", NON_FINITE)]   # type: ignore[attr-defined]


def test_nan_nested_in_an_object_names_the_attribute() -> None:
    got = dest().prepare(PlanRow("k", "added", {"id": "u1", "prefs": {"w": [1.0, math.nan]}, "first_name": "A"}))
    [(field, kind, reason)] = left_out(got)
    assert (field, kind) == ("prefs", NON_FINITE) and reason.startswith("prefs.w[1]: NaN is not a finite number")


@pytest.mark.parametrize(("value", "reason"), [
    ("infinity", "seen: 'infinity' (an infinite timestamp or date) is not a time Braze can store"),
    ("-infinity", "seen: '-infinity' (an infinite timestamp or date) is not a time Braze can store"),
    ("3001-01-01T00:00:00.000Z", "seen: '3001-01-01T00:00:00.000Z' is outside the years 0-3000; Braze would store "
                                 "it as a string, not a time"),
    ("-44-03-15", "seen: '-44-03-15' is outside the years 0-3000; Braze would store it as a string, not a time"),
])
def test_a_time_braze_cannot_store_is_left_out(value: str, reason: str) -> None:
    row = PlanRow("k", "added", {"id": "u1", "seen": value, "first_name": "A"}, times=frozenset({"seen"}))
    assert left_out(dest().prepare(row)) == [("seen", TIME_RANGE, reason)]


@pytest.mark.parametrize("value", ["3000-12-31T23:59:59.999Z", "0000-06-01", "2024-05-01"])
def test_times_braze_stores_pass(value: str) -> None:
    row = PlanRow("k", "added", {"id": "u1", "seen": value}, times=frozenset({"seen"}))
    assert isinstance(dest().prepare(row), Item) and not dest().prepare(row).dropped  # type: ignore[union-attr]


def test_the_text_infinity_in_a_string_column_is_a_string() -> None:
    got = dest().prepare(PlanRow("k", "added", {"id": "u1", "motto": "infinity"}))
    assert isinstance(got, Item) and not got.dropped


def test_an_array_longer_than_array_max_is_left_out() -> None:
    row = PlanRow("k", "added", {"id": "u1", "tags": [str(i) for i in range(26)], "first_name": "A"})
    assert left_out(dest().prepare(row)) == [
        ("tags", ARRAY_MAX, "tags: array of 26 elements; the workspace keeps at most 25 (connection array_max), "
                            "Braze would drop the oldest")]
    raised = ConnectionConfig("braze", instance="iad-01", array_max=100)
    assert not left_out(dest(conn=raised).prepare(row))
    exactly = PlanRow("k", "added", {"id": "u1", "tags": ["x"] * 25})
    assert not left_out(dest().prepare(exactly))


def test_events_purchases_and_catalog_items_with_such_values_are_invalid() -> None:
    events = dest("events", event=EventSpec(time="ts", name="seen", properties={"amount": "amt"}))
    got = events.prepare(PlanRow("k", "added", {"id": "u1", "ts": "infinity", "amt": 1.0}, times=frozenset({"ts"})))
    assert isinstance(got, Invalid) and (got.reason.kind, got.reason.field) == (TIME_RANGE, "time")  # type: ignore[attr-defined]
    got = events.prepare(PlanRow("k", "added", {"id": "u1", "ts": "2024-01-01", "amt": math.inf}))
    assert isinstance(got, Invalid) and got.reason.startswith("properties.amount: Infinity is not a finite number")
    got = events.prepare(PlanRow("k", "added", {"id": "u1", "ts": "3500-01-01T00:00:00.000Z", "amt": 1.0}))
    assert isinstance(got, Invalid) and "outside the years 0-3000" in got.reason
    purchases = dest("purchases", purchase=PurchaseSpec(product_id="sku", currency="cur", price="p", time="ts"))
    got = purchases.prepare(PlanRow("k", "added", {"id": "u1", "sku": "b", "cur": "EUR", "p": math.nan,
                                                   "ts": "2024-01-01"}))
    assert isinstance(got, Invalid) and got.reason.startswith("price: NaN is not a finite number")
    catalog = dest("catalog_items", identifier=None, catalog="products", item_id="id")
    got = catalog.prepare(PlanRow("k", "added", {"id": "p1", "price": math.nan}))
    assert isinstance(got, Invalid) and got.reason.kind == NON_FINITE  # type: ignore[attr-defined]


def test_strict_json_names_non_finite_numbers() -> None:
    data = {"a": math.nan, "b": [math.inf, {"c": -math.inf}], "d": 1.5, "e": "NaN"}
    text = strict_json.dumps(data)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "a": "NaN", "b": ["Infinity", {"c": "-Infinity"}], "d": 1.5, "e": "NaN"}
    assert strict_json.dumps({"d": 1.5}) == json.dumps({"d": 1.5})


def test_machine_output_is_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`show --format json|jsonl` and `plan --json` print through these: a NaN the plan holds (an invalid
    event's property, say) comes out as the string "NaN", never as a bare NaN."""
    from engine import console

    row = {"key": "v3", "new": {"properties.amount": math.nan, "when": [math.inf]}, "reason": "…"}
    console.print_json([row])
    console.print_jsonl([row])
    text, jsonl = capsys.readouterr().out.split("\n]\n")
    strict = {"parse_constant": lambda c: pytest.fail(f"bare {c}")}
    assert json.loads(text + "]", **strict)[0]["new"] == {"properties.amount": "NaN", "when": ["Infinity"]}
    assert json.loads(jsonl, **strict)["new"]["properties.amount"] == "NaN"
