"""/users/export/ids, /users/delete, /users/alias/new, /users/alias/update, /users/identify."""

from __future__ import annotations

import re

from engine.sandbox.responses import MAX_EXTERNAL_IDS, MAX_IDS

T = "2024-01-01T00:00:00Z"
ALIAS = {"alias_name": "n1", "alias_label": "crm"}


def seed(client):
    client.track(
        attributes=[{"external_id": "u1", "email": "a@x.com", "first_name": "Ann", "plan": "pro"},
                    {"external_id": "u2"}],
        events=[{"external_id": "u1", "name": "opened", "time": "2024-01-01T00:00:00Z"},
                {"external_id": "u1", "name": "opened", "time": "2024-02-01T00:00:00Z"}],
        purchases=[{"external_id": "u1", "product_id": "p", "currency": "USD", "price": 2.5, "quantity": 2,
                    "time": T}],
    )


# ---- export ------------------------------------------------------------------------------------


def test_export_returns_users_and_invalid_ids(client):
    seed(client)
    r = client.post("/users/export/ids", {"external_ids": ["u1", "missing"]})
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == "success"
    assert body["invalid_user_ids"] == ["missing"]
    (user,) = body["users"]
    assert re.fullmatch(r"[0-9a-f]{24}", user["braze_id"]) and user["appboy_id"] == user["braze_id"]
    assert user["external_id"] == "u1" and user["email"] == "a@x.com" and user["first_name"] == "Ann"
    assert user["custom_attributes"] == {"plan": "pro"}
    assert user["custom_events"] == [{"name": "opened", "first": "2024-01-01T00:00:00.000Z",
                                      "last": "2024-02-01T00:00:00.000Z", "count": 2}]
    assert user["purchases"] == [{"name": "p", "first": "2024-01-01T00:00:00.000Z",
                                  "last": "2024-01-01T00:00:00.000Z", "count": 1}]
    assert user["total_revenue"] == 5.0
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC", user["created_at"])


def test_export_filters_fields_and_omits_empty(client):
    seed(client)
    r = client.post("/users/export/ids", {"external_ids": ["u1", "u2"], "fields_to_export": ["external_id", "email"]})
    assert r.json() == {"message": "success", "users": [{"external_id": "u1", "email": "a@x.com"},
                                                        {"external_id": "u2"}]}


def test_export_nobody_found(client):
    r = client.post("/users/export/ids", {"external_ids": ["x"], "fields_to_export": ["external_id"]})
    assert r.json() == {"message": "success", "users": [], "invalid_user_ids": ["x"]}


def test_export_by_alias_email_and_braze_id(client, sandbox):
    client.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False, "email": "z@x.com"}])
    braze_id = sandbox.users()[0]["braze_id"]
    fields = {"fields_to_export": ["braze_id"]}
    assert client.post("/users/export/ids", {"user_aliases": [ALIAS], **fields}).json()["users"][0]["braze_id"] == braze_id
    assert client.post("/users/export/ids", {"email_address": "z@x.com", **fields}).json()["users"][0]["braze_id"] == braze_id
    assert client.post("/users/export/ids", {"braze_id": braze_id, **fields}).json()["users"][0]["braze_id"] == braze_id


def test_export_over_50_ids_is_400(client):
    r = client.post("/users/export/ids", {"external_ids": [f"u{i}" for i in range(40)],
                                          "user_aliases": [ALIAS] * 11})
    assert (r.status_code, r.json()) == (400, {"message": MAX_EXTERNAL_IDS})


def test_export_unknown_field_is_400(client):
    r = client.post("/users/export/ids", {"external_ids": ["u1"], "fields_to_export": ["shoe_size"]})
    assert (r.status_code, r.json()) == (400, {"message": "Invalid 'fields_to_export' field(s): shoe_size"})


def test_export_email_and_phone_together_is_400(client):
    r = client.post("/users/export/ids", {"email_address": "a@x.com", "phone": "+15555550123"})
    assert (r.status_code, r.json()) == (400, {"message": "Only one of 'device_id', 'email_address' or 'phone' "
                                                          "may be provided"})


# ---- delete ------------------------------------------------------------------------------------


def test_delete_by_external_ids(client, sandbox):
    seed(client)
    r = client.post("/users/delete", {"external_ids": ["u1", "nobody"]})
    assert r.status_code == 201
    assert r.json() == {"deleted": 1, "message": "success"}          # only what was really queued
    assert sandbox.user("u1") is None and sandbox.events() == [] and sandbox.purchases() == []
    assert client.post("/users/export/ids", {"external_ids": ["u1"]}).json() == {
        "message": "success", "users": [], "invalid_user_ids": ["u1"]}


def test_delete_then_track_creates_a_fresh_profile(client, sandbox):
    seed(client)
    client.post("/users/delete", {"external_ids": ["u1"]})
    client.track(attributes=[{"external_id": "u1", "x": 1}])
    assert sandbox.user("u1")["custom_attributes"] == {"x": 1}


def test_delete_by_alias_and_braze_id(client, sandbox):
    client.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False}, {"external_id": "u2"}])
    braze_id = sandbox.user("u2")["braze_id"]
    assert client.post("/users/delete", {"user_aliases": [ALIAS]}).status_code == 201
    assert client.post("/users/delete", {"braze_ids": [braze_id]}).status_code == 201
    assert sandbox.users() == []


