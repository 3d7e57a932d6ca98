"""The process-then-fail fault: the request is applied, then answered 500/504 or dropped, and logged."""

from __future__ import annotations

import pytest
import requests

from engine.sandbox.options import OptionError, SandboxOptions

T = "2024-01-01T00:00:00Z"
EVENT = {"events": [{"external_id": "u1", "name": "bought", "time": T, "properties": {"order_id": "o1"}}]}


@pytest.mark.parametrize("kind", ["500", "504"])
def test_applied_then_answered_5xx(make_client, kind):
    client = make_client(process_then_fail_rate=1.0, process_then_fail_kind=kind, seed=1)
    r = client.post("/users/track", EVENT)
    assert (r.status_code, r.json()) == (int(kind), {"message": {"500": "Internal Server Error",
                                                                 "504": "Gateway Timeout"}[kind]})
    assert "x-ratelimit-remaining" in r.headers
    assert [e["properties"] for e in client.handle.events()] == [{"order_id": "o1"}]     # applied
    (logged,) = client.handle.applied_then_failed()
    assert (logged["seq"], logged["route"], logged["answer"], logged["body"]) == (1, "POST /users/track",
                                                                                  int(kind), EVENT)


def test_applied_then_dropped(make_client):
    client = make_client(process_then_fail_rate=1.0, process_then_fail_kind="drop")
    with pytest.raises(requests.ConnectionError):
        requests.post(client.handle.url + "/users/track", json=EVENT, headers=client.handle.headers, timeout=5)
    assert len(client.handle.events()) == 1
    assert [x["answer"] for x in client.handle.applied_then_failed()] == ["dropped"]
    assert client.handle.stats()["dropped_connections"] == 1


def test_a_retry_duplicates_the_event(make_client):
    """What the fault is for: a client that retries a failed-but-applied request sends a second copy."""
    client = make_client(process_then_fail_rate=1.0, process_then_fail_kind="500")
    client.post("/users/track", EVENT)
    client.post("/users/track", EVENT)
    assert len(client.handle.events()) == 2 and len(client.handle.applied_then_failed()) == 2


def test_mixed_kind_uses_all_three_answers_and_is_seeded(make_client):
    def answers(seed):
        client = make_client(process_then_fail_rate=0.5, seed=seed)
        for i in range(40):
            try:
                client.post("/users/track", {"attributes": [{"external_id": f"u{i}"}]})
            except requests.ConnectionError:
                client.session.close()
        return [x["answer"] for x in client.handle.applied_then_failed()]

    first = answers(3)
    assert set(first) == {500, 504, "dropped"} and 0 < len(first) < 40
    assert first == answers(3)


def test_rejected_requests_are_not_failed_after_apply(make_client):
    """Only a request that succeeded (so was applied) is turned into a failure."""
    client = make_client(process_then_fail_rate=1.0, process_then_fail_kind="500")
    assert client.post("/users/track", {}).status_code == 400
    assert client.post("/users/track", EVENT, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.handle.applied_then_failed() == []


def test_reads_are_never_failed_after_apply(make_client):
    client = make_client(process_then_fail_rate=1.0, process_then_fail_kind="500")
    r = client.post("/users/export/ids", {"external_ids": ["u1"], "fields_to_export": ["external_id"]})
    assert r.status_code == 200 and client.handle.applied_then_failed() == []


def test_other_writing_endpoints_fail_after_apply_too(make_client):
    client = make_client(process_then_fail_rate=1.0, process_then_fail_kind="504")
    r = client.post("/catalogs", {"catalogs": [{"name": "c", "fields": [{"name": "id", "type": "string"}]}]})
    assert r.status_code == 504 and client.handle.catalog_items("c") == []
    assert client.call("POST", "/catalogs/c/items", {"items": [{"id": "i1"}]}).status_code == 504
    assert client.handle.catalog_items("c") == [{"id": "i1"}]
    assert [x["route"] for x in client.handle.applied_then_failed()] == [
        "POST /catalogs", "POST /catalogs/{catalog_name}/items"]


def test_admin_api_lists_them_and_reset_clears(make_client):
    client = make_client(process_then_fail_rate=1.0, process_then_fail_kind="500")
    client.post("/users/track", EVENT)
    r = requests.get(client.handle.url + "/_sandbox/applied_then_failed", timeout=5)
    assert r.status_code == 200 and [x["body"] for x in r.json()["requests"]] == [EVENT]
    stats = requests.get(client.handle.url + "/_sandbox/stats", timeout=5).json()
    assert stats["applied_then_failed"] == r.json()["requests"]
    assert stats["requests"]["POST /users/track"] == {"500": 1}
    client.handle.reset()
    assert client.handle.applied_then_failed() == []


def test_off_by_default(client, sandbox):
    assert client.post("/users/track", EVENT).status_code == 201
    assert sandbox.applied_then_failed() == []


@pytest.mark.parametrize("options", [{"process_then_fail_rate": 1.1}, {"process_then_fail_kind": "502"}])
def test_bad_values_are_refused(options):
    with pytest.raises(OptionError):
        SandboxOptions.build(**options)
