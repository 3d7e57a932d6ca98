"""Sending to Braze: the HTTP outcome table (a scripted server on 127.0.0.1), retries, splits, secrets."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from scripted_http import RESET, TIMEOUT, ScriptedServer, reply

from engine.destinations.base import ACKNOWLEDGED, NOT_ATTEMPTED, REJECTED, Batch
from engine.destinations.braze.client import (
    FATAL,
    OK,
    RATE_LIMITED,
    RETRY,
    ROW_ERRORS,
    SPLIT,
    TokenBucket,
    rate_limit_wait,
    sort_response,
)
from engine.destinations.braze.destination import USER_AGENT, BrazeDestination
from engine.destinations.braze.endpoints import channel_info
from engine.errors import DestinationError
from engine.project import ConnectionConfig
from engine.specs import DestinationSpec, Identifier, SyncSpec

KEY = "sk-live-SECRET-0123456789"
TIMEOUT_S = 0.5
ATTRS = "POST /users/track attributes"
EPOCH = 1_700_000_000.0
BAD_EMAIL = "The value provided for the 'email' field is not a valid email."
VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."


class FakeClock:
    """monotonic/time/sleep for the client: sleeping advances time and is recorded."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return EPOCH + self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.t += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def braze() -> Any:
    server = ScriptedServer([reply(201, {"message": "success"})], hang=TIMEOUT_S + 0.3)
    yield server
    for dest in OPENED:
        dest.close()
    OPENED.clear()
    server.close()


OPENED: list[BrazeDestination] = []


BASE = ""          # the scripted server's URL, set per test by destination()


def destination(clock: FakeClock, obj: str = "users", max_retries: int = 3, *, server: ScriptedServer,
                **dest: Any) -> BrazeDestination:
    global BASE
    BASE = server.url
    conn = ConnectionConfig("braze", endpoint=server.url, max_retries=max_retries, timeout=TIMEOUT_S)
    dest.setdefault("identifier", Identifier("external_id", "id") if obj != "catalog_items" else None)
    sync = SyncSpec("s", "m", ("id",), DestinationSpec("braze", obj, **dest))
    dest_ = BrazeDestination(conn, KEY, sync, client_options={
        "sleep": clock.sleep, "monotonic": clock.monotonic, "clock": clock.time, "rng": lambda: 1.0})
    OPENED.append(dest_)
    return dest_


def batch(*keys: str, channel: str = ATTRS) -> Batch:
    return Batch(channel, keys, tuple(json.dumps({"external_id": k, "n": k}) for k in keys))


def outcomes(results: Any) -> list[tuple[str, str, str | None]]:
    return [(r.key, r.outcome, r.reason) for r in results]


def body_keys(call: Any) -> list[str]:
    return [obj.get("external_id") or obj.get("id") for obj in next(iter(call.json().values()))]


# -- the HTTP outcome table -------------------------------------------------------------------

SUCCESS = reply(201, {"message": "success", "attributes_processed": 3})
A, B, C = "a", "b", "c"

