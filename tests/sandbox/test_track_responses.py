"""POST /users/track: transport checks and the exact response bodies (braze-api.md §2.8, §10, §11)."""

from __future__ import annotations

import json

import requests

from engine.sandbox.responses import MAX_INPUT_LENGTH, PARSE_ERROR, VALID_DATA_REQUIRED

EVENT = {"external_id": "u1", "name": "opened", "time": "2024-01-01T00:00:00Z"}
PURCHASE = {"external_id": "u1", "product_id": "p1", "currency": "USD", "price": 1.5, "time": "2024-01-01"}


def attrs(n: int, prefix: str = "u") -> list[dict[str, str]]:
    return [{"external_id": f"{prefix}{i}", "plan": "pro"} for i in range(n)]


def test_success_lists_only_the_arrays_sent(client):
    r = client.track(attributes=attrs(2))
    assert r.status_code == 201
    assert r.json() == {"message": "success", "attributes_processed": 2}


def test_success_with_all_three_arrays(client):
    r = client.track(attributes=attrs(1), events=[EVENT, EVENT], purchases=[PURCHASE])
    assert r.status_code == 201
    assert r.json() == {"message": "success", "attributes_processed": 1, "events_processed": 2,
                        "purchases_processed": 1}


def test_empty_array_sent_still_reports_its_key(client):
    r = client.track(attributes=attrs(1), events=[])
    assert r.json() == {"message": "success", "attributes_processed": 1, "events_processed": 0}


def test_partial_failure_is_201_with_errors(client):
    r = client.track(attributes=[{"external_id": "ok"}, {"plan": "no id"}], events=[EVENT, {"external_id": "u"}])
    assert r.status_code == 201
    assert r.json() == {
        "message": "success", "attributes_processed": 1, "events_processed": 1,
        "errors": [
            {"type": "'external_id' or 'braze_id' or 'user_alias' is required", "input_array": "attributes", "index": 1},
            {"type": "'name' is required and must be a non-empty string of at most 255 characters",
             "input_array": "events", "index": 1},
        ],
    }


def test_all_invalid_is_400_listing_every_error(client):
    bad = {"external_id": "u1", "email": "not-an-email"}
    r = client.track(attributes=[bad, bad])
    assert r.status_code == 400
    err = "The value provided for the 'email' field is not a valid email."
    assert r.json() == {"message": VALID_DATA_REQUIRED, "errors": [
        {"type": err, "input_array": "attributes", "index": 0},
        {"type": err, "input_array": "attributes", "index": 1},
    ]}


def test_error_codes_option_emits_enum_codes(make_client):
    client = make_client(error_codes=True)
    r = client.track(attributes=[{"external_id": "u1", "email": "bad"}, {"external_id": "u2"}])
    assert r.json()["errors"] == [{"type": "EMAIL_BAD_FORMAT", "input_array": "attributes", "index": 0}]


def test_no_arrays_is_400(client):
    r = client.post("/users/track", {})
    assert r.status_code == 400
    assert r.json() == {"message": VALID_DATA_REQUIRED}


def test_array_field_that_is_not_an_array_is_400(client):
    r = client.post("/users/track", {"attributes": {"external_id": "u1"}})
    assert r.status_code == 400
    assert r.json() == {"message": VALID_DATA_REQUIRED}


def test_non_object_element_is_a_per_object_error(client):
    r = client.track(attributes=["u1", {"external_id": "u2"}])
    assert r.status_code == 201
    assert r.json()["errors"] == [
        {"type": "Each element of 'attributes' must be an object", "input_array": "attributes", "index": 0}]


def test_75_objects_in_total_is_accepted(client):
    r = client.track(attributes=attrs(50), events=[EVENT] * 25)
    assert r.status_code == 201


def test_76_objects_in_total_is_max_input_length_exceeded(client):
    r = client.track(attributes=attrs(50), events=[EVENT] * 26)
    assert r.status_code == 400
    assert r.json() == {"message": MAX_INPUT_LENGTH}


