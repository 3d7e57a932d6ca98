"""HTTP to Braze: per-thread keep-alive connections (`transport`), a token bucket per rate-limit
group, retries, and the one place where answers are sorted (`sort_response`).

Only Braze's answer acknowledges a row: a JSON body of the endpoint's documented shape (braze-api.md
§0.1). What each answer does:

    answer                                    verdict       rows
    2xx, Braze's success body (+ errors[])    OK            listed rows REJECTED with Braze's text, the rest ACKNOWLEDGED
    2xx, any other body                       UNEXPECTED    UNKNOWN "unexpected answer from <host>: …" (not retried)
    400 JSON, errors[] with input_array/index ROW_ERRORS    listed rows REJECTED; unlisted rows re-sent once
    400 JSON otherwise, 413                   SPLIT         halves, recursively; a single row is REJECTED
    429                                       RATE_LIMITED  wait for x-ratelimit-retry-after / x-ratelimit-reset
                                                            (an epoch reset is read against Braze's Date header)
    5xx                                       RETRY         backoff with jitter; UNKNOWN after max_retries
    408, no connection, failed while sending  RETRY         backoff with jitter; NOT_ATTEMPTED after max_retries
    no answer after sending (timeout, reset)  RETRY         backoff with jitter; UNKNOWN after max_retries
    401 / 403 / 404 / 415 / other 4xx, JSON   FATAL         DestinationError naming the key, permission or URL
    partner cohort import (braze-api.md §7):
      400 "Only 1,000 ... per request"        SPLIT         halves
      400 otherwise (cohort_id, name, ...)    ROW_ERRORS    every row of the request REJECTED with Braze's text
      401 (partner key, client secret, …)     FATAL         DestinationError naming cohort_import's settings
      423 Resource locked                     RETRY         backoff; NOT_ATTEMPTED after max_retries (never applied)
    3xx, 4xx not JSON (a proxy's page)      REFUSED       NOT_ATTEMPTED "unexpected answer from <host>: …"
                                                            (never bisected, not retried)
    TLS certificate or handshake failure      FATAL         DestinationError naming the host and the cause

Outcome of rows no answer settled: UNKNOWN when any attempt of their request may have reached Braze
without a usable answer (a 5xx, no answer after the request was sent, an answer that is not Braze's),
NOT_ATTEMPTED when none can have been processed (429s, no connection, stopped before sending). The
reason is the last failure, naming the host.

A set `stop` event (the runner's first Ctrl-C) ends every wait at once: the batch's remaining rows
come back NOT_ATTEMPTED, or UNKNOWN when an earlier attempt may have been applied.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from engine.destinations.base import (
    ACKNOWLEDGED,
    NOT_ATTEMPTED,
    REJECTED,
    UNKNOWN,
    AllAcknowledged,
    RowResult,
)
from engine.destinations.braze.endpoints import ChannelInfo
from engine.destinations.braze.transport import Answer, Transport, TransportError, TransportTLS
from engine.errors import DestinationError, register_secret, scrub
from engine.project import Secret


class Kind(StrEnum):
    """What to do with an answer (`Verdict.kind`); the table in the module docstring."""

    OK = "ok"
    ROW_ERRORS = "row_errors"
    ITEM_ERRORS = "item_errors"        # a catalog 400 naming the offending item ids in parameter_values
    SPLIT = "split"
    RATE_LIMITED = "rate_limited"
    RETRY = "retry"
    FATAL = "fatal"
    UNEXPECTED = "unexpected"          # a 2xx (or other answer) that is not Braze's: may have been applied
    REFUSED = "refused"                # a 3xx/4xx that is not Braze's: an intermediary refused the request
    GAVE_UP = "gave_up"
    STOPPED = "stopped"


OK, ROW_ERRORS, ITEM_ERRORS, SPLIT = Kind.OK, Kind.ROW_ERRORS, Kind.ITEM_ERRORS, Kind.SPLIT
RATE_LIMITED, RETRY, FATAL, UNEXPECTED = Kind.RATE_LIMITED, Kind.RETRY, Kind.FATAL, Kind.UNEXPECTED
REFUSED, GAVE_UP, STOPPED = Kind.REFUSED, Kind.GAVE_UP, Kind.STOPPED

MAX_RATE_LIMIT_WAIT = 3600.0      # never sleep longer than this on one 429
DELETE_RECHECK_SECONDS = 3.0      # /users/delete short of profiles: ask again after this long, once
TRACK_ARRAYS = ("attributes", "events", "purchases")
_UPDATE_ONLY = re.compile(rb'"_update_existing_only"\s*:\s*true|"braze_id"\s*:')


@dataclass(frozen=True)
class RowError:
    input_array: str | None
    index: int | None
    message: str


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    errors: tuple[RowError, ...] = ()
    message: str = ""
    wait: float | None = None
    uncertain: str | None = None    # why this request may have been applied without a usable answer
    deleted: int | None = None      # /users/delete: how many of the identifiers Braze deleted
    items: frozenset[str] = frozenset()     # catalog item ids a 400 names (ITEM_ERRORS)
    users: tuple[Mapping[str, Any], ...] = ()   # /users/export/ids: the users Braze found


def sort_response(status: int, headers: Mapping[str, str], body: bytes, info: ChannelInfo, *, sent: int,
                  connection: str, base_url: str, now: float, update_only: bool = False) -> Verdict:
    """Sort one HTTP answer to a request of `sent` objects into what to do next. The only place
    that interprets Braze's answers. `update_only`: the request holds objects Braze may skip without
    an error (update-only, braze_id), so a /users/track count may be lower than the objects sent."""
    host = _host(base_url)
    parsed = _parse(body) if _is_json(headers) else None
    braze = isinstance(parsed, dict)                # a JSON object: Braze's kind of answer
    if 200 <= status < 300:
        if isinstance(parsed, dict):
            problem = _success_problem(status, parsed, info, sent, update_only)
        else:
            problem = _describe(status, headers, body)
        if problem:
            message = f"unexpected answer from {host}: {problem}"
            return Verdict(UNEXPECTED, message=message, uncertain=message)
        assert isinstance(parsed, dict)
        if info.path == "/users/export/ids":
            return Verdict(OK, users=tuple(parsed["users"]))
        deleted = parsed.get("deleted") if info.path == "/users/delete" else None
        return Verdict(OK, _row_errors(parsed), deleted=deleted if _is_int(deleted) else None)
    if status == 429:
        return Verdict(RATE_LIMITED, message=f"rate limited by {host} (429)", wait=rate_limit_wait(headers, now))
    if status >= 500:
        message = f"{host} answered {status}" + (f": {_message(parsed, body)}" if braze else "")
        return Verdict(RETRY, message=message, uncertain=message)
    if status == 408:
        return Verdict(RETRY, message=f"{host} answered 408 (request timeout)")
    if status == 413:
        return Verdict(SPLIT, message="request body too large for Braze (413)")
    if not (braze and 400 <= status < 500):         # a redirect, a proxy's page, a status Braze never sends
        message = f"unexpected answer from {host}: {_describe(status, headers, body)}"
        if 300 <= status < 500:                     # refused in front of Braze: never processed
            return Verdict(REFUSED, message=message)
        return Verdict(UNEXPECTED, message=message, uncertain=message)
    message = _message(parsed, body)
    request = f"{info.method} {info.path}"
    if info.body_auth:
        partner = _partner_verdict(status, message, info, sent, connection)
        if partner is not None:
            return partner
    if status == 400:
        errors = _row_errors(parsed)
        if errors and all(e.index is not None and e.input_array is not None for e in errors):
            return Verdict(ROW_ERRORS, errors, message=message)
        named = _catalog_items(parsed) if info.path.startswith("/catalogs/") else frozenset()
        if named:
            return Verdict(ITEM_ERRORS, message=_catalog_detail(parsed) or message, items=named)
        return Verdict(SPLIT, message=_catalog_detail(parsed) or message)
    if status == 401:
        return Verdict(FATAL, message=f"Braze rejected the API key (401) for connection '{connection}' at "
                                      f"{base_url}: check the key and the instance")
    if status == 403:
        return Verdict(FATAL, message=f"Braze refused {request} (403) for connection '{connection}': "
                                      f"the API key lacks {info.permission} (or the account does not allow it); "
                                      f"create a key with the {info.permission} permission ({message})")
    if status == 404 and _catalog_not_found(parsed):
        catalog = info.path.split("/")[2] if info.path.startswith("/catalogs/") else "?"
        return Verdict(FATAL, message=f"Braze has no catalog '{catalog}' (catalog-not-found) at {base_url}: create it "
                                      "in the Braze dashboard, or fix destination.catalog in the sync")
    if status == 404:
        return Verdict(FATAL, message=f"Braze answered 404 for {request} at {base_url} (connection "
                                      f"'{connection}'): check the endpoint URL or instance"
                                      f"{'' if not message else ' — Braze says: ' + message}")
    if status == 415:
        return Verdict(FATAL, message=f"Braze refused the request's Content-Type (415) for {request} at {base_url}; "
                                      "this is a Reflow bug, please report it")
    return Verdict(FATAL, message=f"Braze answered {status} for {request} at {base_url} (connection "
                                  f"'{connection}'): {message}")


def _partner_verdict(status: int, message: str, info: ChannelInfo, sent: int, connection: str) -> Verdict | None:
    """The partner cohort import's documented errors (braze-api.md §7); None: sorted as elsewhere."""
    if status == 423:
        return Verdict(RETRY, message=f"Braze answered 423 ({message or 'Resource locked'}) for {info.method} "
                                      f"{info.path}: the cohort is locked; tried again later")
    if status == 400 and "1,000" in message:
        return Verdict(SPLIT, message=message)
    if status == 400:
        # about the request (cohort_id, cohort_changes, name, created_at), not one identifier in it
        return Verdict(ROW_ERRORS, tuple(RowError(info.array, i, message) for i in range(sent)), message=message)
    if status == 401:
        partner = info.path.split("/")[2]
        return Verdict(FATAL, message=(
            f"Braze refused the partner cohort import credentials (401: {scrub(message)}) for connection "
            f"'{connection}', partner '{partner}': check cohort_import.partner_api_key (issued by Braze to the "
            "partner), cohort_import.data_import_key (the workspace's data import key for that partner) and that "
            "the partner is enabled in the workspace"))
    return None


