"""Rate limits and x-ratelimit-* headers (braze-api.md §3)."""

from __future__ import annotations

import time

import pytest

from engine.sandbox.options import OptionError, parse_rate_limit

ONE = {"attributes": [{"external_id": "u1"}]}


def test_headers_on_every_response_epoch_mode(client):
    r = client.post("/users/track", ONE)
    assert r.headers["x-ratelimit-limit"] == "3000"
    assert r.headers["x-ratelimit-remaining"] == "2999"
    reset = int(r.headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 4


def test_headers_also_on_errors(client):
    for r in (client.post("/users/track", {}), client.post("/users/track", ONE, headers={"Authorization": "x"}),
              client.post("/nope", ONE)):
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} <= set(r.headers)


def test_header_names_are_lowercase_on_the_wire(client):
    r = client.post("/users/track", ONE)
    assert "x-ratelimit-limit" in list(r.raw.headers.keys())  # raw keys keep the wire case


def test_other_endpoints_use_braze_defaults(client):
    assert client.post("/users/delete", {"external_ids": ["u"]}).headers["x-ratelimit-limit"] == "20000"
    assert client.post("/users/identify", {"aliases_to_identify": []}).headers["x-ratelimit-limit"] == "20000"
    assert client.post("/users/export/ids", {"external_ids": ["u"]}).headers["x-ratelimit-limit"] == "250"
    sub = client.post("/subscription/status/set", {})
    assert sub.headers["x-ratelimit-limit"] == "5000"
    assert client.call("GET", "/catalogs").headers["x-ratelimit-limit"] == "50"
    assert client.call("POST", "/catalogs/x/items", {"items": []}).headers["x-ratelimit-limit"] == "16000"


def test_shared_bucket_counts_across_endpoints(client):
    first = client.post("/users/delete", {"external_ids": ["u"]})
    second = client.post("/users/alias/new", {"user_aliases": [{"alias_name": "a", "alias_label": "b"}]})
    assert int(first.headers["x-ratelimit-remaining"]) - int(second.headers["x-ratelimit-remaining"]) == 1


def test_429_when_the_window_is_used_up(make_client):
    client = make_client(rate_limit="2/60")
    assert client.post("/users/track", ONE).status_code == 201
    r = client.post("/users/track", ONE)
    assert (r.status_code, r.headers["x-ratelimit-remaining"]) == (201, "0")
    r = client.post("/users/track", ONE)
    assert r.status_code == 429
    assert r.json() == {"message": "Rate limit exceeded"}
    assert r.headers["x-ratelimit-limit"] == "2" and r.headers["x-ratelimit-remaining"] == "0"
    assert client.handle.user("u1") is not None
    assert client.handle.stats()["requests"]["POST /users/track"] == {"201": 2, "429": 1}


def test_rate_limit_applies_to_track_only(make_client):
    client = make_client(rate_limit="1/60")
    client.post("/users/track", ONE)
    assert client.post("/users/track", ONE).status_code == 429
    assert client.post("/users/delete", {"external_ids": ["u"]}).status_code == 201


def test_window_resets(make_client):
    client = make_client(rate_limit="1/0.5")
    client.post("/users/track", ONE)
    deadline = time.time() + 3
    while client.post("/users/track", ONE).status_code == 429:
        assert time.time() < deadline
        time.sleep(0.05)


def test_mau_mode_reset_is_seconds_and_429_sends_retry_after(make_client):
    client = make_client(rate_limit="1/30", ratelimit_headers="mau")
    ok = client.post("/users/track", ONE)
    assert 1 <= int(ok.headers["x-ratelimit-reset"]) <= 30
    limited = client.post("/users/track", ONE)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["x-ratelimit-retry-after"]) <= 30
    assert not {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"} & set(limited.headers)


def test_unauthorized_requests_do_not_use_the_limit(make_client):
    client = make_client(rate_limit="1/60")
    client.post("/users/track", ONE, headers={"Authorization": "Bearer wrong"})
    assert client.post("/users/track", ONE).status_code == 201


@pytest.mark.parametrize("text", ["abc", "10", "0/3", "5/0", "5/x"])
def test_bad_rate_limit_text(text):
    if text == "10":
        assert parse_rate_limit(text) == (10, 1.0)
        return
    with pytest.raises(OptionError):
        parse_rate_limit(text)
