"""Fault injection flags."""

from __future__ import annotations

import time

import pytest
import requests

from engine.sandbox.options import OptionError, SandboxOptions

ONE = {"attributes": [{"external_id": "u1"}]}


def test_fail_429_first_n(make_client):
    client = make_client(fail_429_first=2)
    statuses = [client.post("/users/track", ONE).status_code for _ in range(3)]
    assert statuses == [429, 429, 201]


def test_forced_429_has_zero_remaining(make_client):
    client = make_client(fail_429_first=1)
    r = client.post("/users/track", ONE)
    assert (r.json(), r.headers["x-ratelimit-remaining"]) == ({"message": "Rate limit exceeded"}, "0")


def test_fail_5xx_rate_1_always_fails_and_applies_nothing(make_client):
    client = make_client(fail_5xx_rate=1.0, seed=1)
    seen = set()
    for _ in range(20):
        r = client.post("/users/track", ONE)
        assert r.status_code in (500, 502, 503, 504)
        assert set(r.json()) == {"message"}
        seen.add(r.status_code)
    assert len(seen) > 1
    assert client.handle.user("u1") is None


def test_fail_5xx_rate_is_reproducible_with_a_seed(make_client):
    def statuses(**options):
        client = make_client(**options)
        return [client.post("/users/track", ONE).status_code for _ in range(30)]

    first = statuses(fail_5xx_rate=0.5, seed=7)
    assert first == statuses(fail_5xx_rate=0.5, seed=7)
    assert 201 in first and any(s >= 500 for s in first)


def test_drop_connection_closes_without_answer(make_client):
    client = make_client(drop_connection_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        requests.post(client.handle.url + "/users/track", json=ONE, headers=client.handle.headers, timeout=5)
    assert client.handle.user("u1") is None
    assert client.handle.stats()["dropped_connections"] == 1


def test_latency(make_client):
    client = make_client(latency_ms=200)
    started = time.perf_counter()
    assert client.post("/users/track", ONE).status_code == 201
    assert time.perf_counter() - started >= 0.2


def test_faults_spare_the_inspection_api(make_client):
    client = make_client(fail_5xx_rate=1.0, drop_connection_rate=1.0)
    assert requests.get(client.handle.url + "/_sandbox/stats", timeout=5).status_code == 200


@pytest.mark.parametrize("options", [{"fail_5xx_rate": 1.5}, {"drop_connection_rate": -0.1}, {"latency_ms": -1},
                                     {"ratelimit_headers": "weird"}, {"permissions": "users.fly"}, {"nope": 1}])
def test_bad_options_are_refused(options):
    with pytest.raises(OptionError):
        SandboxOptions.build(**options)
