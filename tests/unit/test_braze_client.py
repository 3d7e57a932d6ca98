"""Sending to Braze: the HTTP outcome table (a scripted server on 127.0.0.1), retries, splits, secrets."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from scripted_http import RESET, TIMEOUT, ScriptedServer, reply

from engine.destinations.base import ACKNOWLEDGED, NOT_ATTEMPTED, REJECTED, UNKNOWN, Batch
from engine.destinations.braze.client import (
    FATAL,
    OK,
    RATE_LIMITED,
    REFUSED,
    RETRY,
    ROW_ERRORS,
    SPLIT,
    UNEXPECTED,
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
    """monotonic/time/sleep for the client: sleeping advances time and is recorded. `epoch` is what
    the client's wall clock reads at the start."""

    def __init__(self, epoch: float = EPOCH) -> None:
        self.epoch = epoch
        self.t = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return self.epoch + self.t

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
        reply(201, {"message": "success", "attributes_processed": 2})],
     [(A, REJECTED, BAD_EMAIL), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, []),
    ("400 twice leaves unlisted rows pending", [
        reply(400, {"message": VALID_DATA, "errors": [{"type": BAD_EMAIL, "input_array": "attributes", "index": 0}]}),
        reply(400, {"message": VALID_DATA, "errors": [{"type": BAD_EMAIL, "input_array": "attributes", "index": 0}]})],
     [(A, REJECTED, BAD_EMAIL), (B, REJECTED, BAD_EMAIL),
      (C, NOT_ATTEMPTED, f"Braze refused the request: {VALID_DATA}")], 2, []),
    ("429 with reset seconds, then success", [reply(429, headers={"X-RateLimit-Reset": "7"}), SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [7.0]),
    ("429 with retry-after (MAU plans), then success", [reply(429, headers={"X-Ratelimit-Retry-After": "3"}),
                                                        SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [3.0]),
    ("500 502 503 then success", [reply(500), reply(502), reply(503), SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 4, [0.5, 1.0, 2.0]),
    ("503 until max_retries: may have been applied", [reply(503, {"message": "capacity"})],
     [(k, UNKNOWN, "gave up after 3 retries: {host} answered 503: capacity") for k in (A, B, C)],
     4, [0.5, 1.0, 2.0]),
    ("500 502 504 until max_retries", [reply(500), reply(502), reply(504, {"message": "Gateway Timeout"})],
     [(k, UNKNOWN, "gave up after 3 retries: {host} answered 504: Gateway Timeout") for k in (A, B, C)],
     4, [0.5, 1.0, 2.0]),
    ("timeout then success", [TIMEOUT, SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [0.5]),
    ("connection closed without an answer, then success", [RESET, SUCCESS],
     [(A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, ACKNOWLEDGED, None)], 2, [0.5]),
    ("timeouts until max_retries: may have been applied", [TIMEOUT],
     [(k, UNKNOWN, "gave up after 3 retries: no answer from {host} within 0.5 s") for k in (A, B, C)],
     4, [0.5, 1.0, 2.0]),
    ("resets after sending until max_retries: may have been applied", [RESET],
     [(k, UNKNOWN, "gave up after 3 retries: {host} closed the connection without answering")
      for k in (A, B, C)], 4, [0.5, 1.0, 2.0]),
    ("a timeout, then 429s only: the timed-out attempt may have been applied",
     [TIMEOUT, reply(429, {"message": "Rate Limited"})],
     [(k, UNKNOWN, "still rate limited (429) after 20 waits; an earlier attempt may have been applied "
                   "(no answer from {host} within 0.5 s)") for k in (A, B, C)],
     22, [0.5] + [min(30.0, 0.5 * 2 ** i) for i in range(20)]),
    ("429s only: never processed", [reply(429, {"message": "Rate Limited"}, headers={"X-RateLimit-Reset": "1"})],
     [(k, NOT_ATTEMPTED, "still rate limited (429) after 20 waits") for k in (A, B, C)], 21, [1.0] * 20),
    ("408 until max_retries: the server never took the request", [reply(408)],
     [(k, NOT_ATTEMPTED, "gave up after 3 retries: {host} answered 408 (request timeout)") for k in (A, B, C)],
     4, [0.5, 1.0, 2.0]),
]


@pytest.mark.parametrize(("name", "replies", "expected", "calls", "sleeps"), TABLE, ids=[t[0] for t in TABLE])
def test_http_outcomes(clock: FakeClock, braze: ScriptedServer, name: str, replies: list[Any],
                       expected: list[Any], calls: int, sleeps: list[float]) -> None:
    braze.answer(*replies)
    got = destination(clock, server=braze).send(batch(A, B, C))
    host = braze.url.removeprefix("http://")
    assert outcomes(got) == [(k, o, r.format(host=host) if r else r) for k, o, r in expected]
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


def catalog_400(clock: FakeClock, braze: ScriptedServer, error: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """Items a, bad, c where Braze refuses any request holding `bad` with `error`; the outcomes."""
    def answer(call: Any) -> dict[str, Any]:
        if b'"bad"' in call.body:
            return reply(400, {"message": "Invalid Request", "errors": [error]})
        return reply(202, {"message": "success"})

    braze.answer(answer)
    dest = destination(clock, "catalog_items", server=braze, catalog="products", item_id="id")
    items = ('{"id":"a"}', '{"id":"bad"}', '{"id":"c"}')
    return outcomes(dest.send(Batch("POST /catalogs/products/items", ("a", "bad", "c"), items)))


CATALOG_REFUSAL = [("a", ACKNOWLEDGED, None),
                   ("bad", REJECTED, "invalid-fields: Some of the fields given do not exist in the catalog"),
                   ("c", ACKNOWLEDGED, None)]
INVALID_FIELDS = {"id": "invalid-fields", "message": "Some of the fields given do not exist in the catalog"}


def test_a_catalog_400_naming_items_rejects_exactly_those(clock: FakeClock, braze: ScriptedServer) -> None:
    error = {**INVALID_FIELDS, "parameters": ["id"], "parameter_values": ["bad"]}
    assert catalog_400(clock, braze, error) == CATALOG_REFUSAL
    assert [body_keys(c) for c in braze.calls] == [["a", "bad", "c"], ["a", "c"]]     # no bisecting


def test_400_without_row_info_is_isolated_by_splitting(clock: FakeClock, braze: ScriptedServer) -> None:
    assert catalog_400(clock, braze, INVALID_FIELDS) == CATALOG_REFUSAL
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
    dest.send(Batch("DELETE /catalogs/products/items", ("p",), ('{"id":"p"}',)))
    assert [(c.method, c.path) for c in braze.calls] == [
        ("POST", "/users/delete"), ("DELETE", "/catalogs/products/items")]
    assert [c.json() for c in braze.calls] == [{"external_ids": ["a", "b"]}, {"items": [{"id": "p"}]}]


def test_remaining_zero_pauses_the_next_request(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer(lambda call: reply(201, {"message": "success"}, headers={
        "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 4)}))
    dest = destination(clock, server=braze)
    dest.send(batch("a"))
    assert clock.sleeps == []
    dest.send(batch("b"))
    assert clock.sleeps == [pytest.approx(4.0, abs=1.0)]       # reset - the answer's Date (whole seconds)


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

JSON = {"content-type": "application/json; charset=utf-8"}
HTML = {"content-type": "text/html"}
ROW = {"type": "x", "input_array": "attributes", "index": 0}
SORT_TABLE: list[tuple[int, Any, dict[str, str], str]] = [
    # Braze's answers (JSON objects)
    (200, {"message": "success"}, JSON, OK), (201, {"message": "success"}, JSON, OK),
    (202, {"message": "queued"}, JSON, OK),
    (201, {"message": "success", "attributes_processed": 3}, JSON, OK),
    (201, {"message": "success", "attributes_processed": 2, "errors": [ROW]}, JSON, OK),
    (400, {"message": VALID_DATA, "errors": [ROW]}, JSON, ROW_ERRORS),
    (400, {"message": "Max Input Length Exceeded"}, JSON, SPLIT),
    (400, {"message": "Invalid Request", "errors": [{"id": "ids-too-large", "message": "m"}]}, JSON, SPLIT),
    (401, {}, JSON, FATAL), (403, {}, JSON, FATAL), (404, {}, JSON, FATAL), (413, None, {}, SPLIT),
    (415, {}, JSON, FATAL), (422, {}, JSON, FATAL), (429, {}, {"x-ratelimit-reset": "1"}, RATE_LIMITED),
    (408, None, {}, RETRY), (500, None, {}, RETRY), (502, None, HTML, RETRY), (503, None, {}, RETRY),
    (504, None, {}, RETRY),
    # answers that are not Braze's
    (200, None, HTML, UNEXPECTED), (200, {"ok": True}, JSON, UNEXPECTED), (200, {"message": "success"}, HTML, UNEXPECTED),
    (201, {"message": "success", "attributes_processed": 1}, JSON, UNEXPECTED),
    (201, {"message": "success", "attributes_processed": 3, "events_processed": 1}, JSON, UNEXPECTED),
    (201, {"message": "success", "attributes_processed": "3"}, JSON, UNEXPECTED),
    (201, {"message": "success", "errors": "bad email"}, JSON, UNEXPECTED),
    (201, {"message": "success", "errors": [{"type": "x"}]}, JSON, UNEXPECTED),
    (201, {"message": "success", "errors": [{"type": "x", "index": 0}]}, JSON, UNEXPECTED),
    (201, {"message": "success", "errors": [{"type": "x", "input_array": "events", "index": 0}]}, JSON, UNEXPECTED),
    (201, {"message": "success", "errors": [{"type": "x", "input_array": "attributes", "index": 3}]}, JSON,
     UNEXPECTED),
    (201, {"message": "success", "errors": [{"type": "x", "input_array": "attributes", "index": True}]}, JSON,
     UNEXPECTED),
    (201, ["success"], JSON, UNEXPECTED), (204, None, {}, UNEXPECTED),
    (302, None, {"location": "https://portal.example/login"}, REFUSED), (400, None, HTML, REFUSED),
    (401, None, HTML, REFUSED), (403, None, HTML, REFUSED), (404, None, HTML, REFUSED), (407, None, HTML, REFUSED),
]


@pytest.mark.parametrize(("status", "body", "headers", "kind"), SORT_TABLE)
def test_sort_response_table(status: int, body: Any, headers: dict[str, str], kind: str) -> None:
    raw = json.dumps(body).encode() if body is not None else b"<html>oops</html>"
    verdict = sort_response(status, headers, raw, channel_info(ATTRS), sent=3, connection="braze",
                            base_url="https://rest.iad-01.braze.com", now=EPOCH)
    assert verdict.kind == kind
    if kind in (UNEXPECTED, REFUSED):
        assert verdict.message.startswith("unexpected answer from rest.iad-01.braze.com: ")
    assert (verdict.uncertain is not None) == (kind == UNEXPECTED or status >= 500)


@pytest.mark.parametrize(("channel", "body", "kind"), [
    ("POST /users/track events", {"message": "success", "events_processed": 3}, OK),
    ("POST /users/track events", {"message": "success", "events_processed": 2}, UNEXPECTED),
    ("POST /users/track purchases", {"message": "success", "purchases_processed": 3}, OK),
    ("POST /users/delete external_ids", {"deleted": 3, "message": "success"}, OK),
    ("POST /users/delete external_ids", {"deleted": 1}, OK),               # ids queued; unknown ones may not count
    ("POST /users/delete external_ids", {"message": "success"}, UNEXPECTED),
    ("POST /users/delete external_ids", {"deleted": 4, "message": "success"}, UNEXPECTED),
    ("PUT /catalogs/products/items", {"message": "success"}, OK),
    ("PATCH /catalogs/products/items", {"success": True}, UNEXPECTED),
])
def test_each_endpoint_has_its_success_body(channel: str, body: Any, kind: str) -> None:
    verdict = sort_response(202, JSON, json.dumps(body).encode(), channel_info(channel), sent=3, connection="braze",
                            base_url="https://rest.iad-01.braze.com", now=EPOCH)
    assert verdict.kind == kind


def test_a_lower_track_count_is_braze_s_when_objects_may_be_skipped() -> None:
    """Update-only objects for users that do not exist are skipped without an error (braze-api.md §0.1)."""
    body = json.dumps({"message": "success", "attributes_processed": 1}).encode()
    args = dict(sent=3, connection="braze", base_url="https://rest.iad-01.braze.com", now=EPOCH)
    assert sort_response(201, JSON, body, channel_info(ATTRS), update_only=True, **args).kind == OK  # type: ignore[arg-type]
    assert sort_response(201, JSON, body, channel_info(ATTRS), **args).kind == UNEXPECTED  # type: ignore[arg-type]


@pytest.mark.parametrize(("headers", "wait"), [
    ({"x-ratelimit-retry-after": "2"}, 2.0), ({"x-ratelimit-reset": "30"}, 30.0),
    ({"x-ratelimit-reset": str(EPOCH + 9)}, 9.0), ({"x-ratelimit-reset": str(EPOCH - 9)}, 0.0),
    ({"x-ratelimit-reset": "soon"}, None), ({}, None),
    # an epoch reset is read against Braze's clock (Date), not the local one
    ({"x-ratelimit-reset": str(EPOCH + 9), "date": "Tue, 14 Nov 2023 22:13:20 GMT"}, 9.0),      # = EPOCH
    ({"x-ratelimit-reset": str(EPOCH + 9), "date": "Tue, 14 Nov 2023 21:43:20 GMT"}, 1809.0),   # Braze 30 min "behind"
    ({"x-ratelimit-reset": str(EPOCH + 9), "date": "not a date"}, 9.0),
    ({"x-ratelimit-reset": "30", "date": "Tue, 14 Nov 2023 21:43:20 GMT"}, 30.0),        # relative: no clock
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


# -- only Braze's answer acknowledges ---------------------------------------------------------

def html(status: int, title: str) -> dict[str, Any]:
    """A page from something in front of Braze (captive portal, proxy, firewall)."""
    return {"status": status, "headers": {"Content-Type": "text/html; charset=utf-8"},
            "body": f"<!doctype html><html><head><title>{title}</title></head><body><form>…</form></body></html>"}


def host_of(server: ScriptedServer) -> str:
    return server.url.removeprefix("http://")


@pytest.mark.parametrize(("answer", "description"), [
    (html(200, "Hotel Wi-Fi: please log in"), "200 text/html, 'Hotel Wi-Fi: please log in'"),
    (reply(200, {"ok": True}), '200 without "message": "success": {"ok": true}'),
    (reply(201, {"message": "success", "errors": [{"type": BAD_EMAIL}]}),
     f'201 with an error Reflow cannot attribute to a row: {{"type": "{BAD_EMAIL}"}}'),
    (reply(201, {"message": "success", "errors": [{"type": BAD_EMAIL, "input_array": "events", "index": 0}]}),
     f'201 with an error Reflow cannot attribute to a row: {{"type": "{BAD_EMAIL}", "input_array": "events", '
     '"index": 0}'),
    (reply(201, {"message": "success", "errors": {"index": 0}}), '201 with "errors" that is not a list: {"index": 0}'),
    (reply(201, {"message": "success", "attributes_processed": 75}),
     "201 says attributes_processed 75, but 3 attributes object(s) were sent and 0 rejected"),
])
def test_an_answer_that_is_not_braze_s_acknowledges_nothing(clock: FakeClock, braze: ScriptedServer,
                                                            answer: dict[str, Any], description: str) -> None:
    braze.answer(answer)
    got = destination(clock, server=braze).send(batch(A, B, C))
    reason = f"unexpected answer from {host_of(braze)}: {description}"
    assert outcomes(got) == [(k, UNKNOWN, reason) for k in (A, B, C)]     # may have been applied: not re-trusted
    assert len(braze.calls) == 1 and clock.sleeps == []


@pytest.mark.parametrize("status", [400, 403, 407])
def test_a_proxy_s_4xx_page_stops_the_batch_without_bisecting(clock: FakeClock, braze: ScriptedServer,
                                                              status: int) -> None:
    braze.answer(html(status, "Blocked by corporate proxy"))
    keys = tuple(f"k{i}" for i in range(75))
    got = destination(clock, server=braze).send(batch(*keys))
    reason = f"unexpected answer from {host_of(braze)}: {status} text/html, 'Blocked by corporate proxy'"
    assert outcomes(got) == [(k, NOT_ATTEMPTED, reason) for k in keys]    # refused in front of Braze
    assert len(braze.calls) == 1                                          # was: ~150 requests, every row rejected


def test_a_redirect_is_not_an_answer(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer({"status": 302, "body": "", "headers": {"Location": "https://portal.example/login?x=1"}})
    got = destination(clock, server=braze).send(batch(A))
    assert outcomes(got) == [
        (A, NOT_ATTEMPTED, f"unexpected answer from {host_of(braze)}: 302 redirect to https://portal.example/login?x=1")]


def test_a_5xx_page_is_retried_and_leaves_rows_unknown(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer(html(502, "Bad Gateway"))
    got = destination(clock, server=braze).send(batch(A))
    assert outcomes(got) == [(A, UNKNOWN, f"gave up after 3 retries: {host_of(braze)} answered 502")]
    assert len(braze.calls) == 4


def test_braze_s_own_partial_success_still_rejects_listed_rows(clock: FakeClock, braze: ScriptedServer) -> None:
    braze.answer(reply(201, {"message": "success", "attributes_processed": 2,
                             "errors": [{"type": BAD_EMAIL, "input_array": "attributes", "index": 2}]}))
    assert outcomes(destination(clock, server=braze).send(batch(A, B, C))) == [
        (A, ACKNOWLEDGED, None), (B, ACKNOWLEDGED, None), (C, REJECTED, BAD_EMAIL)]


# -- network failures are explained -----------------------------------------------------------

def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def endpoint_destination(clock: FakeClock, endpoint: str, **options: Any) -> BrazeDestination:
    conn = ConnectionConfig("braze", endpoint=endpoint, max_retries=1, timeout=TIMEOUT_S)
    dest = BrazeDestination(conn, KEY, SyncSpec("s", "m", ("id",), DestinationSpec(
        "braze", "users", identifier=Identifier("external_id", "id"))), client_options={
        "sleep": clock.sleep, "monotonic": clock.monotonic, "clock": clock.time, "rng": lambda: 1.0, **options})
    OPENED.append(dest)
    return dest


def test_a_refused_connection_names_the_host_and_leaves_rows_not_attempted(clock: FakeClock) -> None:
    port = closed_port()
    got = endpoint_destination(clock, f"http://127.0.0.1:{port}").send(batch(A, B))
    reason = f"gave up after 1 retry: cannot connect to 127.0.0.1:{port}: connection refused"
    assert outcomes(got) == [(A, NOT_ATTEMPTED, reason), (B, NOT_ATTEMPTED, reason)]   # was: no reason at all


def test_a_dns_failure_names_the_host() -> None:
    got = endpoint_destination(FakeClock(), "https://rest.iad-01.braze.invalid").send(batch(A))
    assert got[0].outcome == NOT_ATTEMPTED
    assert (got[0].reason or "").startswith(
        "gave up after 1 retry: cannot connect to rest.iad-01.braze.invalid:443: DNS lookup failed (")


def test_a_tls_handshake_failure_is_fatal_and_names_the_host(braze: ScriptedServer) -> None:
    port = braze.url.rsplit(":", 1)[1]
    with pytest.raises(DestinationError) as err:           # https to a server that speaks plain http
        endpoint_destination(FakeClock(), f"https://127.0.0.1:{port}").send(batch(A))
    assert str(err.value).startswith(f"TLS handshake with 127.0.0.1:{port} failed: wrong version number "
                                     "(connection 'braze')")
    assert braze.calls == []


def test_an_untrusted_certificate_is_fatal_and_says_so(tmp_path: Any) -> None:
    import shutil
    import ssl
    import subprocess
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with pytest.raises(DestinationError) as err:
            endpoint_destination(FakeClock(), f"https://127.0.0.1:{port}").send(batch(A))
        assert str(err.value).startswith(f"the TLS certificate of 127.0.0.1:{port} is not trusted: self")
    finally:
        server.shutdown()
        server.server_close()


# -- waits follow Braze's clock and stop on Ctrl-C --------------------------------------------

@pytest.mark.parametrize("skew", [-1800.0, 1800.0])
def test_an_epoch_reset_is_read_against_braze_s_date(braze: ScriptedServer, skew: float) -> None:
    """A client clock 30 minutes behind used to wait the whole window; one ahead did not wait at all."""
    clock = FakeClock(epoch=time.time() + skew)
    braze.answer(lambda call: reply(429, headers={"X-RateLimit-Reset": str(int(time.time()) + 12)}), SUCCESS)
    got = destination(clock, server=braze).send(batch(A, B, C))
    assert [r.outcome for r in got] == [ACKNOWLEDGED] * 3
    assert clock.sleeps == [pytest.approx(12.0, abs=1.0)]       # reset - Date (whole seconds)


def stoppable(server: ScriptedServer, stop: threading.Event, **options: Any) -> BrazeDestination:
    conn = ConnectionConfig("braze", endpoint=server.url, max_retries=3, timeout=TIMEOUT_S)
    dest = BrazeDestination(conn, KEY, SyncSpec("s", "m", ("id",), DestinationSpec(
        "braze", "users", identifier=Identifier("external_id", "id"))), client_options={"stop": stop, **options})
    OPENED.append(dest)
    return dest


def test_stop_interrupts_a_rate_limit_wait(braze: ScriptedServer) -> None:
    braze.answer(reply(429, {"message": "Rate Limited"}, headers={"X-RateLimit-Reset": "60"}))
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    got = stoppable(braze, stop).send(batch(A, B))
    assert time.monotonic() - started < 1.0
    reason = f"stopped before sending: rate limited by {host_of(braze)} (429)"
    assert outcomes(got) == [(A, NOT_ATTEMPTED, reason), (B, NOT_ATTEMPTED, reason)]
    assert len(braze.calls) == 1


def test_stop_during_a_backoff_after_a_5xx_leaves_rows_unknown(braze: ScriptedServer) -> None:
    braze.answer(reply(503, {"message": "Service Unavailable"}))
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    got = stoppable(braze, stop, backoff_base=60.0).send(batch(A))
    assert time.monotonic() - started < 1.0
    assert outcomes(got) == [
        (A, UNKNOWN, f"stopped before sending: {host_of(braze)} answered 503: Service Unavailable")]


def test_a_batch_handed_over_after_stop_is_not_sent(braze: ScriptedServer) -> None:
    stop = threading.Event()
    stop.set()
    assert outcomes(stoppable(braze, stop).send(batch(A))) == [(A, NOT_ATTEMPTED, "stopped before sending")]
    assert braze.calls == []
