"""Braze payloads: the exact JSON each plan row contributes, per object and mode (golden strings)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from engine.destinations.base import Invalid, Item, PlanRow, Skip
from engine.destinations.braze.destination import BrazeDestination, make_destination
from engine.errors import SpecError
from engine.project import ConnectionConfig
from engine.specs import (
    DestinationSpec,
    EventSpec,
    Identifier,
    Location,
    PurchaseSpec,
    SubscriptionSpec,
    SyncSpec,
)

CONN = ConnectionConfig("braze", instance="iad-01")


def dest(obj: str = "users", pk: tuple[str, ...] = ("id",), **kw: Any) -> BrazeDestination:
    kw.setdefault("identifier", Identifier("external_id", "id") if obj != "catalog_items" else None)
    spec = SyncSpec("s", "model", pk, DestinationSpec("braze", obj, **kw), path="syncs/s.yml",
                    locations={"destination": Location("syncs/s.yml", 4, 3)})
    return make_destination(CONN, None, spec)


def added(values: dict[str, Any], key: str = "k") -> PlanRow:
    return PlanRow(key, "added", values)


def changed(values: dict[str, Any], old: dict[str, Any], key: str = "k") -> PlanRow:
    return PlanRow(key, "changed", values, old, tuple(c for c in values if values[c] != old.get(c)))


def item(result: object) -> Item:
    assert isinstance(result, Item), result
    return result


# -- users --------------------------------------------------------------------------------------

USER = {"id": "c_1", "first_name": "Ada", "country": "GB", "plan": None, "tags": ["a", "b"],
        "profile": {"tier": "gold", "since": "2024-05-01"}, "signup_at": "2024-05-01T10:00:00.000Z",
        "score": 12.5, "vip": True}


def test_users_added_upsert_external_id_sends_all_non_null_fields() -> None:
    got = item(dest().prepare(added(USER)))
    assert got.channel == "POST /users/track attributes"
    assert got.item_json == (
        '{"external_id":"c_1","first_name":"Ada","country":"GB","tags":["a","b"],'
        '"profile":{"tier":"gold","since":"2024-05-01"},"signup_at":"2024-05-01T10:00:00.000Z",'
        '"score":12.5,"vip":true}')
    # first_name 1, country 1, tags 1, profile 2 (its keys), signup_at 1, score 1, vip 1
    assert got.data_points == 8


def test_users_update_mode_sends_update_existing_only_true() -> None:
    got = item(dest(mode="update", fields={"first_name": "first_name"}).prepare(added(USER)))
    assert got.item_json == '{"external_id":"c_1","_update_existing_only":true,"first_name":"Ada"}'
    assert got.data_points == 1


@pytest.mark.parametrize(("mode", "flag"), [("upsert", "false"), ("update", "true")])
def test_user_alias_sends_update_existing_only_explicitly(mode: str, flag: str) -> None:
    d = dest(mode=mode, identifier=Identifier("user_alias", "anon", alias_label="anon_id"),
             fields={"first_name": "first_name"})
    got = item(d.prepare(added({"id": 1, "anon": "a-9", "first_name": "Ada"})))
    assert got.item_json == ('{"user_alias":{"alias_name":"a-9","alias_label":"anon_id"},'
                             f'"_update_existing_only":{flag},"first_name":"Ada"}}')
    assert got.data_points == 1


def test_braze_id_upsert_omits_flag_and_integer_ids_become_strings() -> None:
    d = dest(identifier=Identifier("braze_id", "bid"), fields={"first_name": "first_name"})
    got = item(d.prepare(added({"id": 1, "bid": "5fbd99bac125ca40511f2cb1", "first_name": "Ada"})))
    assert got.item_json == '{"braze_id":"5fbd99bac125ca40511f2cb1","first_name":"Ada"}'
    got = item(dest(fields={"first_name": "first_name"}).prepare(added({"id": 42, "first_name": "Ada"})))
    assert got.item_json == '{"external_id":"42","first_name":"Ada"}'


def test_email_identifier_costs_nothing_and_is_excluded_from_fields() -> None:
    d = dest(identifier=Identifier("email", "email"))
    got = item(d.prepare(added({"id": 1, "email": "ada@example.com", "first_name": "Ada"})))
    assert got.item_json == '{"email":"ada@example.com","first_name":"Ada"}'
    assert got.data_points == 1


def test_fields_map_braze_attribute_to_column() -> None:
    d = dest(fields={"first_name": "fname", "email": "mail"})
    got = item(d.prepare(added({"id": "u", "fname": "Ada", "mail": "ada@example.com", "other": 1})))
    assert got.item_json == '{"external_id":"u","first_name":"Ada","email":"ada@example.com"}'
    assert got.data_points == 2          # email is an attribute here: a primary identifier is present


def test_changed_row_sends_only_changed_mapped_fields() -> None:
    new = dict(USER, first_name="Ada L.", score=13)
    got = item(dest().prepare(changed(new, USER)))
    assert got.item_json == '{"external_id":"c_1","first_name":"Ada L.","score":13}'
    assert got.data_points == 2


def test_changed_to_null_unsets_by_default_and_is_omitted_with_nulls_skip() -> None:
    new = dict(USER, first_name=None, score=1)
    assert item(dest().prepare(changed(new, USER))).item_json == (
        '{"external_id":"c_1","first_name":null,"score":1}')
    assert item(dest(nulls="skip").prepare(changed(new, USER))).item_json == '{"external_id":"c_1","score":1}'


def test_changed_row_with_nothing_to_send_is_skipped() -> None:
    new = dict(USER, first_name=None)
    # nulls: skip: nothing is sent and Braze keeps the old value, which the snapshot must keep too
    assert dest(nulls="skip").prepare(changed(new, USER)) == Skip("nulls: skip: Braze keeps first_name",
                                                                  kept=("first_name",))
    unmapped = dest(fields={"first_name": "first_name"}).prepare(changed(dict(USER, score=99), USER))
    assert unmapped == Skip("no mapped field changed")


def test_removed_ignore_skips() -> None:
    assert isinstance(dest().prepare(PlanRow("k", "removed", USER)), Skip)
    assert dest().capabilities.sends_removed is False


def test_removed_unset_nulls_every_mapped_field() -> None:
    d = dest(on_removed="unset", fields={"first_name": "first_name", "plan": "plan"})
    got = item(d.prepare(PlanRow("k", "removed", USER)))
    # update-only: unsetting a removed row never creates a profile (e.g. one a user-deletes sync removed)
    assert got.item_json == '{"external_id":"c_1","_update_existing_only":true,"first_name":null,"plan":null}'
    assert got.data_points == 2
    assert d.capabilities.sends_removed is True


@pytest.mark.parametrize(("ident", "values", "channel", "item_json"), [
    (Identifier("external_id", "id"), {"id": "c_1"}, "POST /users/delete external_ids", '"c_1"'),
    (Identifier("braze_id", "b"), {"id": 1, "b": "abc"}, "POST /users/delete braze_ids", '"abc"'),
    (Identifier("user_alias", "a", alias_label="crm"), {"id": 1, "a": "x"}, "POST /users/delete user_aliases",
     '{"alias_name":"x","alias_label":"crm"}'),
    (Identifier("email", "e"), {"id": 1, "e": "a@b.io"}, "POST /users/delete email_addresses",
     '{"email":"a@b.io","prioritization":["identified","most_recently_updated"]}'),
    (Identifier("phone", "p"), {"id": 1, "p": "+15555550123"}, "POST /users/delete phone_numbers",
     '{"phone":"+15555550123","prioritization":["identified","most_recently_updated"]}'),
])
def test_removed_delete_and_user_deletes(ident: Identifier, values: dict[str, Any], channel: str,
                                         item_json: str) -> None:
    got = item(dest(on_removed="delete", identifier=ident).prepare(PlanRow("k", "removed", values)))
    assert (got.channel, got.item_json, got.data_points) == (channel, item_json, 0)
    deletes = dest("user_deletes", identifier=ident)
    assert item(deletes.prepare(added(values))) == got
    assert isinstance(deletes.prepare(changed(values, values)), Skip)
    assert isinstance(deletes.prepare(PlanRow("k", "removed", values)), Skip)
    assert deletes.batch_limits(got.channel)[0] == 50


def test_value_mapping_keeps_json_ready_values() -> None:
    values = {"id": "u", "dob": "1990-02-03", "last_seen": "2024-05-01T10:00:00.000Z", "amount": 12.34,
              "count": 3, "flag": False, "obj": {"a": {"b": 1, "c": 2}}, "pets": [{"name": "Rex", "age": 3}],
              "j": [1, "x"]}
    got = item(dest().prepare(added(values)))
    assert json.loads(got.item_json) == {"external_id": "u", **{k: v for k, v in values.items() if k != "id"}}
    assert got.item_json.startswith('{"external_id":"u","dob":"1990-02-03","last_seen":"2024-05-01T10:00:00.000Z"')
    # dob 1, last_seen 1, amount 1, count 1, flag 1, obj 3 (keys a, b, c), pets 2, j 1
    assert got.data_points == 11


def test_unicode_is_sent_as_utf8_not_escaped() -> None:
    got = item(dest(fields={"first_name": "n"}).prepare(added({"id": "u", "n": "Zoë"})))
    assert got.item_json == '{"external_id":"u","first_name":"Zoë"}'


def test_auto_fields_refuse_a_column_named_like_an_identifier() -> None:
    d = dest(identifier=Identifier("email", "mail"))
    got = d.prepare(added({"id": 1, "mail": "a@b.io", "external_id": "x"}))
    assert got == Invalid("'external_id' is reserved by Braze (a model column; list the fields explicitly to rename it)")


# -- events and purchases -----------------------------------------------------------------------

EVENT_SPEC = EventSpec(time="ts", name="order_placed", properties={"amount": "amount", "sku": "sku"})
EVENT = {"id": 7, "user": "c_1", "ts": "2024-05-01T10:00:00.000Z", "amount": 9.5, "sku": None}


def test_event_added_golden() -> None:
    d = dest("events", identifier=Identifier("external_id", "user"), event=EVENT_SPEC)
    got = item(d.prepare(added(EVENT)))
    assert got.channel == "POST /users/track events"
    assert got.item_json == ('{"external_id":"c_1","name":"order_placed","time":"2024-05-01T10:00:00.000Z",'
                             '"properties":{"amount":9.5}}')
    assert got.data_points == 1
    assert d.capabilities.append_only is True


def test_an_event_sent_without_an_answer_too_often_is_not_sent_again() -> None:
    """Each unanswered send may have landed: after `max_unknown_sends` (default 3) the row is settled
    without sending, so Braze holds it at most that many times."""
    d = dest("events", identifier=Identifier("external_id", "user"), event=EVENT_SPEC)
    assert isinstance(d.prepare(PlanRow("k", "added", EVENT, unknowns=2)), Item)
    skipped = d.prepare(PlanRow("k", "added", EVENT, unknowns=3))
    assert isinstance(skipped, Skip) and "sent 3 times without a usable answer" in skipped.reason
    spec = SyncSpec("s", "model", ("id",), DestinationSpec("braze", "events", identifier=Identifier("external_id", "user"),
                                                          event=EVENT_SPEC), path="syncs/s.yml")
    patient = make_destination(dataclasses.replace(CONN, max_unknown_sends=5), None, spec)
    assert isinstance(patient.prepare(PlanRow("k", "added", EVENT, unknowns=4)), Item)


def test_event_name_column_app_id_update_mode() -> None:
    spec = EventSpec(time="ts", name_column="ev", app_id="app-1")
    d = dest("events", identifier=Identifier("external_id", "user"), event=spec, mode="update")
    got = item(d.prepare(added(dict(EVENT, ev="signed_up"))))
    assert got.item_json == ('{"external_id":"c_1","app_id":"app-1","name":"signed_up",'
                             '"time":"2024-05-01T10:00:00.000Z","_update_existing_only":true}')


def test_event_changed_and_removed_are_skipped() -> None:
    d = dest("events", identifier=Identifier("external_id", "user"), event=EVENT_SPEC)
    assert d.prepare(changed(dict(EVENT, amount=1), EVENT)) == Skip("event already sent; changes are not re-sent")
    assert isinstance(d.prepare(PlanRow("k", "removed", EVENT)), Skip)


def test_event_alias_upsert_sends_flag_false() -> None:
    d = dest("events", identifier=Identifier("user_alias", "user", alias_label="anon"), event=EVENT_SPEC)
    assert item(d.prepare(added(EVENT))).item_json.endswith('"_update_existing_only":false}')


PURCHASE_SPEC = PurchaseSpec(product_id="sku", currency="cur", price="price", time="ts", quantity="qty",
                             properties={"color": "color", "size": "size"})
PURCHASE = {"id": 1, "user": "c_1", "sku": "backpack", "cur": "USD", "price": 40.0, "qty": 2,
            "ts": "2024-05-01T10:00:00.000Z", "color": "red", "size": "L"}


def test_purchase_added_golden_and_data_points() -> None:
    d = dest("purchases", identifier=Identifier("external_id", "user"), purchase=PURCHASE_SPEC)
    got = item(d.prepare(added(PURCHASE)))
    assert got.channel == "POST /users/track purchases"
    assert got.item_json == ('{"external_id":"c_1","product_id":"backpack","currency":"USD","price":40.0,'
                             '"quantity":2,"time":"2024-05-01T10:00:00.000Z",'
                             '"properties":{"color":"red","size":"L"}}')
    assert got.data_points == 3
    assert isinstance(d.prepare(changed(dict(PURCHASE, price=1), PURCHASE)), Skip)


def test_purchase_quantity_defaults_to_one() -> None:
    spec = PurchaseSpec(product_id="sku", currency="cur", price="price", time="ts")
    d = dest("purchases", identifier=Identifier("external_id", "user"), purchase=spec)
    got = item(d.prepare(added(PURCHASE)))
    assert '"quantity":1,' in got.item_json and got.data_points == 1


# -- catalog items ------------------------------------------------------------------------------

def cat(**kw: Any) -> BrazeDestination:
    return dest("catalog_items", pk=("sku",), catalog="products", item_id="sku", **kw)


PRODUCT = {"sku": "p-1", "name": "Tent", "price": 120, "tags": ["out"], "note": None}


def test_catalog_added_puts_all_fields_with_id() -> None:
    """PUT creates the item or replaces it: a first run onto an existing catalog, or a resend after an
    unknown outcome, converges (a POST of an existing item would fail)."""
    got = item(cat().prepare(added(PRODUCT)))
    assert got.channel == "PUT /catalogs/products/items"
    assert got.item_json == '{"id":"p-1","name":"Tent","price":120,"tags":["out"],"note":null}'
    assert got.data_points == 0


def test_catalog_changed_patches_changed_fields_only() -> None:
    new = dict(PRODUCT, price=99, name=None)
    got = item(cat().prepare(changed(new, PRODUCT)))
    assert got.channel == "PATCH /catalogs/products/items"
    assert got.item_json == '{"id":"p-1","name":null,"price":99}'


def test_catalog_removed_deletes_only_with_on_removed_delete() -> None:
    assert isinstance(cat().prepare(PlanRow("p-1", "removed", PRODUCT)), Skip)
    got = item(cat(on_removed="delete").prepare(PlanRow("p-1", "removed", PRODUCT)))
    assert (got.channel, got.item_json) == ("DELETE /catalogs/products/items", '{"id":"p-1"}')
    assert cat(on_removed="delete").capabilities.sends_removed is True
    assert cat().batch_limits(got.channel)[0] == 50


@pytest.mark.parametrize(("item_id", "reason"), [
    ("p 1", "sku: catalog item id 'p 1' may contain only letters, digits, '-' and '_'"),
    ("x" * 251, "sku: catalog item id is 251 characters; Braze allows at most 250"),
    (None, "sku: catalog item id None is not a non-empty string"),
])
def test_catalog_item_id_rules(item_id: Any, reason: str) -> None:
    assert cat().prepare(added(dict(PRODUCT, sku=item_id))) == Invalid(reason)


def test_catalog_value_limit() -> None:
    got = cat().prepare(added(dict(PRODUCT, name="x" * 5001)))
    assert got == Invalid("name: string of 5001 characters is longer than 5000")
    assert isinstance(cat().prepare(added(dict(PRODUCT, name="x" * 5000))), Item)


def test_catalog_on_removed_unset_is_a_spec_error() -> None:
    with pytest.raises(SpecError) as err:
        cat(on_removed="unset")
    assert "syncs/s.yml" in str(err.value) and "on_removed" in str(err.value)


# -- subscription groups ------------------------------------------------------------------------

GROUP = "8c4b1f6e-0a3b-4c5d-9e8f-112233445566"
GROUP2 = "0f9e8d7c-6b5a-4c3d-8e2f-a1b2c3d4e5f6"


def subs(**kw: Any) -> BrazeDestination:
    kw.setdefault("subscription", SubscriptionSpec(state="opt_in", group_id=GROUP))
    kw.setdefault("identifier", Identifier("external_id", "user"))
    return dest("subscription_groups", **kw)


@pytest.mark.parametrize(("state", "text"), [(True, "subscribed"), (False, "unsubscribed"),
                                             ("subscribed", "subscribed"), ("unsubscribed", "unsubscribed")])
def test_subscription_state_values(state: Any, text: str) -> None:
    got = item(subs().prepare(added({"id": 1, "user": "c_1", "opt_in": state})))
    assert got.channel == "POST /users/track attributes"        # the state travels with the profile
    assert json.loads(got.item_json) == {"external_id": "c_1", "subscription_groups": [
        {"subscription_group_id": GROUP, "subscription_state": text}]}
    assert got.data_points == 0


def test_subscription_other_states_are_invalid() -> None:
    got = subs().prepare(added({"id": 1, "user": "c_1", "opt_in": "opted_in"}))
    assert got == Invalid("opt_in: 'opted_in' is not true/false or 'subscribed'/'unsubscribed'")


def test_subscription_group_column_and_email_identifier() -> None:
    d = subs(subscription=SubscriptionSpec(state="s", group_id_column="g"), identifier=Identifier("email", "e"))
    got = item(d.prepare(added({"id": 1, "e": "a@b.io", "s": True, "g": GROUP2})))
    assert json.loads(got.item_json) == {"email": "a@b.io", "subscription_groups": [
        {"subscription_group_id": GROUP2, "subscription_state": "subscribed"}]}
    assert d.prepare(added({"id": 1, "e": "a@b.io", "s": True, "g": "grp-2"})) == Invalid(
        "g: 'grp-2' is not a subscription group id (a UUID from the Braze dashboard)")


def test_subscription_constant_group_must_be_a_uuid() -> None:
    with pytest.raises(SpecError, match="is not a subscription group id"):
        subs(subscription=SubscriptionSpec(state="opt_in", group_id="newsletter"))


def test_subscription_changed_only_when_state_changed_and_removed_skipped() -> None:
    old = {"id": 1, "user": "c_1", "opt_in": True, "name": "a"}
    assert isinstance(subs().prepare(changed(dict(old, name="b"), old)), Skip)
    got = item(subs().prepare(changed(dict(old, opt_in=False), old)))
    assert json.loads(got.item_json)["subscription_groups"][0]["subscription_state"] == "unsubscribed"
    assert isinstance(subs().prepare(PlanRow("k", "removed", old)), Skip)


def test_subscription_refuses_alias_identifier() -> None:
    with pytest.raises(SpecError, match="not supported for subscription_groups"):
        subs(identifier=Identifier("user_alias", "a", alias_label="x"))


# -- spec problems --------------------------------------------------------------------------------

def test_spec_problems_are_reported_together_with_locations() -> None:
    with pytest.raises(SpecError) as err:
        dest(identifier=Identifier("user_alias", "a"), fields={"external_id": "x", "$bad": "y"})
    text = str(err.value)
    assert "3 problems found" in text
    assert "alias_label" in text and "'external_id' is reserved" in text and "must not start with $" in text
    assert "syncs/s.yml:4:3" in text


def test_events_need_an_event_section_and_reserved_properties_are_refused() -> None:
    with pytest.raises(SpecError, match="event: section"):
        dest("events")
    with pytest.raises(SpecError, match="reserved"):
        dest("events", event=EventSpec(time="ts", name="e", properties={"time": "ts"}))


def test_deletes_by_email_use_the_sync_s_prioritization() -> None:
    d = dest("user_deletes", identifier=Identifier("email", "e"))
    assert json.loads(item(d.prepare(added({"id": 1, "e": "a@b.io"}))).item_json) == {
        "email": "a@b.io", "prioritization": ["identified", "most_recently_updated"]}
    d = dest("user_deletes", identifier=Identifier("email", "e"), prioritization=("unidentified",))
    assert json.loads(item(d.prepare(added({"id": 1, "e": "a@b.io"}))).item_json)["prioritization"] == ["unidentified"]
