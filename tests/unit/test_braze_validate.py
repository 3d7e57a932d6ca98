"""Braze rules checked before sending: prepare() returns Invalid with a reason naming field and problem."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.destinations.base import Invalid, Item, PlanRow
from engine.destinations.braze.destination import BrazeDestination, make_destination
from engine.project import ConnectionConfig
from engine.specs import DestinationSpec, EventSpec, Identifier, PurchaseSpec, SyncSpec

CONN = ConnectionConfig("braze", instance="iad-01")
RENAME = " (a model column; list the fields explicitly to rename it)"


def dest(obj: str = "users", **kw: Any) -> BrazeDestination:
    kw.setdefault("identifier", Identifier("external_id", "id"))
    return make_destination(CONN, None, SyncSpec("s", "m", ("id",), DestinationSpec("braze", obj, **kw)))


def users(field: str, value: Any) -> object:
    return dest().prepare(PlanRow("k", "added", {"id": "u1", field: value}))


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("email", "not-an-email", "email: 'not-an-email' is not a valid email address"),
    ("email", "a@b", "email: 'a@b' is not a valid email address"),
    ("language", "english", "language: 'english' is not an ISO-639-1 language code (e.g. 'en', 'fr')"),
    ("dob", "1990-02-30", "dob: '1990-02-30' is not a date in the form YYYY-MM-DD"),
    ("dob", "2024-05-01T10:00:00.000Z", "dob: '2024-05-01T10:00:00.000Z' is not a date in the form YYYY-MM-DD"),
    ("gender", "male", "gender: 'male' is not one of M, F, O, N, P"),
    ("email_subscribe", "yes", "email_subscribe: 'yes' is not one of opted_in, subscribed, unsubscribed"),
    ("push_subscribe", True, "push_subscribe: True is not one of opted_in, subscribed, unsubscribed"),
    ("nickname", "x" * 256, "nickname: string of 256 characters is longer than 255"),
    ("$nick", "x", "attribute name '$nick' must not start with $" + RENAME),
    ("n" * 256, "x", f"attribute name '{'n' * 38}… is longer than 255 characters" + RENAME),
    ("prefs", {"a.b": 1}, "prefs: nested key 'a.b' must not contain '.', '$' or spaces"),
    ("prefs", {"a": {"$x": 1}}, "prefs.a: nested key '$x' must not contain '.', '$' or spaces"),
    ("prefs", {"my key": 1}, "prefs: nested key 'my key' must not contain '.', '$' or spaces"),
    ("tags", ["a", ["b"]], "tags[1]: arrays must not contain arrays"),
    ("blob", {"k": ["x" * 200] * 600}, "blob: 121,807 bytes of JSON; Braze allows at most 100 KB"),
    ("first_name", 12, "first_name: 12 is not a string"),
    ("phone", "call me", "phone: 'call me' is not a valid phone number (E.164 recommended, e.g. '+15555550123')"),
    ("prefs", {"a": ["ok", "y" * 256]}, "prefs.a[1]: string of 256 characters is longer than 255"),
])
def test_attribute_rules(field: str, value: Any, reason: str) -> None:
    assert users(field, value) == Invalid(reason)


@pytest.mark.parametrize(("field", "value"), [
    ("email", "ada.lovelace+x@mail.example.co.uk"), ("country", "GB"), ("language", "pt"), ("dob", "1990-02-28"),
    ("gender", "P"), ("email_subscribe", "opted_in"), ("push_subscribe", "unsubscribed"),
    ("nickname", "x" * 255), ("prefs", {"$time": "2020-05-28"}), ("gender", None), ("phone", "+1 (555) 555-0123"),
])
def test_valid_standard_values_pass(field: str, value: Any) -> None:
    assert isinstance(users(field, value), Item)


@pytest.mark.parametrize(("value", "sent"), [("UK", "GB"), ("gb", "GB"), ("Australia", "AU"), ("AUS", "AU"),
                                             ("united states", "US"), ("DE", "DE")])
def test_country_names_are_normalised_as_braze_does(value: str, sent: str) -> None:
    got = users("country", value)
    assert isinstance(got, Item) and json.loads(got.item_json)["country"] == sent


def test_one_bad_standard_field_drops_that_field_not_the_row() -> None:
    got = dest().prepare(PlanRow("k", "added", {"id": "u1", "country": "XX", "tier": "gold", "language": "zz"}))
    assert isinstance(got, Item) and json.loads(got.item_json) == {"external_id": "u1", "tier": "gold"}
    assert got.dropped == ("country: 'XX' is not an ISO-3166-1 alpha-2 country code (e.g. 'US', 'DE')",
                           "language: 'zz' is not an ISO-639-1 language code (e.g. 'en', 'fr')")


@pytest.mark.parametrize(("ident", "value", "reason"), [
    (Identifier("external_id", "x"), None, "x: the identifier is null"),
    (Identifier("external_id", "x"), "  ", "x: the identifier is empty"),
    (Identifier("external_id", "x"), "é" * 494, "x: external_id is 988 bytes; Braze allows at most 987"),
    (Identifier("user_alias", "x", alias_label="l"), "a" * 237,
     "x (alias_name): alias_name is 237 bytes; Braze allows at most 236"),
    (Identifier("email", "x"), "nope", "x: 'nope' is not a valid email address"),
    (Identifier("braze_id", "x"), 1.5, "x: 1.5 is not a string"),
    (Identifier("phone", "x"), "12", "x: '12' is not a valid phone number (E.164 recommended, e.g. '+15555550123')"),
])
def test_identifier_rules(ident: Identifier, value: Any, reason: str) -> None:
    got = dest(identifier=ident, fields={"first_name": "n"}).prepare(PlanRow("k", "added", {"id": 1, "x": value}))
    assert got == Invalid(reason)


def test_identifier_limits_are_inclusive() -> None:
    ok = dest(identifier=Identifier("external_id", "x")).prepare(PlanRow("k", "added", {"id": 1, "x": "a" * 987}))
    assert isinstance(ok, Item)


EVENT = {"id": 1, "u": "c1", "ts": "2024-05-01T10:00:00.000Z", "n": "ev", "p": 1}


@pytest.mark.parametrize(("values", "reason"), [
    ({"ts": None}, "time: is null; Braze requires a time"),
    ({"ts": "yesterday"}, "time: 'yesterday' is not an ISO-8601 time"),
    ({"n": None}, "name: is null; Braze requires it"),
    ({"n": ""}, "name: '' is not a non-empty string"),
    ({"p": "x" * 256}, "properties.prop: string of 256 characters is longer than 255"),
])
def test_event_rules(values: dict[str, Any], reason: str) -> None:
    d = dest("events", identifier=Identifier("external_id", "u"),
             event=EventSpec(time="ts", name_column="n", properties={"prop": "p"}))
    assert d.prepare(PlanRow("k", "added", dict(EVENT, **values))) == Invalid(reason)


PURCHASE = {"id": 1, "u": "c1", "sku": "b", "cur": "EUR", "price": 1.5, "q": 3, "ts": "2024-05-01"}


@pytest.mark.parametrize(("values", "reason"), [
    ({"sku": None}, "product_id: is null; Braze requires it"),
    ({"cur": "eur"}, "currency: 'eur' is not an ISO-4217 currency code (3 uppercase letters, e.g. 'USD')"),
    ({"cur": "ABC"}, "currency: 'ABC' is not an ISO-4217 currency code (3 uppercase letters, e.g. 'USD')"),
    ({"price": "1.5"}, "price: '1.5' is not a number"),
    ({"price": True}, "price: True is not a number"),
    ({"q": 101}, "quantity: 101 is not an integer from 1 to 100"),
    ({"q": 0}, "quantity: 0 is not an integer from 1 to 100"),
    ({"q": 2.5}, "quantity: 2.5 is not an integer from 1 to 100"),
    ({"ts": "2024-13-01"}, "time: '2024-13-01' is not an ISO-8601 time"),
])
def test_purchase_rules(values: dict[str, Any], reason: str) -> None:
    d = dest("purchases", identifier=Identifier("external_id", "u"),
             purchase=PurchaseSpec(product_id="sku", currency="cur", price="price", time="ts", quantity="q"))
    assert d.prepare(PlanRow("k", "added", dict(PURCHASE, **values))) == Invalid(reason)


def test_nan_is_invalid_not_a_crash() -> None:
    got = users("score", float("nan"))
    assert isinstance(got, Invalid) and "JSON" in got.reason