TABLE: list[tuple[str, list[Any], list[tuple[str, str, str | None]], int, list[float]]] = [
    # name, replies in order (exceptions raise), expected outcomes, calls, sleeps
    ("201", [SUCCESS], [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 1, []),
    ("200 and 202 are success too", [reply(200, {"message": "success"})],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 1, []),
    ("201 with errors", [reply(201, {"message": "success", "errors": [
        {"type": BAD_EMAIL, "input_array": "attributes", "index": 1}]})],
     [(A, ACKNOWLEDGED, None), (B, REJECTED, BAD_EMAIL), (C, ACKNOWLEDGED, None)], 1, []),
    ("400 all invalid", [reply(400, {"message": VALID_DATA, "errors": [
        {"type": BAD_EMAIL, "input_array": "attributes", "index": i} for i in range(3)]})],
     [(A, REJECTED, BAD_EMAIL), (B, REJECTED, BAD_EMAIL), (C, REJECTED, BAD_EMAIL)], 1, []),
    ("400 with unlisted rows re-sends them once", [
        reply(400, {"message": VALID_DATA, "errors": [{"type": BAD_EMAIL, "input_array": "attributes", "index": 0}]}),
        SUCCESS],
     [(A, REJECTED, BAD_EMAIL), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, []),
    ("400 twice leaves unlisted rows pending", [
        reply(400, {"message": VALID_DATA, "errors": [{"type": BAD_EMAIL, "input_array": "attributes", "index": 0}]}),
        reply(400, {"message": VALID_DATA, "errors": [{"type": BAD_EMAIL, "input_array": "attributes", "index": 0}]})],
     [(A, REJECTED, BAD_EMAIL), (B, REJECTED, BAD_EMAIL),
      (C, NOT_ATTEMPTED, f"Braze refused the request: {VALID_DATA}")], 2, []),
    ("429 with reset seconds, then success", [reply(429, headers={"X-RateLimit-Reset": "7"}), SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [7.0]),
    ("429 with reset epoch, then success", [reply(429, headers={"x-ratelimit-reset": str(int(EPOCH) + 12)}),
                                            SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [12.0]),
    ("429 with retry-after (MAU plans), then success", [reply(429, headers={"X-Ratelimit-Retry-After": "3"}),
                                                        SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [3.0]),
    ("500 502 503 then success", [reply(500), reply(502), reply(503), SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 4, [0.5, 1.0, 2.0]),
    ("503 until max_retries", [reply(503, {"message": "capacity"})],
     [(k, NOT_ATTEMPTED, "gave up after 3 retries: Braze answered 503: capacity") for k in (A, B, C)],
     4, [0.5, 1.0, 2.0]),
    ("timeout then success", [TIMEOUT, SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [0.5]),
    ("connection closed without an answer, then success", [RESET, SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [0.5]),
    ("timeouts until max_retries", [TIMEOUT],
     [(k, NOT_ATTEMPTED, "gave up after 3 retries: no answer from Braze within 0.5 s (TimeoutError)")
      for k in (A, B, C)], 4, [0.5, 1.0, 2.0]),
    ("resets until max_retries", [RESET],
     [(k, NOT_ATTEMPTED, "gave up after 3 retries: connection to Braze failed (RemoteDisconnected)")
      for k in (A, B, C)], 4, [0.5, 1.0, 2.0]),
]


@pytest.mark.parametrize(("name", "replies", "expected", "calls", "sleeps"), TABLE, ids=[t[0] for t in TABLE])
def test_http_outcomes(clock: FakeClock, braze: ScriptedServer, name: str, replies: list[Any],
                       expected: list[Any], calls: int, sleeps: list[float]) -> None:
    braze.answer(*replies)
    got = destination(clock, server=braze).send(batch(A, B, C))
    assert outcomes(got) == expected
    assert len(braze.calls) == calls
    assert all(c.method == "POST" and c.path == "/users/track" for c in braze.calls)
    assert clock.sleeps == pytest.approx(sleeps)


def fatal_case(server: ScriptedServer, status: int, body: Any, obj: str = "users", channel: str = ATTRS,
               **dest: Any) -> str:
    clock = FakeClock()
    server.answer(reply(status, body))
    with pytest.raises(DestinationError) as err:
        destination(clock, obj, server=server, **dest).send(batch("a", channel=channel))
    assert len(server.calls) == 1
    message = str(err.value)
    assert KEY not in message and KEY[:12] not in message
    return message


def test_401_names_key_and_endpoint(braze: ScriptedServer) -> None:
    assert fatal_case(braze, 401, {"message": f"Invalid API key: {KEY}"}) == (
        f"Braze rejected the API key (401) for connection 'braze' at {braze.url}: check the key and the instance")


def test_403_names_the_missing_permission(braze: ScriptedServer) -> None:
    assert "the API key lacks users.track" in fatal_case(braze, 403, {"message": "Access Denied"})
    message = fatal_case(braze, 403, {"message": "Access Denied"}, "catalog_items", "PATCH /catalogs/products/items",
                         catalog="products", item_id="id")
    assert "the API key lacks catalogs.update_items" in message
    assert [(c.method, c.path) for c in braze.calls] == [("PATCH", "/catalogs/products/items")]


def test_404_415_and_other_4xx_are_fatal(braze: ScriptedServer) -> None:
    assert "check the endpoint URL or instance" in fatal_case(braze, 404, {"message": "Not Found"})
    assert "Content-Type (415)" in fatal_case(braze, 415, {"message": "Unsupported Media Type"})
    assert "Braze answered 409" in fatal_case(braze, 409, {"message": "conflict"})


def test_400_without_row_info_is_isolated_by_splitting(clock: FakeClock, braze: ScriptedServer) -> None:
    def answer(call: Any) -> dict[str, Any]:
        if b'"bad"' in call.body:
            return reply(400, {"message": "Invalid Request", "errors": [
                {"id": "invalid-fields", "message": "Some of the fields given do not exist in the catalog",
                 "parameters": ["id"], "parameter_values": ["bad"]}]})
        return reply(202, {"message": "success"})

    braze.answer(answer)
    dest = destination(clock, "catalog_items", server=braze, catalog="products", item_id="id")
    items = ('{"id":"a"}', '{"id":"bad"}', '{"id":"c"}')
    got = dest.send(Batch("POST /catalogs/products/items", ("a", "bad", "c"), items))
    assert outcomes(got) == [
        ("a", ACKNOWLEDGED, None),
        ("bad", REJECTED, "invalid-fields: Some of the fields given do not exist in the catalog"),
        ("c", ACKNOWLEDGED, None)]
    assert [body_keys(c) for c in braze.calls] == [["a", "bad", "c"], ["a"], ["bad", "c"], ["bad"], ["c"]]


def test_413_splits_until_bodies_fit(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer(lambda call: reply(413, {}) if len(body_keys(call)) > 2 else reply(201, {"message": "success"}))
    got = destination(clock, server=braze).send(batch("a", "b", "c", "d", "e"))
    assert [r.outcome for r in got] == [ACKNOWLEDGED] * 5
    assert [len(body_keys(c)) for c in braze.calls] == [5, 2, 3, 1, 2]


def test_single_row_413_is_rejected(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer({"status": 413, "body": ""})
    assert outcomes(destination(clock, server=braze).send(batch("a"))) == [
        ("a", REJECTED, "request body too large for Braze (413)")]


def test_request_headers_and_body(clock: FakeClock, braze: ScriptedServer) -> None:
    destination(clock, server=braze).send(batch("a", "b"))
    call = braze.calls[0]
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["User-Agent"] == USER_AGENT
    assert call.body == (b'{"attributes":[{"external_id": "a", "n": "a"},{"external_id": "b", "n": "b"}]}')


def test_other_channels_send_their_envelopes(clock: FakeClock, braze: ScriptedServer) -> None:
    dest = destination(clock, server=braze)
    dest.send(Batch("POST /users/delete external_ids", ("a", "b"), ('"a"', '"b"')))
    dest.send(Batch("POST /subscription/status/set g-1 subscribed email", ("a",), ('"a@b.io"',)))
    dest.send(Batch("DELETE /catalogs/products/items", ("p",), ('{"id":"p"}',)))
    assert [(c.method, c.path) for c in braze.calls] == [
        ("POST", "/users/delete"), ("POST", "/subscription/status/set"), ("DELETE", "/catalogs/products/items")]
    assert [c.json() for c in braze.calls] == [
        {"external_ids": ["a", "b"]},
        {"subscription_group_id": "g-1", "subscription_state": "subscribed", "email": ["a@b.io"]},
        {"items": [{"id": "p"}]}]


def test_remaining_zero_pauses_the_next_request(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer(reply(201, {"message": "success"},
                       headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(EPOCH) + 4)}))
    dest = destination(clock, server=braze)
    dest.send(batch("a"))
    assert clock.sleeps == []
    dest.send(batch("b"))
    assert clock.sleeps == pytest.approx([4.0])


def test_many_429_without_headers_back_off_then_give_up(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer(reply(429, {"message": "Rate Limited"}))
    got = destination(clock, max_retries=1, server=braze).send(batch("a"))
    assert got[0].outcome == NOT_ATTEMPTED and "rate limited (429)" in (got[0].reason or "")
    assert len(braze.calls) == 21          # 429 waits do not use up max_retries, but are bounded


def test_concurrent_sends_keep_one_connection_per_thread(clock: FakeClock, braze: ScriptedServer) -> None:
    dest = destination(clock, server=braze)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(dest.send, [batch(f"k{i}", f"j{i}") for i in range(40)]))
    assert all(r.outcome == ACKNOWLEDGED for rs in results for r in rs)
    assert len(braze.calls) == 40
    assert 1 <= braze.connections <= 4                    # keep-alive: no new connection per request
    assert 1 <= dest._get_client()._transport.open_connections() <= 4
    dest.close()
    assert dest._get_client()._transport.open_connections() == 0


def test_an_idle_connection_closed_by_braze_is_replaced_without_a_retry(clock: FakeClock,
                                                                       braze: ScriptedServer) -> None:
    braze.answer({**reply(201, {"message": "success"}), "close": True})
    dest = destination(clock, server=braze)
    for key in ("a", "b", "c"):
        assert dest.send(batch(key))[0].outcome == ACKNOWLEDGED
        time.sleep(0.05)                     # the server's FIN arrives while the connection is idle
    assert len(braze.calls) == 3 and braze.connections == 3 and clock.sleeps == []


def test_a_connection_closed_by_braze_is_replaced(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer(reply(201, {"message": "success"}, headers={"Connection": "close"}))
    dest = destination(clock, server=braze)
    for key in ("a", "b", "c"):
        assert dest.send(batch(key))[0].outcome == ACKNOWLEDGED
    assert braze.connections == 3 and clock.sleeps == []


# -- the sorting function, as a table ---------------------------------------------------------

SORT_TABLE: list[tuple[int, Any, dict[str, str], str]] = [
    (200, {"message": "success"}, {}, OK), (201, {"message": "success"}, {}, OK), (202, {"message": "queued"}, {}, OK),
    (400, {"message": VALID_DATA, "errors": [{"type": "x", "input_array": "attributes", "index": 0}]}, {}, ROW_ERRORS),
    (400, {"message": "Max Input Length Exceeded"}, {}, SPLIT),
    (400, {"message": "Invalid Request", "errors": [{"id": "ids-too-large", "message": "m"}]}, {}, SPLIT),
    (401, {}, {}, FATAL), (403, {}, {}, FATAL), (404, {}, {}, FATAL), (413, None, {}, SPLIT), (415, {}, {}, FATAL),
    (422, {}, {}, FATAL), (429, {}, {"x-ratelimit-reset": "1"}, RATE_LIMITED), (408, None, {}, RETRY),
    (500, None, {}, RETRY), (502, None, {}, RETRY), (503, None, {}, RETRY), (504, None, {}, RETRY),
]


@pytest.mark.parametrize(("status", "body", "headers", "kind"), SORT_TABLE)
def test_sort_response_table(status: int, body: Any, headers: dict[str, str], kind: str) -> None:
    raw = json.dumps(body).encode() if body is not None else b"<html>oops</html>"
    verdict = sort_response(status, headers, raw, channel_info(ATTRS), connection="braze", base_url=BASE, now=EPOCH)
    assert verdict.kind == kind


@pytest.mark.parametrize(("headers", "wait"), [
    ({"x-ratelimit-retry-after": "2"}, 2.0), ({"x-ratelimit-reset": "30"}, 30.0),
    ({"x-ratelimit-reset": str(EPOCH + 9)}, 9.0), ({"x-ratelimit-reset": str(EPOCH - 9)}, 0.0),
    ({"x-ratelimit-reset": "soon"}, None), ({}, None),
])
def test_rate_limit_wait(headers: dict[str, str], wait: float | None) -> None:
    assert rate_limit_wait(headers, EPOCH) == wait


def test_token_bucket_spaces_requests_at_the_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(10, monotonic=clock.monotonic, sleep=clock.sleep)
    for _ in range(30):
        bucket.acquire()
    # 10 burst tokens, then one every 0.1 s
    assert clock.t == pytest.approx(2.0)


def test_api_key_never_appears_in_errors_even_when_braze_echoes_it(braze: ScriptedServer) -> None:
    message = fatal_case(braze, 403, {"message": f"Access Denied for key {KEY}"})
    assert "Access Denied for key ***" in message
    message = fatal_case(braze, 418, {"message": f"key {KEY} is a teapot"})
    assert KEY not in message and "***" in message


def test_api_key_is_not_in_the_destination_repr(clock: FakeClock, braze: ScriptedServer) -> None:
    dest = destination(clock, server=braze)
    assert KEY not in repr(dest.connection) and KEY not in repr(vars(dest))
    assert KEY not in repr(vars(dest._get_client()))
