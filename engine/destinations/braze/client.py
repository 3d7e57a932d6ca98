"""HTTP to Braze: per-thread keep-alive connections (`transport`), a token bucket per rate-limit
group, retries, and the one place where responses are sorted (`sort_response`).

    2xx (+ errors[])             OK          listed rows rejected with Braze's text, the rest acknowledged
    400 with errors[input_array] ROW_ERRORS  listed rows rejected; unlisted rows re-sent once
    400 otherwise, 413           SPLIT       halves, recursively; a single row is rejected with the message
    429                          RATE_LIMITED wait for x-ratelimit-retry-after / x-ratelimit-reset, retry
    5xx, timeout, reset          RETRY       exponential backoff with jitter; after max_retries the batch
                                             is not attempted (stays pending)
    401 / 403 / 404 / 415 / 4xx  FATAL       DestinationError naming the key, permission or URL problem
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.destinations.base import ACKNOWLEDGED, NOT_ATTEMPTED, REJECTED, AllAcknowledged, RowResult
from engine.destinations.braze.endpoints import ChannelInfo
from engine.destinations.braze.transport import Transport, TransportBroken, TransportTimeout, TransportTLS
from engine.errors import DestinationError, register_secret
from engine.project import Secret

OK = "ok"
ROW_ERRORS = "row_errors"
SPLIT = "split"
RATE_LIMITED = "rate_limited"
RETRY = "retry"
FATAL = "fatal"
GAVE_UP = "gave_up"

MAX_RATE_LIMIT_WAIT = 3600.0      # never sleep longer than this on one 429


@dataclass(frozen=True)
class RowError:
    input_array: str | None
    index: int | None
    message: str


@dataclass(frozen=True)
class Verdict:
    kind: str
    errors: tuple[RowError, ...] = ()
    message: str = ""
    wait: float | None = None


def sort_response(status: int, headers: Mapping[str, str], body: bytes, info: ChannelInfo, *,
                  connection: str, base_url: str, now: float) -> Verdict:
    """Sort one HTTP answer into what to do next. The only place that interprets Braze statuses."""
    if 200 <= status < 300:
        if b'"errors"' not in body:
            return Verdict(OK)
        return Verdict(OK, _row_errors(_parse(body)))
    if status == 429:
        return Verdict(RATE_LIMITED, message="rate limited (429)", wait=rate_limit_wait(headers, now))
    if status >= 500 or status == 408:
        return Verdict(RETRY, message=f"Braze answered {status}: {_message(_parse(body), body)}")
    parsed = _parse(body)
    message = _message(parsed, body)
    request = f"{info.method} {info.path}"
    if status == 400:
        errors = _row_errors(parsed)
        if errors and all(e.index is not None and e.input_array is not None for e in errors):
            return Verdict(ROW_ERRORS, errors, message=message)
        return Verdict(SPLIT, message=_catalog_detail(parsed) or message)
    if status == 413:
        return Verdict(SPLIT, message="request body too large for Braze (413)")
    if status == 401:
        return Verdict(FATAL, message=f"Braze rejected the API key (401) for connection '{connection}' at "
                                      f"{base_url}: check the key and the instance")
    if status == 403:
        return Verdict(FATAL, message=f"Braze refused {request} (403) for connection '{connection}': "
                                      f"the API key lacks {info.permission} (or the account does not allow it); "
                                      f"create a key with the {info.permission} permission ({message})")
    if status == 404:
        return Verdict(FATAL, message=f"Braze answered 404 for {request} at {base_url} (connection "
                                      f"'{connection}'): check the endpoint URL or instance"
                                      f"{'' if not message else ' — Braze says: ' + message}")
    if status == 415:
        return Verdict(FATAL, message=f"Braze refused the request's Content-Type (415) for {request} at {base_url}; "
                                      "this is a Reflow bug, please report it")
    return Verdict(FATAL, message=f"Braze answered {status} for {request} at {base_url} (connection "
                                  f"'{connection}'): {message}")


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from Braze's headers: X-Ratelimit-Retry-After, else X-RateLimit-Reset
    (epoch seconds when > 1e9, else seconds remaining). None when neither is usable."""
    for name in ("x-ratelimit-retry-after", "retry-after"):
        value = _number(headers.get(name))
        if value is not None:
            return min(max(value, 0.0), MAX_RATE_LIMIT_WAIT)
    reset = _number(headers.get("x-ratelimit-reset"))
    if reset is None:
        return None
    wait = reset - now if reset > 1e9 else reset
    return min(max(wait, 0.0), MAX_RATE_LIMIT_WAIT)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _message(parsed: Any, body: bytes) -> str:
    if isinstance(parsed, dict):
        for key in ("message", "error", "errors"):
            if parsed.get(key):
                return str(parsed[key])[:500]
    return body[:200].decode("utf-8", "replace").strip()