def _success_problem(status: int, parsed: dict[str, Any], info: ChannelInfo, sent: int,
                     update_only: bool) -> str | None:
    """None when a 2xx JSON object is the success answer Braze documents for this endpoint
    (braze-api.md §2.8, §4.2, §5.2, §6.1), else what is off, in a few words."""
    message = parsed.get("message")
    if info.path == "/users/delete":
        deleted = parsed.get("deleted")
        if not _is_int(deleted) or not 0 <= deleted <= sent or message not in (None, "success"):
            return f"{status} {_snippet(json.dumps(parsed))} is not /users/delete's {{\"deleted\": N, \"message\": \"success\"}}"
    elif info.path == "/users/export/ids":
        users = parsed.get("users")
        if message != "success" or not isinstance(users, list) or not all(isinstance(u, dict) for u in users):
            return f"{status} {_snippet(json.dumps(parsed))} is not /users/export/ids's {{\"users\": [...], \"message\": \"success\"}}"
        return None
    elif message != "success" and not (status == 202 and message == "queued"):   # "queued": maintenance
        return f"{status} without \"message\": \"success\": {_snippet(json.dumps(parsed))}"
    errors = parsed.get("errors")
    track = info.path == "/users/track"
    rejected: set[int] = set()
    if errors is not None:
        if not isinstance(errors, list):
            return f"{status} with \"errors\" that is not a list: {_snippet(json.dumps(errors))}"
        for err in errors:
            index = err.get("index") if isinstance(err, dict) else None
            array = err.get("input_array") if isinstance(err, dict) else None
            attributable = array == info.array if track else array in (None, info.array)
            if not _is_int(index) or not 0 <= index < sent or not attributable:
                return f"{status} with an error Reflow cannot attribute to a row: {_snippet(json.dumps(err))}"
            rejected.add(index)
    if track:
        for array in TRACK_ARRAYS:
            count = parsed.get(f"{array}_processed")
            if count is None:
                continue
            expected = sent - len(rejected) if array == info.array else 0
            if not _is_int(count) or count > expected or (count < expected and not update_only):
                return (f"{status} says {array}_processed {json.dumps(count)}, but {sent} "
                        f"{info.array if array == info.array else array} object(s) were sent"
                        f"{'' if array != info.array else f' and {len(rejected)} rejected'}")
    return None


