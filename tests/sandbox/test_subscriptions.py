"""POST /subscription/status/set (braze-api.md §6.1)."""

from __future__ import annotations

from engine.sandbox.responses import MAX_IDS
from engine.sandbox.subscriptions import BOTH_CONTACTS

GROUP = "3f1c9a4e-2b7d-4c0a-9e55-0d6f8a1b2c3d"


def body(**extra):
    return {"subscription_group_id": GROUP, "subscription_state": "subscribed", **extra}


def test_sets_state_by_external_id(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    r = client.post("/subscription/status/set", body(external_id=["u1", "ghost"]))
    assert (r.status_code, r.json()) == (201, {"message": "success"})
    assert sandbox.user("u1")["subscription_groups"] == {GROUP: "subscribed"}
    assert sandbox.user("ghost") is None


def test_single_string_external_id_is_accepted(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    client.post("/subscription/status/set", body(external_id="u1", subscription_state="unsubscribed"))
    assert sandbox.user("u1")["subscription_groups"] == {GROUP: "unsubscribed"}


def test_email_updates_every_profile_sharing_it(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "email": "a@x.com"}, {"external_id": "u2", "email": "a@x.com"}])
    client.post("/subscription/status/set", body(email=["a@x.com"]))
    assert all(u["subscription_groups"] == {GROUP: "subscribed"} for u in sandbox.users())


def test_orphaned_email_state_is_inherited_by_a_later_profile(client, sandbox):
    client.post("/subscription/status/set", body(email="later@x.com"))
    client.track(attributes=[{"external_id": "u1", "email": "later@x.com"}])
    assert sandbox.user("u1")["subscription_groups"] == {GROUP: "subscribed"}


def test_email_and_phone_together_is_400(client):
    r = client.post("/subscription/status/set", body(email=["a@x.com"], phone=["+15555550123"]))
    assert (r.status_code, r.json()) == (400, {"message": BOTH_CONTACTS})


def test_bad_group_id_is_400(client):
    r = client.post("/subscription/status/set", body(subscription_group_id="nope", external_id=["u1"]))
    assert (r.status_code, r.json()) == (400, {"message": "'subscription_group_id' is not a valid subscription group id"})


def test_unknown_group_when_groups_are_listed_is_400(make_client):
    client = make_client(subscription_groups=GROUP)
    other = "00000000-0000-4000-8000-000000000000"
    assert client.post("/subscription/status/set", body(external_id=["u1"])).status_code == 201
    assert client.post("/subscription/status/set", body(subscription_group_id=other, external_id=["u1"])).status_code == 400


def test_missing_group_id_is_400(client):
    r = client.post("/subscription/status/set", {"subscription_state": "subscribed", "external_id": ["u1"]})
    assert (r.status_code, r.json()) == (400, {"message": "'subscription_group_id' is required"})


def test_bad_state_is_400(client):
    r = client.post("/subscription/status/set", body(subscription_state="opted_in", external_id=["u1"]))
    assert (r.status_code, r.json()) == (400, {"message": "'subscription_state' must be 'subscribed' or 'unsubscribed'"})


def test_over_50_ids_is_400(client):
    r = client.post("/subscription/status/set", body(external_id=[f"u{i}" for i in range(51)]))
    assert (r.status_code, r.json()) == (400, {"message": MAX_IDS})


def test_no_recipient_is_400(client):
    r = client.post("/subscription/status/set", body())
    assert (r.status_code, r.json()) == (400, {"message": "One of 'external_id', 'email' or 'phone' is required"})


def test_needs_the_permission(make_client):
    client = make_client(permissions="users.track")
    assert client.post("/subscription/status/set", body(external_id=["u1"])).status_code == 403