def _row_errors(parsed: Any) -> tuple[RowError, ...]:
    if not isinstance(parsed, dict) or not isinstance(parsed.get("errors"), list):
        return ()
    found = []
    for err in parsed["errors"]:
        if not isinstance(err, dict):
            continue
        index = err.get("index")
        found.append(RowError(
            err.get("input_array") if isinstance(err.get("input_array"), str) else None,
            index if isinstance(index, int) and not isinstance(index, bool) else None,
            str(err.get("type") or err.get("message") or err.get("id") or "rejected by Braze")))
    return tuple(found)


def _catalog_detail(parsed: Any) -> str | None:
    """Catalog 400s: "Invalid Request" plus errors [{id, message, ...}] → "invalid-fields: Some of ..."."""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("errors"), list):
        return None
    parts = [f"{e.get('id')}: {e.get('message')}" if e.get("id") else str(e.get("message") or e.get("type"))
             for e in parsed["errors"] if isinstance(e, dict)]
    return "; ".join(parts) or None


class TokenBucket:
    """Requests per second with a one-second burst, shared by threads; `pause_until` stops everyone."""

    def __init__(self, rate: float, *, monotonic: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._updated = monotonic()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
            self._updated = now
            self.tokens -= 1.0
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
            wait = max(wait, self._paused_until - now)
        if wait > 0:
            self._sleep(wait)

    def pause_until(self, when: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, when)


class BrazeClient:
    """Sends one channel batch and returns one RowResult per key. Thread-safe."""

    def __init__(self, *, connection: str, base_url: str, api_key: Secret, user_agent: str, timeout: float,
                 max_retries: int, rates: Mapping[str, float],
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, max_rate_limit_waits: int | None = None) -> None:
        self.connection = connection
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.max_rate_limit_waits = max_rate_limit_waits if max_rate_limit_waits is not None else max(
            20, 4 * self.max_retries)
        register_secret(api_key.reveal())
        self._headers = {"Content-Type": "application/json", "User-Agent": user_agent, "Accept": "application/json"}
        self._authorization = Secret(f"Bearer {api_key.reveal()}")       # repr never shows it
        self._transport = Transport(base_url, timeout=timeout)
        self._sleep, self._monotonic, self._clock, self._rng = sleep, monotonic, clock, rng
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._buckets = {name: TokenBucket(rate, monotonic=monotonic, sleep=sleep) for name, rate in rates.items()}

    def __repr__(self) -> str:
        return f"BrazeClient(connection={self.connection!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._transport.close()

    # -- sending --------------------------------------------------------------------------------
    def send(self, info: ChannelInfo, keys: Sequence[str], items: Sequence[str]) -> Sequence[RowResult]:
        return self._send(info, list(keys), list(items), resend=True)

    def _send(self, info: ChannelInfo, keys: list[str], items: list[str], *, resend: bool) -> Sequence[RowResult]:
        body = (info.prefix + ",".join(items) + info.suffix).encode("utf-8")
        verdict = self._exchange(info, body)
        if verdict.kind == OK:
            if not verdict.errors:
                return AllAcknowledged(keys)
            reasons = self._reasons(info, verdict.errors, len(keys))
            return [RowResult(key, REJECTED, reasons[i]) if i in reasons else RowResult(key, ACKNOWLEDGED)
                    for i, key in enumerate(keys)]
        if verdict.kind == GAVE_UP:
            return [RowResult(key, NOT_ATTEMPTED, verdict.message) for key in keys]
        if verdict.kind == ROW_ERRORS:
            reasons = self._reasons(info, verdict.errors, len(keys))
            rest = [i for i in range(len(keys)) if i not in reasons]
            results: dict[int, RowResult] = {i: RowResult(keys[i], REJECTED, r) for i, r in reasons.items()}
            if rest and resend:
                again = self._send(info, [keys[i] for i in rest], [items[i] for i in rest], resend=False)
                results.update(zip(rest, again, strict=True))
            else:
                for i in rest:
                    results[i] = RowResult(keys[i], NOT_ATTEMPTED, f"Braze refused the request: {verdict.message}")
            return [results[i] for i in range(len(keys))]
        if verdict.kind == SPLIT:
            if len(keys) == 1:
                return [RowResult(keys[0], REJECTED, verdict.message)]
            half = len(keys) // 2
            return [*self._send(info, keys[:half], items[:half], resend=resend),
                    *self._send(info, keys[half:], items[half:], resend=resend)]
        raise DestinationError(verdict.message)

    @staticmethod
    def _reasons(info: ChannelInfo, errors: Sequence[RowError], count: int) -> dict[int, str]:
        reasons: dict[int, str] = {}
        for err in errors:
            if err.index is None or not 0 <= err.index < count:
                continue
            if err.input_array is not None and err.input_array != info.array:
                continue
            reasons[err.index] = err.message if err.index not in reasons else reasons[err.index] + "; " + err.message
        return reasons

    def _exchange(self, info: ChannelInfo, body: bytes) -> Verdict:
        """Send one body until Braze gives an answer other than 429/5xx, or retries run out."""
        bucket = self._buckets[info.group]
        headers = {**self._headers, "Authorization": self._authorization.reveal(), "Content-Length": str(len(body))}
        failures = 0
        waits = 0
        while True:
            bucket.acquire()
            try:
                answer = self._transport.request(info.method, info.path, body, headers)
            except TransportTLS as exc:
                raise DestinationError(f"TLS error talking to {self.base_url} (connection '{self.connection}'): "
                                       f"{exc}") from exc
            except TransportTimeout as exc:
                verdict = Verdict(RETRY, message=f"no answer from Braze within {self.timeout:g} s ({exc})")
            except TransportBroken as exc:
                verdict = Verdict(RETRY, message=f"connection to Braze failed ({exc})")
            else:
                verdict = sort_response(answer.status, answer.headers, answer.body, info,
                                        connection=self.connection, base_url=self.base_url, now=self._clock())
                if verdict.kind != RATE_LIMITED and answer.headers.get("x-ratelimit-remaining") == "0":
                    wait = rate_limit_wait(answer.headers, self._clock())
                    if wait:
                        bucket.pause_until(self._monotonic() + wait)
            if verdict.kind == RATE_LIMITED:
                waits += 1
                if waits > self.max_rate_limit_waits:
                    return Verdict(GAVE_UP, message=f"still rate limited (429) after {waits - 1} waits")
                wait = verdict.wait if verdict.wait is not None else self._backoff(waits)
                bucket.pause_until(self._monotonic() + wait)
                continue
            if verdict.kind == RETRY:
                failures += 1
                if failures > self.max_retries:
                    return Verdict(GAVE_UP, message=f"gave up after {self.max_retries} retries: {verdict.message}")
                self._sleep(self._backoff(failures))
                continue
            return verdict

    def _backoff(self, attempt: int) -> float:
        delay = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * self._rng())