def _item_id(item: str) -> str | None:
    try:
        value = json.loads(item)
    except ValueError:
        return None
    return str(value.get("id")) if isinstance(value, dict) and "id" in value else None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from Braze's headers: X-Ratelimit-Retry-After, else X-RateLimit-Reset (epoch
    seconds when > 1e9, else seconds remaining). An epoch is read against Braze's `Date` header when
    there is one, so a client clock that is off does not stretch or skip the wait; `now` (the local
    clock) is the fallback. None when no header is usable."""
    for name in ("x-ratelimit-retry-after", "retry-after"):
        value = _number(headers.get(name))
        if value is not None:
            return min(max(value, 0.0), MAX_RATE_LIMIT_WAIT)
    reset = _number(headers.get("x-ratelimit-reset"))
    if reset is None:
        return None
    if reset > 1e9:
        server_now = _http_date(headers.get("date"))
        wait = reset - (server_now if server_now is not None else now)
    else:
        wait = reset
    return min(max(wait, 0.0), MAX_RATE_LIMIT_WAIT)


def _http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _host(base_url: str) -> str:
    return urlsplit(base_url).netloc or base_url


def _is_json(headers: Mapping[str, str]) -> bool:
    media = (headers.get("content-type") or "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _snippet(text: str, width: int = 120) -> str:
    text = " ".join(text.split())
    return scrub(text if len(text) <= width else text[: width - 1] + "…")


def _describe(status: int, headers: Mapping[str, str], body: bytes) -> str:
    """An answer that is not Braze's, in one line: status, content type, and its title or first words."""
    kind = (headers.get("content-type") or "no content type").split(";")[0].strip()
    location = headers.get("location")
    if 300 <= status < 400 and location:
        return f"{status} redirect to {_snippet(location, 80)}"
    text = body.decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    shown = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
    shown = _snippet(shown, 80)
    return f"{status} {kind}" + (f", {shown!r}" if shown else ", empty body")


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
            index if _is_int(index) else None,
            str(err.get("type") or err.get("message") or err.get("id") or "rejected by Braze")))
    return tuple(found)