def test_delete_by_email_with_prioritization(client, sandbox):
    client.track(attributes=[{"email": "a@x.com"}, {"external_id": "u1", "email": "a@x.com"}])
    r = client.post("/users/delete", {"email_addresses": [{"email": "a@x.com", "prioritization": ["unidentified"]}]})
    assert r.status_code == 201
    assert [u["external_id"] for u in sandbox.users()] == ["u1"]


def test_delete_by_email_ambiguous_deletes_nothing(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "email": "a@x.com"}, {"external_id": "u2", "email": "a@x.com"}])
    client.post("/users/delete", {"email_addresses": [{"email": "a@x.com", "prioritization": ["identified"]}]})
    assert len(sandbox.users()) == 2


def test_delete_needs_exactly_one_identifier_kind(client):
    text = ("Exactly one of 'external_ids', 'user_aliases', 'braze_ids', 'email_addresses' or 'phone_numbers' "
            "must be provided")
    for body in ({}, {"external_ids": ["a"], "braze_ids": ["b"]}):
        r = client.post("/users/delete", body)
        assert (r.status_code, r.json()) == (400, {"message": text})


def test_delete_over_50_is_400(client):
    r = client.post("/users/delete", {"external_ids": [f"u{i}" for i in range(51)]})
    assert (r.status_code, r.json()) == (400, {"message": MAX_IDS})


def test_delete_rejects_both_identified_and_unidentified(client):
    r = client.post("/users/delete", {"email_addresses": [
        {"email": "a@x.com", "prioritization": ["identified", "unidentified"]}]})
    assert (r.status_code, r.json()) == (400, {"message": "'prioritization' may contain only one of 'identified' "
                                                          "and 'unidentified'"})


def test_delete_needs_the_permission(make_client):
    client = make_client(permissions="users.track")
    assert client.post("/users/delete", {"external_ids": ["u1"]}).json() == {"message": "Access Denied"}


# ---- aliases -----------------------------------------------------------------------------------


def test_alias_new_without_external_id_creates_alias_only_user(client, sandbox):
    r = client.post("/users/alias/new", {"user_aliases": [ALIAS]})
    assert (r.status_code, r.json()) == (201, {"aliases_processed": 1, "message": "success"})
    assert sandbox.user(alias_name="n1", alias_label="crm")["external_id"] is None


def test_alias_new_with_external_id_adds_to_existing_user_only(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    client.post("/users/alias/new", {"user_aliases": [{"external_id": "u1", **ALIAS},
                                                      {"external_id": "ghost", "alias_name": "g", "alias_label": "l"}]})
    assert sandbox.user("u1")["user_aliases"] == [ALIAS]
    assert len(sandbox.users()) == 1


def test_alias_new_over_50_is_400(client):
    r = client.post("/users/alias/new", {"user_aliases": [ALIAS] * 51})
    assert (r.status_code, r.json()) == (400, {"message": MAX_IDS})


def test_alias_update_renames(client, sandbox):
    client.post("/users/alias/new", {"user_aliases": [ALIAS]})
    r = client.post("/users/alias/update", {"alias_updates": [
        {"alias_label": "crm", "old_alias_name": "n1", "new_alias_name": "n2"}]})
    assert (r.status_code, r.json()) == (201, {"message": "success"})
    assert sandbox.user(alias_name="n2", alias_label="crm") is not None
    assert sandbox.user(alias_name="n1", alias_label="crm") is None


# ---- identify ----------------------------------------------------------------------------------


def test_identify_alias_without_existing_external_id_sets_it(client, sandbox):
    client.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False, "plan": "x"}])
    r = client.post("/users/identify", {"aliases_to_identify": [{"external_id": "u9", "user_alias": ALIAS}]})
    assert (r.status_code, r.json()) == (201, {"aliases_processed": 1, "message": "success"})
    user = sandbox.user("u9")
    assert user["custom_attributes"] == {"plan": "x"} and user["user_aliases"] == [ALIAS]


def test_identify_merges_into_existing_identified_user(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "plan": "pro"}])
    client.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False, "plan": "free", "seats": 2}],
                 events=[{"user_alias": ALIAS, "_update_existing_only": False, "name": "e", "time": T}])
    client.post("/users/identify", {"aliases_to_identify": [{"external_id": "u1", "user_alias": ALIAS}]})
    assert len(sandbox.users()) == 1
    user = sandbox.user("u1")
    assert user["custom_attributes"] == {"plan": "pro", "seats": 2}
    assert user["user_aliases"] == [ALIAS]
    assert [e["external_id"] for e in sandbox.events()] == ["u1"]


def test_identify_by_email(client, sandbox):
    client.track(attributes=[{"email": "a@x.com", "plan": "x"}])
    client.post("/users/identify", {"emails_to_identify": [
        {"external_id": "u1", "email": "a@x.com", "prioritization": ["unidentified", "most_recently_updated"]}]})
    assert sandbox.user("u1")["custom_attributes"] == {"plan": "x"}


def test_identify_over_50_is_400(client):
    r = client.post("/users/identify", {"aliases_to_identify": [{"external_id": "u", "user_alias": ALIAS}] * 51})
    assert (r.status_code, r.json()) == (400, {"message": MAX_IDS})


def test_identify_needs_a_list(client):
    r = client.post("/users/identify", {})
    assert r.status_code == 400
