"""One test per /users/track validation rule (braze-api.md §10): the object is rejected with the
exact human message (default) and enum code (--error-codes), and the other objects still go through."""

from __future__ import annotations

import pytest

from engine.sandbox.responses import VALID_DATA_REQUIRED

GROUP = "3f1c9a4e-2b7d-4c0a-9e55-0d6f8a1b2c3d"
T = "2024-01-01T00:00:00Z"

# (id, array, object, code, human message)
REJECTED = [
    ("missing-identifier", "attributes", {"plan": "x"}, "MISSING_IDENTIFIER",
     "'external_id' or 'braze_id' or 'user_alias' is required"),
    ("two-primaries", "attributes", {"external_id": "a", "braze_id": "b"}, "MULTIPLE_PRIMARY_IDENTIFIERS",
     "Only one of 'external_id', 'braze_id' or 'user_alias' may be provided"),
    ("alias-and-external-id", "attributes", {"external_id": "a", "user_alias": {"alias_name": "n", "alias_label": "l"}},
     "MULTIPLE_PRIMARY_IDENTIFIERS", "Only one of 'external_id', 'braze_id' or 'user_alias' may be provided"),
    ("external-id-not-string", "attributes", {"external_id": 12}, "BAD_EXTERNAL_USER_ID",
     "'external_id' must be a non-empty string"),
    ("external-id-988-bytes", "attributes", {"external_id": "x" * 988}, "EXTERNAL_USER_ID_TOO_LARGE",
     "'external_id' must be fewer than 988 bytes"),
    ("external-id-multibyte-over", "attributes", {"external_id": "é" * 494}, "EXTERNAL_USER_ID_TOO_LARGE",
     "'external_id' must be fewer than 988 bytes"),
    ("braze-id-not-string", "attributes", {"braze_id": 5}, "BAD_BRAZE_ID", "'braze_id' must be a non-empty string"),
    ("alias-empty-name", "attributes", {"user_alias": {"alias_name": "", "alias_label": "l"}}, "BAD_USER_ALIAS",
     "'user_alias' must be an object with non-empty 'alias_name' and 'alias_label' strings of at most 236 bytes each"),
    ("alias-missing-label", "attributes", {"user_alias": {"alias_name": "n"}}, "BAD_USER_ALIAS",
     "'user_alias' must be an object with non-empty 'alias_name' and 'alias_label' strings of at most 236 bytes each"),
    ("alias-237-bytes", "attributes", {"user_alias": {"alias_name": "n" * 237, "alias_label": "l"}}, "BAD_USER_ALIAS",
     "'user_alias' must be an object with non-empty 'alias_name' and 'alias_label' strings of at most 236 bytes each"),
    ("bad-email", "attributes", {"external_id": "a", "email": "a@"}, "EMAIL_BAD_FORMAT",
     "The value provided for the 'email' field is not a valid email."),
    ("bad-email-as-identifier", "attributes", {"email": "nope", "plan": "x"}, "EMAIL_BAD_FORMAT",
     "The value provided for the 'email' field is not a valid email."),
    ("bad-phone", "attributes", {"external_id": "a", "phone": "call me"}, "PHONE_BAD_FORMAT",
     "The value provided for the 'phone' field is not a valid phone number."),
    ("update-existing-only-not-bool", "attributes", {"external_id": "a", "_update_existing_only": "yes"},
     "BAD_UPDATE_EXISTING_ONLY", "'_update_existing_only' must be a boolean"),
    ("merge-objects-not-bool", "attributes", {"external_id": "a", "_merge_objects": 1}, "BAD_MERGE_OBJECTS",
     "'_merge_objects' must be a boolean"),
    ("email-subscribe", "attributes", {"external_id": "a", "email_subscribe": "yes"}, "BAD_EMAIL_SUBSCRIPTION_STATE",
     "'email_subscribe' must be one of 'opted_in', 'subscribed' or 'unsubscribed'"),
    ("push-subscribe", "attributes", {"external_id": "a", "push_subscribe": "on"}, "BAD_PUSH_SUBSCRIPTION_STATE",
     "'push_subscribe' must be one of 'opted_in', 'subscribed' or 'unsubscribed'"),
    ("subscription-groups-not-array", "attributes", {"external_id": "a", "subscription_groups": {}},
     "BAD_SUBSCRIPTION_GROUP_ARRAY", "'subscription_groups' must be an array"),
    ("subscription-group-not-hash", "attributes", {"external_id": "a", "subscription_groups": ["x"]},
     "BAD_SUBSCRIPTION_GROUP_HASH",
     "each subscription group must be an object with 'subscription_group_id' and 'subscription_state'"),
    ("subscription-group-bad-id", "attributes",
     {"external_id": "a", "subscription_groups": [{"subscription_group_id": "nope", "subscription_state": "subscribed"}]},
     "BAD_SUBSCRIPTION_GROUP_ID", "'subscription_group_id' must be a valid subscription group id"),
    ("subscription-group-bad-state", "attributes",
     {"external_id": "a", "subscription_groups": [{"subscription_group_id": GROUP, "subscription_state": "opted_in"}]},
     "BAD_SUBSCRIPTION_GROUP_STATE", "'subscription_state' must be 'subscribed' or 'unsubscribed'"),
    ("gender", "attributes", {"external_id": "a", "gender": "male"}, "BAD_GENDER",
     "'gender' must be one of 'M', 'F', 'O', 'N', 'P' or null"),
    ("dob-format", "attributes", {"external_id": "a", "dob": "01/02/1990"}, "BAD_DOB",
     "'dob' must be a date formatted YYYY-MM-DD"),
    ("dob-not-a-date", "attributes", {"external_id": "a", "dob": "1990-02-30"}, "BAD_DOB",
     "'dob' must be a date formatted YYYY-MM-DD"),
    ("language", "attributes", {"external_id": "a", "language": "english"}, "BAD_LANGUAGE",
     "'language' must be an ISO-639-1 code"),
    ("country-not-string", "attributes", {"external_id": "a", "country": 61}, "BAD_COUNTRY",
     "'country' must be a string"),
    ("first-name-too-long", "attributes", {"external_id": "a", "first_name": "x" * 256}, "BAD_FIRST_NAME",
     "'first_name' must be a string of at most 255 characters"),
    ("current-location", "attributes", {"external_id": "a", "current_location": {"lat": 1}}, "BAD_LOCATION_UPDATE",
     "'current_location' must be {\"longitude\": n, \"latitude\": n}"),
    ("push-tokens-not-array", "attributes", {"external_id": "a", "push_tokens": "t"}, "BAD_PUSH_TOKEN_ARRAY",
     "'push_tokens' must be an array"),
    ("push-token-hash", "attributes", {"external_id": "a", "push_tokens": [{"token": "t"}]}, "BAD_PUSH_TOKEN_HASH",
     "each push token must be an object with 'app_id' and 'token'"),
    ("push-token-device-id", "attributes",
     {"external_id": "a", "push_tokens": [{"app_id": "x", "token": "t", "device_id": "short"}]}, "BAD_DEVICE_ID",
     "'device_id' must be 8 to 255 bytes"),
    ("push-token-import-with-external-id", "attributes", {"external_id": "a", "push_token_import": True},
     "BAD_PUSH_TOKEN_IMPORT", "'push_token_import' objects must not carry 'external_id' or 'braze_id'"),
    ("email-subscription-info", "attributes", {"external_id": "a", "email_subscription_info": {}},
     "INVALID_ATTRIBUTE_EMAIL_SUBSCRIPTION_INFO", "'email_subscription_info' is not a valid attribute"),
    ("attribute-name-empty", "attributes", {"external_id": "a", "": 1}, "BAD_ATTRIBUTE_NAME",
     "custom attribute names must be non-empty, at most 255 characters and must not start with '$'"),
    ("attribute-name-dollar", "attributes", {"external_id": "a", "$x": 1}, "BAD_ATTRIBUTE_NAME",
     "custom attribute names must be non-empty, at most 255 characters and must not start with '$'"),
    ("attribute-name-256", "attributes", {"external_id": "a", "k" * 256: 1}, "BAD_ATTRIBUTE_NAME",
     "custom attribute names must be non-empty, at most 255 characters and must not start with '$'"),
    ("string-value-256", "attributes", {"external_id": "a", "bio": "x" * 256}, "STRING_VALUE_TOO_LARGE",
     "'bio' must be a string of at most 255 characters"),
    ("array-string-256", "attributes", {"external_id": "a", "tags": ["x" * 256]}, "STRING_VALUE_TOO_LARGE",
     "'tags' must be a string of at most 255 characters"),
    ("nested-array", "attributes", {"external_id": "a", "m": [[1]]}, "BAD_ATTRIBUTE_VALUE",
     "'m' must not contain nested arrays"),
    ("nested-key-dot", "attributes", {"external_id": "a", "car": {"a.b": 1}}, "BAD_NESTED_KEY",
     "'car': nested keys must not be empty, contain spaces, '.' or '$'"),
    ("nested-key-dollar", "attributes", {"external_id": "a", "car": {"in": {"$x": 1}}}, "BAD_NESTED_KEY",
     "'car': nested keys must not be empty, contain spaces, '.' or '$'"),
    ("nested-bad-time", "attributes", {"external_id": "a", "car": {"bought": {"$time": "soon"}}}, "BAD_NESTED_TIME",
     "'car': '$time' must be a valid date"),
    ("nested-too-large", "attributes", {"external_id": "a", "car": {f"k{i}": "x" * 200 for i in range(600)}},
     "NESTED_ATTRIBUTE_TOO_LARGE", "'car' must be at most 100 KB"),
    ("inc-not-integer", "attributes", {"external_id": "a", "n": {"inc": 1.5}}, "BAD_INCREMENT",
     "'n': 'inc' must be an integer"),
    ("add-not-array", "attributes", {"external_id": "a", "tags": {"add": "x"}}, "BAD_ARRAY_OPERATION",
     "'tags': 'add' must be an array of values"),
    ("update-without-merge", "attributes",
     {"external_id": "a", "pets": {"$update": [{"$identifier_key": "id", "$identifier_value": 1, "$new_object": {}}]}},
     "BAD_ARRAY_OF_OBJECTS_OPERATION", "'pets': '$update' requires '_merge_objects': true"),
    ("remove-without-identifier", "attributes", {"external_id": "a", "pets": {"$remove": [{"id": 1}]}},
     "BAD_ARRAY_OF_OBJECTS_OPERATION", "'pets': '$add', '$update' and '$remove' must be arrays of valid operations"),
    ("event-no-name", "events", {"external_id": "a", "time": T}, "BAD_EVENT_NAME",
     "'name' is required and must be a non-empty string of at most 255 characters"),
    ("event-blank-name", "events", {"external_id": "a", "name": " ", "time": T}, "BAD_EVENT_NAME",
     "'name' is required and must be a non-empty string of at most 255 characters"),
    ("event-no-time", "events", {"external_id": "a", "name": "e"}, "BAD_TIME",
     "'time' is required and must be an ISO-8601 time"),
    ("event-bad-time", "events", {"external_id": "a", "name": "e", "time": "yesterday"}, "BAD_TIME",
     "'time' is required and must be an ISO-8601 time"),
    ("event-properties-not-object", "events", {"external_id": "a", "name": "e", "time": T, "properties": [1]},
     "BAD_PROPERTIES", "'properties' must be an object"),
    ("event-property-dollar", "events", {"external_id": "a", "name": "e", "time": T, "properties": {"$p": 1}},
     "BAD_PROPERTY_NAME", "property names must be non-empty, at most 255 characters and must not start with '$'"),
    ("event-property-reserved", "events", {"external_id": "a", "name": "e", "time": T, "properties": {"time": 1}},
     "RESERVED_PROPERTY_NAME", "'time' is a reserved property name"),
    ("event-property-256", "events", {"external_id": "a", "name": "e", "time": T, "properties": {"p": "x" * 256}},
     "PROPERTY_VALUE_TOO_LARGE", "property 'p' must be at most 255 characters"),
    ("event-missing-identifier", "events", {"name": "e", "time": T}, "MISSING_IDENTIFIER",
     "'external_id' or 'braze_id' or 'user_alias' is required"),
    ("purchase-no-product", "purchases", {"external_id": "a", "currency": "USD", "price": 1, "time": T},
     "BAD_PRODUCT_ID", "'product_id' is required and must be a non-empty string of at most 255 characters"),
    ("purchase-lowercase-currency", "purchases",
     {"external_id": "a", "product_id": "p", "currency": "usd", "price": 1, "time": T},
     "BAD_CURRENCY", "'currency' must be a three-letter uppercase ISO 4217 code"),
    ("purchase-unknown-currency", "purchases",
     {"external_id": "a", "product_id": "p", "currency": "XYZ", "price": 1, "time": T},
     "BAD_CURRENCY", "'currency' must be a three-letter uppercase ISO 4217 code"),
    ("purchase-price-string", "purchases",
     {"external_id": "a", "product_id": "p", "currency": "USD", "price": "1.0", "time": T},
     "BAD_PRICE", "'price' is required and must be a number"),
    ("purchase-quantity-zero", "purchases",
     {"external_id": "a", "product_id": "p", "currency": "USD", "price": 1, "quantity": 0, "time": T},
     "BAD_QUANTITY", "'quantity' must be an integer between 1 and 100"),
    ("purchase-quantity-101", "purchases",
     {"external_id": "a", "product_id": "p", "currency": "USD", "price": 1, "quantity": 101, "time": T},
     "BAD_QUANTITY", "'quantity' must be an integer between 1 and 100"),
    ("purchase-quantity-float", "purchases",
     {"external_id": "a", "product_id": "p", "currency": "USD", "price": 1, "quantity": 1.5, "time": T},
     "BAD_QUANTITY", "'quantity' must be an integer between 1 and 100"),
    ("purchase-no-time", "purchases", {"external_id": "a", "product_id": "p", "currency": "USD", "price": 1},
     "BAD_TIME", "'time' is required and must be an ISO-8601 time"),
    ("purchase-property-reserved", "purchases",
     {"external_id": "a", "product_id": "p", "currency": "USD", "price": 1, "time": T,
      "properties": {"event_name": "x"}}, "RESERVED_PROPERTY_NAME", "'event_name' is a reserved property name"),
]