def _catalog_items(parsed: Any) -> frozenset[str]:
    """Item ids a catalog 400 names: errors whose `parameters` are ["id"] list them in `parameter_values`."""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("errors"), list):
        return frozenset()
    found: set[str] = set()
    for err in parsed["errors"]:
        if isinstance(err, dict) and err.get("parameters") == ["id"] and isinstance(err.get("parameter_values"), list):
            found.update(str(v) for v in err["parameter_values"])
    return frozenset(found)


def _catalog_not_found(parsed: Any) -> bool:
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    return isinstance(errors, list) and any(isinstance(e, dict) and e.get("id") == "catalog-not-found"
                                            for e in errors)


def _catalog_detail(parsed: Any) -> str | None:
    """Catalog 400s: "Invalid Request" plus errors [{id, message, ...}] → "invalid-fields: Some of ..."."""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("errors"), list):
        return None
    parts = [f"{e.get('id')}: {e.get('message')}" if e.get("id") else str(e.get("message") or e.get("type"))
             for e in parsed["errors"] if isinstance(e, dict)]
    return "; ".join(parts) or None


class TokenBucket:
    """Requests per second with a one-second burst, shared by threads; `pause_until` stops everyone."""

    def __init__(self, rate: float, *, monotonic: Callable[[], float], sleep: Callable[[float], object]) -> None:
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
    """Sends one channel batch and returns one RowResult per key. Thread-safe.

    `stop`: when set, waits (rate limits, backoff) end at once and no further request is sent.
    `sleep` replaces the waits (tests); by default they are `stop.wait` (or time.sleep without `stop`)."""

    def __init__(self, *, connection: str, base_url: str, api_key: Secret, user_agent: str, timeout: float,
                 max_retries: int, rates: Mapping[str, float], stop: threading.Event | None = None,
                 sleep: Callable[[float], object] | None = None, monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time, rng: Callable[[], float] = random.random,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, max_rate_limit_waits: int | None = None,
                 delete_recheck: float = DELETE_RECHECK_SECONDS, body_auth: Secret | None = None) -> None:
        self.connection = connection
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.max_rate_limit_waits = max_rate_limit_waits if max_rate_limit_waits is not None else max(
            20, 4 * self.max_retries)
        register_secret(api_key.reveal())
        self._headers = {"Content-Type": "application/json", "User-Agent": user_agent, "Accept": "application/json"}
        self._authorization = Secret(f"Bearer {api_key.reveal()}")       # repr never shows it
        # partner endpoints: the JSON members carrying the credentials, spliced into each body
        self._body_auth = body_auth
        self._transport = Transport(base_url, timeout=timeout)
        self._stop = stop
        if sleep is None:
            sleep = stop.wait if stop is not None else time.sleep
        self._sleep, self._monotonic, self._clock, self._rng = sleep, monotonic, clock, rng
        self.delete_recheck = delete_recheck
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._buckets = {name: TokenBucket(rate, monotonic=monotonic, sleep=sleep) for name, rate in rates.items()}

    def __repr__(self) -> str:
        return f"BrazeClient(connection={self.connection!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        self._transport.close()

    # -- sending --------------------------------------------------------------------------------
    def send(self, info: ChannelInfo, keys: Sequence[str], items: Sequence[str]) -> Sequence[RowResult]:
        return self._send(info, list(keys), list(items), resend=True, uncertain=None)

    def _send(self, info: ChannelInfo, keys: list[str], items: list[str], *, resend: bool,
              uncertain: str | None) -> Sequence[RowResult]:
        """`uncertain`: why an earlier request holding these rows may have been applied (None: none was)."""
        body = (info.prefix + ",".join(items) + info.suffix).encode("utf-8")
        verdict = self._exchange(info, body, len(keys))
        uncertain = verdict.uncertain or uncertain
        if verdict.kind == OK:
            if verdict.deleted is not None and verdict.deleted < len(keys):
                return self._recheck_deletes(info, body, keys, verdict.deleted)
            if not verdict.errors:
                return AllAcknowledged(keys)
            reasons = self._reasons(info, verdict.errors, len(keys))
            return [RowResult(key, REJECTED, reasons[i]) if i in reasons else RowResult(key, ACKNOWLEDGED)
                    for i, key in enumerate(keys)]
        if verdict.kind in (GAVE_UP, STOPPED):
            return [self._unsettled(key, verdict.message, uncertain) for key in keys]
        if verdict.kind == ROW_ERRORS:
            reasons = self._reasons(info, verdict.errors, len(keys))
            return self._refused(info, keys, items, reasons, verdict.message, resend=resend, uncertain=uncertain)
        if verdict.kind == ITEM_ERRORS:
            named = {i: verdict.message for i, item in enumerate(items) if _item_id(item) in verdict.items}
            if named:       # exactly those items are refused
                return self._refused(info, keys, items, named, verdict.message, resend=resend, uncertain=uncertain)
            verdict = Verdict(SPLIT, message=verdict.message)
        if verdict.kind == SPLIT:
            if len(keys) == 1:
                return [RowResult(keys[0], REJECTED, verdict.message)]
            half = len(keys) // 2
            return [*self._send(info, keys[:half], items[:half], resend=resend, uncertain=uncertain),
                    *self._send(info, keys[half:], items[half:], resend=resend, uncertain=uncertain)]
        raise DestinationError(verdict.message)

    @staticmethod
    def _unsettled(key: str, reason: str, uncertain: str | None) -> RowResult:
        """A row no answer settled: UNKNOWN when a request holding it may have been applied."""
        if uncertain is None:
            return RowResult(key, NOT_ATTEMPTED, reason)
        if uncertain not in reason:
            reason = f"{reason}; an earlier attempt may have been applied ({uncertain})"
        return RowResult(key, UNKNOWN, reason)

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

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def stopped(self) -> bool:
        """Whether the run is stopping (its waits end at once)."""
        return self._stopped()

    def monotonic(self) -> float:
        """The client's monotonic clock (the one its waits advance)."""
        return self._monotonic()

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, or less when the run stops."""
        if not self._stopped():
            self._sleep(seconds)

    def _refused(self, info: ChannelInfo, keys: list[str], items: list[str], reasons: dict[int, str],
                 message: str, *, resend: bool, uncertain: str | None) -> Sequence[RowResult]:
        """Braze refused the rows at `reasons`' positions, each with its reason: the others go again,
        once (`resend`), else stay unsettled with the request's `message`."""
        results: dict[int, RowResult] = {i: RowResult(keys[i], REJECTED, r) for i, r in reasons.items()}
        rest = [i for i in range(len(keys)) if i not in reasons]
        if rest and resend:
            again = self._send(info, [keys[i] for i in rest], [items[i] for i in rest], resend=False,
                               uncertain=uncertain)
            results.update(zip(rest, again, strict=True))
        else:
            for i in rest:
                results[i] = self._unsettled(keys[i], f"Braze refused the request: {message}", uncertain)
        return [results[i] for i in range(len(keys))]

    def _recheck_deletes(self, info: ChannelInfo, body: bytes, keys: list[str], deleted: int) -> Sequence[RowResult]:
        """/users/delete deleted fewer profiles than identifiers sent, and does not say which: a profile
        may not exist, or may be too new for Braze to see yet (it creates profiles asynchronously). So
        the same request goes once more after `delete_recheck` seconds (deleting is idempotent): what was
        too new is deleted then. The rows are acknowledged either way, those of a request still short
        with a note that `reflow errors` lists."""
        self._sleep(self.delete_recheck)
        again = self._exchange(info, body, len(keys))
        total = deleted + (again.deleted or 0) if again.kind == OK else deleted
        if total >= len(keys):
            return AllAcknowledged(keys)
        note = (f"Braze deleted {total} of the {len(keys)} profiles of this request, twice asked "
                f"({self.delete_recheck:g} s apart): the others have no profile to delete")
        return [RowResult(key, ACKNOWLEDGED, note) for key in keys]

    def _exchange(self, info: ChannelInfo, body: bytes, sent: int) -> Verdict:
        """Send one body until Braze gives an answer other than 429/5xx, retries run out or `stop` is
        set. The verdict's `uncertain` says whether any attempt may have been applied unanswered."""
        bucket = self._buckets[info.group]
        if info.body_auth:
            body = self._authenticated(body)
            headers = {**self._headers, "Content-Length": str(len(body))}
        else:
            headers = {**self._headers, "Authorization": self._authorization.reveal(), "Content-Length": str(len(body))}
        failures = 0
        waits = 0
        uncertain: str | None = None
        last = ""
        while True:
            if not self._stopped():
                bucket.acquire()
            if self._stopped():
                why = f"stopped before sending{': ' + last if last else ''}"
                return Verdict(STOPPED, message=why, uncertain=uncertain)
            try:
                answer = self._transport.request(info.method, info.path, body, headers)
            except TransportTLS as exc:
                raise DestinationError(f"{exc.message} (connection '{self.connection}'); if a proxy inspects TLS, "
                                       "point REQUESTS_CA_BUNDLE or SSL_CERT_FILE at its CA bundle") from exc
            except TransportError as exc:
                verdict = Verdict(RETRY, message=exc.message, uncertain=exc.message if exc.sent else None)
            else:
                verdict = self._sort(answer, info, sent, body)
            uncertain = verdict.uncertain or uncertain
            last = verdict.message
            if verdict.kind == RATE_LIMITED:
                waits += 1
                if waits > self.max_rate_limit_waits:
                    return Verdict(GAVE_UP, message=f"still rate limited (429) after {waits - 1} waits",
                                   uncertain=uncertain)
                wait = verdict.wait if verdict.wait is not None else self._backoff(waits)
                bucket.pause_until(self._monotonic() + wait)
                continue
            if verdict.kind == RETRY:
                failures += 1
                if failures > self.max_retries:
                    retries = f"{self.max_retries} {'retry' if self.max_retries == 1 else 'retries'}"
                    return Verdict(GAVE_UP, message=f"gave up after {retries}: {verdict.message}", uncertain=uncertain)
                self._sleep(self._backoff(failures))
                continue
            if verdict.kind in (UNEXPECTED, REFUSED):
                return Verdict(GAVE_UP, message=verdict.message, uncertain=uncertain)
            return replace(verdict, uncertain=uncertain)

    def _authenticated(self, body: bytes) -> bytes:
        """A partner request's body with partner_api_key and client_secret as its first members."""
        if self._body_auth is None:
            raise DestinationError(f"connection '{self.connection}': the partner cohort import needs "
                                   "cohort_import.partner_api_key and cohort_import.data_import_key")
        fields = self._body_auth.reveal().encode("utf-8")
        return b"{" + fields + (b"," if body[1:2] != b"}" else b"") + body[1:]

    def _sort(self, answer: Answer, info: ChannelInfo, sent: int, body: bytes) -> Verdict:
        update_only = info.path == "/users/track" and _UPDATE_ONLY.search(body) is not None
        verdict = sort_response(answer.status, answer.headers, answer.body, info, sent=sent, update_only=update_only,
                                connection=self.connection, base_url=self.base_url, now=self._clock())
        if verdict.kind != RATE_LIMITED and answer.headers.get("x-ratelimit-remaining") == "0":
            wait = rate_limit_wait(answer.headers, self._clock())
            if wait:
                self._buckets[info.group].pause_until(self._monotonic() + wait)
        return verdict

    def lookup(self, info: ChannelInfo, items: Sequence[str]) -> tuple[Mapping[str, Any], ...] | str:
        """The users /users/export/ids finds among `items` (JSON identifiers, at most `info.limit`), or
        why Braze gave no usable answer. It writes nothing: retried like any request, never uncertain."""
        body = (info.prefix + ",".join(items) + info.suffix).encode("utf-8")
        verdict = self._exchange(info, body, len(items))
        if verdict.kind == OK:
            return verdict.users
        if verdict.kind == FATAL:
            raise DestinationError(verdict.message)
        return verdict.message

    def probe(self, method: str, path: str, body: bytes | None) -> Answer:
        """One request and its answer, without retries or waits (for `reflow check`). Raises
        TransportError when no answer came."""
        data = body or b""
        headers = {**self._headers, "Authorization": self._authorization.reveal(), "Content-Length": str(len(data))}
        return self._transport.request(method, path, data if body is not None else None, headers)

    def _backoff(self, attempt: int) -> float:
        delay = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * self._rng())
