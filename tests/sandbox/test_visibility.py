"""Asynchronous visibility (`visibility_delay_ms`): a profile /users/track just created is unknown to
the other endpoints, and to update-only objects of later requests, until the delay passes."""

from __future__ import annotations

import time

import pytest

from engine.sandbox.options import OptionError, SandboxOptions

GROUP = "3f1c9a4e-2b7d-4c0a-9e55-0d6f8a1b2c3d"
T = "2024-01-01T00:00:00Z"
DELAY_MS = 400
ALIAS = {"alias_name": "n1", "alias_label": "crm"}


@pytest.fixture
def slow(make_client):
    return make_client(visibility_delay_ms=DELAY_MS)


def wait_out_the_delay():
    time.sleep(DELAY_MS / 1000 + 0.1)


def subscribe(client, **ids):
    return client.post("/subscription/status/set",
                       {"subscription_group_id": GROUP, "subscription_state": "subscribed", **ids})


def test_subscription_for_a_new_profile_is_answered_success_and_kept_nowhere(slow):
    slow.track(attributes=[{"external_id": "u1"}])
    r = subscribe(slow, external_id=["u1"])
    assert (r.status_code, r.json()) == (201, {"message": "success"})
    wait_out_the_delay()
    assert slow.handle.user("u1")["subscription_groups"] == {}      # lost, as on Braze
    subscribe(slow, external_id=["u1"])
    assert slow.handle.user("u1")["subscription_groups"] == {GROUP: "subscribed"}


def test_subscription_by_email_of_a_new_profile_is_orphaned(slow):
    slow.track(attributes=[{"external_id": "u1", "email": "a@x.com"}])
    assert subscribe(slow, email=["a@x.com"]).status_code == 201
    assert slow.handle.user("u1")["subscription_groups"] == {}
    assert slow.handle.store.orphan_subscriptions == {"email:a@x.com": {GROUP: "subscribed"}}


def test_export_does_not_see_a_new_profile_yet(slow):
    slow.track(attributes=[{"external_id": "u1", "email": "a@x.com"}])
    body = {"external_ids": ["u1"], "fields_to_export": ["external_id"]}
    assert slow.post("/users/export/ids", body).json() == {"message": "success", "users": [],
                                                          "invalid_user_ids": ["u1"]}
    assert slow.post("/users/export/ids", {"email_address": "a@x.com"}).json()["users"] == []
    wait_out_the_delay()
    assert slow.post("/users/export/ids", body).json() == {"message": "success", "users": [{"external_id": "u1"}]}


def test_delete_does_not_see_a_new_profile_yet(slow):
    slow.track(attributes=[{"external_id": "u1"}])
    r = slow.post("/users/delete", {"external_ids": ["u1"]})
    assert r.json() == {"deleted": 0, "message": "success"}
    assert slow.handle.user("u1") is not None
    wait_out_the_delay()
    assert slow.post("/users/delete", {"external_ids": ["u1"]}).json() == {"deleted": 1, "message": "success"}
    assert slow.handle.user("u1") is None


def test_delete_by_alias_does_not_see_a_new_alias_profile_yet(slow):
    slow.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False}])
    assert slow.post("/users/delete", {"user_aliases": [ALIAS]}).json()["deleted"] == 0


def test_update_only_object_of_a_later_request_is_dropped(slow):
    slow.track(attributes=[{"external_id": "u1"}])
    r = slow.track(attributes=[{"external_id": "u1", "_update_existing_only": True, "plan": "pro"}],
                   events=[{"external_id": "u1", "_update_existing_only": True, "name": "e", "time": T}])
    assert r.json() == {"message": "success", "attributes_processed": 1, "events_processed": 1}
    assert slow.handle.user("u1")["custom_attributes"] == {} and slow.handle.events() == []
    wait_out_the_delay()
    slow.track(attributes=[{"external_id": "u1", "_update_existing_only": True, "plan": "pro"}])
    assert slow.handle.user("u1")["custom_attributes"] == {"plan": "pro"}


def test_upserts_find_the_new_profile_and_make_no_second_one(slow):
    slow.track(attributes=[{"external_id": "u1", "a": 1}])
    slow.track(attributes=[{"external_id": "u1", "b": 2}], events=[{"external_id": "u1", "name": "e", "time": T}])
    assert len(slow.handle.users()) == 1
    assert slow.handle.user("u1")["custom_attributes"] == {"a": 1, "b": 2} and len(slow.handle.events()) == 1


def test_the_request_that_creates_a_profile_sees_it(slow):
    r = slow.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False}],
                   events=[{"user_alias": ALIAS, "name": "e", "time": T}])
    assert r.status_code == 201 and len(slow.handle.events()) == 1


def test_alias_event_right_after_the_alias_profile_is_dropped(slow):
    slow.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False}])
    slow.track(events=[{"user_alias": ALIAS, "name": "e", "time": T}])
    assert slow.handle.events() == []


def test_existing_profiles_stay_visible(slow):
    slow.track(attributes=[{"external_id": "u1"}])
    wait_out_the_delay()
    slow.track(attributes=[{"external_id": "u1", "x": 1}])      # an update does not hide it again
    subscribe(slow, external_id=["u1"])
    assert slow.handle.user("u1")["subscription_groups"] == {GROUP: "subscribed"}


def test_the_inspection_api_sees_everything(slow):
    slow.track(attributes=[{"external_id": "u1"}])
    assert slow.handle.user("u1") is not None and slow.handle.stats()["users"] == 1


def test_no_delay_by_default(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    subscribe(client, external_id=["u1"])
    assert sandbox.user("u1")["subscription_groups"] == {GROUP: "subscribed"}
    assert client.post("/users/delete", {"external_ids": ["u1"]}).json()["deleted"] == 1


def test_unknown_external_id_subscription_is_success_and_keeps_nothing(client, sandbox):
    r = subscribe(client, external_id=["ghost"])
    assert (r.status_code, r.json()) == (201, {"message": "success"})
    client.track(attributes=[{"external_id": "ghost"}])
    assert sandbox.user("ghost")["subscription_groups"] == {}
    assert sandbox.store.orphan_subscriptions == {}


def test_negative_delay_is_refused():
    with pytest.raises(OptionError):
        SandboxOptions.build(visibility_delay_ms=-1)
