"""Objects that may not create a profile and find none are silent no-ops (braze-api.md §0.1, §2.4):
alias-identified events and purchases are always update-only; `_update_existing_only: true` objects
for missing users change nothing; all answer 201 without a per-object error."""

from __future__ import annotations

import pytest

from engine.sandbox.options import OptionError, SandboxOptions

T = "2024-01-01T00:00:00Z"
ALIAS = {"alias_name": "n1", "alias_label": "crm"}


def event(**ident):
    return {**ident, "name": "e", "time": T}


def purchase(**ident):
    return {**ident, "product_id": "p", "currency": "USD", "price": 1.5, "time": T}


def test_alias_event_and_purchase_with_update_existing_only_false_create_nothing(client, sandbox):
    r = client.track(events=[event(user_alias=ALIAS, _update_existing_only=False)],
                     purchases=[purchase(user_alias=ALIAS, _update_existing_only=False)])
    assert (r.status_code, r.json()) == (201, {"message": "success", "events_processed": 1,
                                               "purchases_processed": 1})
    assert sandbox.users() == [] and sandbox.events() == [] and sandbox.purchases() == []


def test_alias_event_lands_once_the_alias_profile_exists(client, sandbox):
    client.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False}])
    client.track(events=[event(user_alias=ALIAS)], purchases=[purchase(user_alias=ALIAS, _update_existing_only=False)])
    user = sandbox.user(alias_name="n1", alias_label="crm")
    assert len(user["events"]) == 1 and len(user["purchases"]) == 1


def test_alias_event_lands_after_alias_new(client, sandbox):
    client.post("/users/alias/new", {"user_aliases": [ALIAS]})
    client.track(events=[event(user_alias=ALIAS, _update_existing_only=False)])
    assert len(sandbox.events()) == 1


def test_alias_attributes_with_update_existing_only_false_still_create(client, sandbox):
    client.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False, "plan": "x"}])
    assert sandbox.user(alias_name="n1", alias_label="crm")["custom_attributes"] == {"plan": "x"}


@pytest.mark.parametrize("array", ["attributes", "events", "purchases"])
def test_update_existing_only_for_a_missing_external_id_is_a_silent_noop(client, sandbox, array):
    obj = {"attributes": {"external_id": "ghost", "plan": "x"}, "events": event(external_id="ghost"),
           "purchases": purchase(external_id="ghost")}[array]
    r = client.track(**{array: [{**obj, "_update_existing_only": True}]})
    assert (r.status_code, r.json()) == (201, {"message": "success", f"{array}_processed": 1})
    assert sandbox.users() == [] and sandbox.events() == [] and sandbox.purchases() == []


@pytest.mark.parametrize("ident", [{"email": "a@x.com"}, {"phone": "+15555550123"},
                                   {"braze_id": "0123456789abcdef01234567"}])
def test_update_only_by_other_identifiers_is_a_silent_noop(client, sandbox, ident):
    r = client.track(events=[event(**ident, _update_existing_only=True)])
    assert (r.status_code, r.json()) == (201, {"message": "success", "events_processed": 1})
    assert sandbox.users() == [] and sandbox.events() == []


def test_noops_mixed_with_real_objects(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    r = client.track(events=[event(external_id="u1"), event(user_alias=ALIAS, _update_existing_only=False),
                             event(external_id="ghost", _update_existing_only=True)])
    assert r.json() == {"message": "success", "events_processed": 3}
    assert [e["external_id"] for e in sandbox.events()] == ["u1"]


def test_processed_counts_applied_leaves_out_the_noops(make_client):
    client = make_client(processed_counts="applied")
    client.track(attributes=[{"external_id": "u1"}])
    r = client.track(attributes=[{"external_id": "u1", "x": 1}, {"external_id": "ghost", "_update_existing_only": True}],
                     events=[event(external_id="u1"), event(user_alias=ALIAS)],
                     purchases=[purchase(user_alias=ALIAS, _update_existing_only=False)])
    assert (r.status_code, r.json()) == (201, {"message": "success", "attributes_processed": 1,
                                               "events_processed": 1, "purchases_processed": 0})


def test_processed_counts_applied_still_reports_per_object_errors(make_client):
    client = make_client(processed_counts="applied")
    r = client.track(events=[event(user_alias=ALIAS), {"external_id": "u1", "time": T}])
    assert r.status_code == 201
    assert r.json()["events_processed"] == 0 and [e["index"] for e in r.json()["errors"]] == [1]


def test_noops_still_cost_their_data_points(client, sandbox):
    client.track(events=[event(user_alias=ALIAS)])
    assert sandbox.stats()["data_points"] == 1


def test_bad_processed_counts_is_refused():
    with pytest.raises(OptionError):
        SandboxOptions.build(processed_counts="some")