VALID = {
    "attributes": {"external_id": "fine"},
    "events": {"external_id": "fine", "name": "e", "time": T},
    "purchases": {"external_id": "fine", "product_id": "p", "currency": "USD", "price": 1, "time": T},
}


@pytest.mark.parametrize(("array", "obj", "code", "text"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_rule_rejects_the_object_with_braze_message(client, array, obj, code, text):
    r = client.track(**{array: [VALID[array], obj]})
    assert r.status_code == 201
    assert r.json() == {"message": "success", f"{array}_processed": 1,
                        "errors": [{"type": text, "input_array": array, "index": 1}]}


@pytest.mark.parametrize(("array", "obj", "code"), [r[1:4] for r in REJECTED], ids=[r[0] for r in REJECTED])
def test_rule_enum_code_and_alone_it_is_fatal(make_client, array, obj, code):
    client = make_client(error_codes=True)
    r = client.track(**{array: [obj]})
    assert r.status_code == 400
    assert r.json() == {"message": VALID_DATA_REQUIRED, "errors": [{"type": code, "input_array": array, "index": 0}]}
    assert client.handle.stats()["data_points"] == 0


def test_blocklisted_external_id(make_client):
    client = make_client(reject_external_ids="dummy,test")
    r = client.track(attributes=[{"external_id": "ok"}, {"external_id": "dummy"}],
                     events=[{"external_id": "test", "name": "e", "time": T}])
    assert r.status_code == 201
    assert r.json() == {"message": "success", "attributes_processed": 1, "events_processed": 0, "errors": [
        {"type": "provided external_id is blacklisted and disallowed", "input_array": "attributes", "index": 1},
        {"type": "provided external_id is blacklisted and disallowed", "input_array": "events", "index": 0},
    ]}
    assert client.handle.user("dummy") is None


def test_known_subscription_groups_option(make_client):
    client = make_client(subscription_groups=[GROUP], error_codes=True)
    other = "00000000-0000-4000-8000-000000000000"
    r = client.track(attributes=[
        {"external_id": "a", "subscription_groups": [{"subscription_group_id": GROUP, "subscription_state": "subscribed"}]},
        {"external_id": "b", "subscription_groups": [{"subscription_group_id": other, "subscription_state": "subscribed"}]},
    ])
    assert r.json()["errors"] == [{"type": "BAD_SUBSCRIPTION_GROUP_ID", "input_array": "attributes", "index": 1}]


def test_987_byte_external_id_is_accepted(client):
    assert "errors" not in client.track(attributes=[{"external_id": "x" * 987}]).json()


def test_236_byte_alias_is_accepted(client):
    alias = {"alias_name": "n" * 236, "alias_label": "l" * 236}
    assert "errors" not in client.track(attributes=[{"user_alias": alias, "_update_existing_only": False}]).json()


def test_255_char_string_is_accepted(client):
    assert "errors" not in client.track(attributes=[{"external_id": "a", "bio": "x" * 255}]).json()


def test_long_strings_truncate_option_keeps_the_object(make_client):
    client = make_client(long_strings="truncate")
    r = client.track(attributes=[{"external_id": "a", "bio": "x" * 300}])
    assert r.json() == {"message": "success", "attributes_processed": 1}
    assert client.handle.user("a")["custom_attributes"]["bio"] == "x" * 255


@pytest.mark.parametrize("when", ["2024-01-01", "2024-01-01T10:00:00", "2024-01-01T10:00:00+01:00",
                                  "2024-01-01T10:00:00Z", "2024-01-01T10:00:00:123+0100", "2024-01-01 10:00:00"])
def test_documented_time_formats_are_accepted(client, when):
    r = client.track(events=[{"external_id": "a", "name": "e", "time": when}])
    assert r.json() == {"message": "success", "events_processed": 1}


@pytest.mark.parametrize("gender", ["M", "F", "O", "N", "P", None])
def test_documented_genders_are_accepted(client, gender):
    assert "errors" not in client.track(attributes=[{"external_id": "a", "gender": gender}]).json()


@pytest.mark.parametrize("state", ["opted_in", "subscribed", "unsubscribed"])
def test_documented_subscribe_states_are_accepted(client, state):
    r = client.track(attributes=[{"external_id": "a", "email_subscribe": state, "push_subscribe": state}])
    assert "errors" not in r.json()
