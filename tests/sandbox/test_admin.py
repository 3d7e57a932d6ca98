"""The inspection API under /_sandbox/ and the testing handle."""

from __future__ import annotations

import requests

T = "2024-01-01T00:00:00Z"


def get(sandbox, path):
    r = requests.get(sandbox.url + path, timeout=5)
    return r.status_code, r.json()


def seed(client):
    client.track(attributes=[{"external_id": "u1", "email": "a@x.com", "plan": "pro"}, {"external_id": "u2"}],
                 events=[{"external_id": "u1", "name": "e", "time": T}],
                 purchases=[{"external_id": "u2", "product_id": "p", "currency": "USD", "price": 1, "time": T}])


def test_user_by_external_id_email_braze_id(client, sandbox):
    seed(client)
    status, user = get(sandbox, "/_sandbox/users?external_id=u1")
    assert status == 200 and user["custom_attributes"] == {"plan": "pro"} and len(user["events"]) == 1
    assert get(sandbox, "/_sandbox/users?email=a@x.com")[1]["external_id"] == "u1"
    assert get(sandbox, f"/_sandbox/users?braze_id={user['braze_id']}")[1]["external_id"] == "u1"
    assert get(sandbox, "/_sandbox/users?external_id=nobody") == (404, {"message": "user not found"})


def test_all_users(client, sandbox):
    seed(client)
    status, body = get(sandbox, "/_sandbox/users")
    assert status == 200 and {u["external_id"] for u in body["users"]} == {"u1", "u2"}


def test_events_and_purchases(client, sandbox):
    seed(client)
    assert [e["name"] for e in get(sandbox, "/_sandbox/events")[1]["events"]] == ["e"]
    assert [p["product_id"] for p in get(sandbox, "/_sandbox/purchases")[1]["purchases"]] == ["p"]
    assert get(sandbox, "/_sandbox/events?external_id=u2")[1] == {"events": []}


def test_stats(client, sandbox):
    seed(client)
    client.post("/users/track", {})
    status, stats = get(sandbox, "/_sandbox/stats")
    assert status == 200
    assert stats["requests"]["POST /users/track"] == {"201": 1, "400": 1}
    assert stats["objects_per_request"] == {"histogram": {"0": 1, "4": 1}, "max": 4, "requests": 2}
    assert (stats["users"], stats["events"], stats["purchases"], stats["data_points"]) == (2, 1, 1, 4)
    assert stats == sandbox.stats()


def test_catalog_items_and_reset(client, sandbox):
    client.post("/catalogs", {"catalogs": [{"name": "c", "fields": [{"name": "id", "type": "string"}]}]})
    client.call("POST", "/catalogs/c/items", {"items": [{"id": "i1"}]})
    assert get(sandbox, "/_sandbox/catalogs/c/items") == (200, {"items": [{"id": "i1"}]})
    assert get(sandbox, "/_sandbox/catalogs/none/items")[0] == 404
    assert requests.post(sandbox.url + "/_sandbox/reset", timeout=5).status_code == 200
    assert sandbox.users() == [] and sandbox.stats()["requests_total"] == 0 and sandbox.catalog_items("c") is None


def test_save_without_state_is_400(sandbox):
    r = requests.post(sandbox.url + "/_sandbox/save", timeout=5)
    assert r.status_code == 400


def test_handle_exposes_live_store(client, sandbox):
    seed(client)
    assert sandbox.store.by_external("u1") is not None
    sandbox.reset()
    assert sandbox.users() == [] and sandbox.events() == [] and sandbox.purchases() == []


def test_default_api_key(sandbox, monkeypatch):
    assert sandbox.api_key == "sandbox-api-key"


def test_api_key_from_environment(monkeypatch):
    from engine.sandbox.testing import running_sandbox

    monkeypatch.setenv("REFLOW_SANDBOX_API_KEY", "env-key-1234")
    with running_sandbox() as handle:
        assert handle.api_key == "env-key-1234"
    with running_sandbox(api_key="explicit") as handle:
        assert handle.api_key == "explicit"