def test_legacy_limits_allow_75_per_array(make_client):
    client = make_client(legacy_limits=True)
    assert client.track(attributes=attrs(75), events=[EVENT] * 75, purchases=[PURCHASE] * 75).status_code == 201
    r = client.track(attributes=attrs(76))
    assert (r.status_code, r.json()) == (400, {"message": MAX_INPUT_LENGTH})


def test_unknown_top_level_keys_are_accepted(client):
    r = client.post("/users/track", {"partner": "Reflow", "attributes": attrs(1)})
    assert r.status_code == 201


def test_invalid_json_is_400_parse_error(client):
    r = client.post("/users/track", data='{"attributes": [1,]}')
    assert r.status_code == 400
    assert r.json() == {"message": PARSE_ERROR}


def test_top_level_array_is_400_parse_error(client):
    r = client.post("/users/track", data="[]")
    assert (r.status_code, r.json()) == (400, {"message": PARSE_ERROR})


def test_invalid_utf8_is_400_parse_error(client):
    r = client.post("/users/track", data=b'{"attributes": "\xff"}')
    assert (r.status_code, r.json()) == (400, {"message": PARSE_ERROR})


def test_empty_body_is_400_parse_error(client):
    r = client.post("/users/track", data=b"")
    assert (r.status_code, r.json()) == (400, {"message": PARSE_ERROR})


def test_body_over_4_mb_is_413(client):
    body = json.dumps({"attributes": [{"external_id": "u", "x": "y" * (4 * 1024 * 1024)}]})
    r = client.post("/users/track", data=body)
    assert r.status_code == 413
    assert r.json() == {"message": "Payload Too Large"}


def test_missing_authorization_is_401(client):
    r = requests.post(client.handle.url + "/users/track", json={"attributes": attrs(1)}, timeout=5)
    assert r.status_code == 401
    assert r.json() == {"message": "Invalid API key"}


def test_wrong_key_is_401(client):
    r = client.post("/users/track", {"attributes": attrs(1)}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_key_without_bearer_is_401(client):
    r = client.post("/users/track", {"attributes": attrs(1)}, headers={"Authorization": client.handle.api_key})
    assert r.status_code == 401


def test_quoted_key_is_401(client):
    r = client.post("/users/track", {"attributes": attrs(1)},
                    headers={"Authorization": f'Bearer "{client.handle.api_key}"'})
    assert r.status_code == 401


def test_401_body_never_echoes_the_key(client):
    r = client.post("/users/track", {}, headers={"Authorization": "Bearer secret-value-123"})
    assert "secret-value-123" not in r.text


def test_missing_permission_is_403_access_denied(make_client):
    client = make_client(permissions="users.delete")
    r = client.track(attributes=attrs(1))
    assert r.status_code == 403
    assert r.json() == {"message": "Access Denied"}
    assert client.post("/users/delete", {"external_ids": ["u1"]}).status_code == 201


def test_unknown_path_is_404(client):
    r = client.post("/users/trak", {"attributes": attrs(1)})
    assert (r.status_code, r.json()) == (404, {"message": "Not Found"})


def test_trailing_slash_is_404(client):
    assert client.post("/users/track/", {"attributes": attrs(1)}).status_code == 404


def test_wrong_method_is_404(client):
    assert client.call("GET", "/users/track").status_code == 404


def test_missing_content_type_is_415(client):
    r = client.post("/users/track", data=json.dumps({"attributes": attrs(1)}), headers={"Content-Type": ""})
    assert r.status_code == 415
    assert r.json() == {"message": "Unsupported Media Type: Content-Type must be application/json"}


def test_wrong_content_type_is_415(client):
    r = client.post("/users/track", data=json.dumps({"attributes": attrs(1)}),
                    headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_content_type_with_charset_is_accepted(client):
    r = client.post("/users/track", data=json.dumps({"attributes": attrs(1)}),
                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 201


def test_keep_alive_reuses_one_connection(client):
    for _ in range(3):
        assert client.track(attributes=attrs(1)).status_code == 201
    assert client.handle.stats()["requests"]["POST /users/track"] == {"201": 3}
    assert client.handle.connections_opened() == 1
