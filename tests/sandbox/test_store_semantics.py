"""Profile-state semantics of /users/track (braze-api.md §2.3–§2.7)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T = "2024-01-01T00:00:00Z"
ALIAS = {"alias_name": "n1", "alias_label": "crm"}


def custom(sandbox, external_id="u1"):
    return sandbox.user(external_id)["custom_attributes"]


def test_external_id_upserts(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "plan": "free", "first_name": "Ann"}])
    client.track(attributes=[{"external_id": "u1", "plan": "pro"}])
    user = sandbox.user("u1")
    assert user["first_name"] == "Ann"
    assert user["custom_attributes"] == {"plan": "pro"}
    assert len(sandbox.users()) == 1


def test_braze_id_is_24_hex(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    braze_id = sandbox.user("u1")["braze_id"]
    assert len(braze_id) == 24 and int(braze_id, 16) >= 0


def test_null_removes_an_attribute(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "plan": "pro", "first_name": "Ann"}])
    client.track(attributes=[{"external_id": "u1", "plan": None, "first_name": None}])
    user = sandbox.user("u1")
    assert user["custom_attributes"] == {}
    assert "first_name" not in user


def test_inc_increments_and_starts_from_zero(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "n": {"inc": 3}}])
    client.track(attributes=[{"external_id": "u1", "n": {"inc": -1}}])
    assert custom(sandbox) == {"n": 2}


def test_array_set_deduplicates(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "tags": ["a", "b", "a"]}])
    assert custom(sandbox) == {"tags": ["a", "b"]}


def test_add_moves_existing_value_to_the_end_and_remove_drops(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "tags": ["a", "b", "c"]}])
    client.track(attributes=[{"external_id": "u1", "tags": {"add": ["a", "d"], "remove": ["b"]}}])
    assert custom(sandbox) == {"tags": ["c", "a", "d"]}


def test_add_on_missing_attribute_creates_the_array(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "tags": {"add": ["x"]}}])
    assert custom(sandbox) == {"tags": ["x"]}


def test_array_max_length_drops_oldest(make_client):
    client = make_client(max_array_length=3)
    client.track(attributes=[{"external_id": "u1", "tags": ["a", "b", "c"]}])
    client.track(attributes=[{"external_id": "u1", "tags": {"add": ["d", "e"]}}])
    assert custom(client.handle) == {"tags": ["c", "d", "e"]}
    client.track(attributes=[{"external_id": "u1", "tags": ["1", "2", "3", "4"]}])
    assert custom(client.handle) == {"tags": ["2", "3", "4"]}


def test_default_max_array_length_is_25(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "tags": [str(i) for i in range(30)]}])
    assert custom(sandbox)["tags"] == [str(i) for i in range(5, 30)]


def test_nested_object_replaces_by_default(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "car": {"make": "VW", "specs": {"hp": 90, "doors": 3}}}])
    client.track(attributes=[{"external_id": "u1", "car": {"specs": {"hp": 110}}}])
    assert custom(sandbox) == {"car": {"specs": {"hp": 110}}}


def test_merge_objects_deep_merges(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "car": {"make": "VW", "specs": {"hp": 90, "doors": 3}}}])
    client.track(attributes=[{"external_id": "u1", "_merge_objects": True, "car": {"specs": {"hp": 110}, "color": "red"}}])
    assert custom(sandbox) == {"car": {"make": "VW", "specs": {"hp": 110, "doors": 3}, "color": "red"}}


def test_nested_time_is_accepted(client, sandbox):
    r = client.track(attributes=[{"external_id": "u1", "car": {"bought": {"$time": "2020-05-28"}}}])
    assert "errors" not in r.json()
    assert custom(sandbox) == {"car": {"bought": {"$time": "2020-05-28"}}}


def test_array_of_objects_add_update_remove(client, sandbox):
    pets = [{"id": 1, "type": "dog", "name": "Rex"}, {"id": 2, "type": "cat", "name": "Tom"},
            {"id": 4, "type": "fish", "name": "Nemo"}]
    client.track(attributes=[{"external_id": "u1", "pets": pets}])
    client.track(attributes=[{"external_id": "u1", "_merge_objects": True, "pets": {
        "$add": [{"id": 3, "type": "dog", "name": "Doug"}],
        "$update": [{"$identifier_key": "id", "$identifier_value": 4, "$new_object": {"breed": "goldfish"}}],
        "$remove": [{"$identifier_key": "type", "$identifier_value": "dog"}],
    }}])
    assert custom(sandbox) == {"pets": [{"id": 2, "type": "cat", "name": "Tom"},
                                        {"id": 4, "type": "fish", "name": "Nemo", "breed": "goldfish"},
                                        {"id": 3, "type": "dog", "name": "Doug"}]}


def test_update_existing_only_on_missing_external_id_is_silent_noop(client, sandbox):
    r = client.track(attributes=[{"external_id": "ghost", "_update_existing_only": True, "plan": "x"}])
    assert r.json() == {"message": "success", "attributes_processed": 1}
    assert sandbox.user("ghost") is None
    assert sandbox.stats()["data_points"] == 1


def test_update_existing_only_updates_an_existing_user(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    client.track(attributes=[{"external_id": "u1", "_update_existing_only": True, "plan": "x"}])
    assert custom(sandbox) == {"plan": "x"}


def test_alias_is_update_only_by_default(client, sandbox):
    r = client.track(attributes=[{"user_alias": ALIAS, "plan": "x"}])
    assert r.json() == {"message": "success", "attributes_processed": 1}
    assert sandbox.users() == []


def test_alias_creates_with_update_existing_only_false(client, sandbox):
    client.track(attributes=[{"user_alias": ALIAS, "_update_existing_only": False, "email": "a@x.com"}])
    user = sandbox.user(alias_name="n1", alias_label="crm")
    assert user["external_id"] is None
    assert user["user_aliases"] == [ALIAS]
    assert user["email"] == "a@x.com"
    client.track(attributes=[{"user_alias": ALIAS, "plan": "x"}])
    assert sandbox.user(alias_name="n1", alias_label="crm")["custom_attributes"] == {"plan": "x"}


def test_alias_events_are_dropped_for_missing_alias(client, sandbox):
    client.track(events=[{"user_alias": ALIAS, "name": "e", "time": T}])
    assert sandbox.events() == []


def test_braze_id_never_creates(client, sandbox):
    r = client.track(attributes=[{"braze_id": "0123456789abcdef01234567", "_update_existing_only": False, "p": 1}])
    assert r.json() == {"message": "success", "attributes_processed": 1}
    assert sandbox.users() == []


def test_braze_id_updates_existing(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    braze_id = sandbox.user("u1")["braze_id"]
    client.track(attributes=[{"braze_id": braze_id, "plan": "x"}])
    assert custom(sandbox) == {"plan": "x"}


def test_email_only_profile_is_created_and_found_again(client, sandbox):
    client.track(attributes=[{"email": "a@x.com", "plan": "x"}])
    client.track(attributes=[{"email": "a@x.com", "seats": 3}])
    users = sandbox.users()
    assert len(users) == 1
    assert users[0]["external_id"] is None and users[0]["user_aliases"] == []
    assert users[0]["custom_attributes"] == {"plan": "x", "seats": 3}


def test_email_lookup_prefers_identified_profile(client, sandbox):
    client.track(attributes=[{"email": "a@x.com"}])
    client.track(attributes=[{"external_id": "u1", "email": "a@x.com"}])
    client.track(attributes=[{"email": "a@x.com", "plan": "x"}])
    assert custom(sandbox) == {"plan": "x"}


def test_email_with_primary_is_an_attribute_not_a_lookup(client, sandbox):
    client.track(attributes=[{"external_id": "old", "email": "a@x.com"}])
    client.track(attributes=[{"external_id": "new", "email": "a@x.com"}])
    assert {u["external_id"] for u in sandbox.users()} == {"old", "new"}


def test_phone_lookup(client, sandbox):
    client.track(attributes=[{"phone": "+15555550123", "plan": "x"}])
    assert sandbox.user(phone="+15555550123")["custom_attributes"] == {"plan": "x"}


def test_country_name_maps_to_alpha_2(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "country": "Australia"}, {"external_id": "u2", "country": "de"},
                             {"external_id": "u3", "country": "Atlantis"}])
    assert sandbox.user("u1")["country"] == "AU"
    assert sandbox.user("u2")["country"] == "DE"
    assert sandbox.user("u3")["country"] is None and "country" in sandbox.user("u3")


def test_invalid_time_zone_is_ignored(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "time_zone": "America/New_York"}])
    client.track(attributes=[{"external_id": "u1", "time_zone": "Mars/Olympus"}])
    assert sandbox.user("u1")["time_zone"] == "America/New_York"


def test_standard_fields_are_stored(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "first_name": "A", "last_name": "B", "dob": "1990-02-03",
                              "gender": "F", "language": "fr", "home_city": "Paris", "email_subscribe": "opted_in"}])
    user = sandbox.user("u1")
    assert {k: user[k] for k in ("first_name", "last_name", "dob", "gender", "language", "home_city",
                                 "email_subscribe")} == {
        "first_name": "A", "last_name": "B", "dob": "1990-02-03", "gender": "F", "language": "fr",
        "home_city": "Paris", "email_subscribe": "opted_in"}


def test_subscription_groups_attribute_sets_states(client, sandbox):
    group = "3f1c9a4e-2b7d-4c0a-9e55-0d6f8a1b2c3d"
    client.track(attributes=[{"external_id": "u1", "subscription_groups": [
        {"subscription_group_id": group, "subscription_state": "subscribed"}]}])
    assert sandbox.user("u1")["subscription_groups"] == {group: "subscribed"}


def test_events_create_users_and_are_not_deduplicated(client, sandbox):
    event = {"external_id": "u1", "name": "opened", "time": "2024-01-01T01:00:00+01:00", "properties": {"a": 1}}
    client.track(events=[event, event])
    events = sandbox.events()
    assert len(events) == 2
    assert events[0]["time"] == "2024-01-01T00:00:00.000Z"
    assert events[0]["properties"] == {"a": 1}
    assert sandbox.user("u1") is not None


def test_future_event_time_is_clamped_to_now(client, sandbox):
    future = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    client.track(events=[{"external_id": "u1", "name": "e", "time": future}])
    stored = datetime.fromisoformat(sandbox.events()[0]["time"].replace("Z", "+00:00"))
    assert stored <= datetime.now(UTC)


def test_only_first_256_event_properties_are_kept(client, sandbox):
    properties = {f"p{i:03d}": i for i in range(300)}
    client.track(events=[{"external_id": "u1", "name": "e", "time": T, "properties": properties}])
    assert len(sandbox.events()[0]["properties"]) == 256


def test_purchase_defaults_quantity_to_1(client, sandbox):
    client.track(purchases=[{"external_id": "u1", "product_id": "p", "currency": "EUR", "price": 9.5, "time": T}])
    purchase = sandbox.purchases()[0]
    assert (purchase["product_id"], purchase["currency"], purchase["price"], purchase["quantity"]) == ("p", "EUR", 9.5, 1)


def test_rejected_objects_change_nothing(client, sandbox):
    client.track(attributes=[{"external_id": "u1", "plan": "x"}, {"external_id": "u1", "email": "bad", "plan": "y"}])
    assert custom(sandbox) == {"plan": "x"}
