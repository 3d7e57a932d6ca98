"""The request pipeline, independent of the HTTP transport.

Braze paths go through, in order:
    route (404) → dropped connection / latency / 5xx faults → auth (401) → permission (403)
    (partner routes: no header auth; their body auth (401) and 423 faults come after the JSON)
    → forced 429 / rate limit (429) → Content-Type (415) → body size (413) → JSON (400) → handler
    → process-then-fail (a 2xx of a writing route replaced by 500/504 or a dropped connection,
      the store keeping what the handler applied; logged in the stats)
Every Braze response carries the x-ratelimit-* headers of its bucket. Paths under /_sandbox/ are
the inspection API: no faults, not counted in the stats, and no auth unless `admin_token` is set.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from . import admin, cohorts
from .faults import DROPPED, Faults
from .options import SandboxOptions
from .ratelimit import DEFAULT_LIMITS, RateLimiter
from .responses import (
    Response,
    access_denied,
    message,
    not_found,
    parse_error,
    rate_limited,
    server_error,
    too_large,
    unauthorized,
    unsupported_media_type,
)
from .routes import Router
from .stats import Stats
from .store import Store


class StateFileError(Exception):
    """The --state file exists but cannot be read as a sandbox store."""


class Headers(Protocol):
    """What the pipeline needs of request headers (a dict or http.server's message)."""

    def get(self, name: str, default: None = None) -> str | None: ...


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    base_url: str = ""

    def query_value(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


class Sandbox:
    """The emulator: store, limits, faults and stats behind one `handle` call."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self.store = Store()
        self.stats = Stats()
        self.faults = Faults(self.options)
        limits = dict(DEFAULT_LIMITS)
        limits.update(self.options.bucket_limits)
        if self.options.rate_limit is not None:
            limits["users.track"] = self.options.rate_limit
        self.limiter = RateLimiter(limits, self.options.ratelimit_headers)
        self.router = Router()
        self._save_lock = threading.Lock()
        if self.options.state:
            self.load_state()

    # ---- pipeline -------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Headers, body: bytes | None,
               length: int, base_url: str = "") -> Response:
        """Answer one request. `body` is None when `length` exceeded the cap and was not read."""
        path, _, query_string = target.partition("?")
        request = Request(method, path, parse_qs(query_string), headers, base_url=base_url)
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            return admin.handle(self, request, body)
        route, params = self.router.match(method, path)
        label = route.label if route else "unknown"
        response = self._braze(route, request, params, body, length)
        if response.drop_connection:
            self.stats.dropped(label)
        else:
            self.stats.record(label, response.status)
        return response

    def _braze(self, route: Any, request: Request, params: dict[str, str], body: bytes | None,
               length: int) -> Response:
        bucket = route.bucket if route else "default"
        if route is None:
            return self._with_headers(not_found(), self.limiter.peek(bucket))
        if self.faults.drop_connection():
            return Response(0, drop_connection=True)
        self.faults.delay()
        status = self.faults.server_error()
        if status is not None:
            return self._with_headers(server_error(status), self.limiter.peek(bucket))
        if not route.body_auth:
            auth = request.headers.get("Authorization") or request.headers.get("authorization") or ""
            if not auth.startswith("Bearer ") or auth[len("Bearer "):] != self.options.api_key:
                return self._with_headers(unauthorized(), self.limiter.peek(bucket))
            if route.permission not in self.options.permissions:
                return self._with_headers(access_denied(), self.limiter.peek(bucket))
        if self.faults.forced_429():
            return self._with_headers(rate_limited(), self.limiter.exhausted(bucket))
        allowed, limit_headers = self.limiter.acquire(bucket)
        if not allowed:
            return self._with_headers(rate_limited(), limit_headers)
        if route.has_body:
            content_type = request.headers.get("Content-Type") or request.headers.get("content-type") or ""
            if content_type.split(";")[0].strip().lower() != "application/json":
                return self._with_headers(unsupported_media_type(), limit_headers)
            if body is None or length > self.options.max_body_bytes:
                return self._with_headers(too_large(), limit_headers)
            try:
                request.body = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                return self._with_headers(parse_error(), limit_headers)
            if not isinstance(request.body, dict):
                return self._with_headers(parse_error(), limit_headers)
        request.params = {k: unquote(v) for k, v in params.items()}
        if route.body_auth:
            refused = cohorts.authenticate(self, request)
            if refused is not None:
                return self._with_headers(refused, limit_headers)
            if self.faults.locked():
                return self._with_headers(message(423, cohorts.LOCKED), limit_headers)
        response = route.handler(self, request)
        if route.writes and 200 <= response.status < 300:
            failure = self.faults.process_then_fail()
            if failure is not None:
                self.stats.failed_after_apply(route.label, failure, request.body)
                if failure == DROPPED:
                    return Response(0, drop_connection=True)
                response = server_error(failure)
        return self._with_headers(response, limit_headers)

    @staticmethod
    def _with_headers(response: Response, headers: dict[str, str]) -> Response:
        response.headers.update(headers)
        return response

    # ---- state file -----------------------------------------------------------------------

    def load_state(self) -> None:
        path = Path(self.options.state or "")
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            with self.store.lock:
                self.store.load_json(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateFileError(f"cannot read sandbox state file {path}: {type(exc).__name__}: {exc}") from exc

    def save_state(self) -> str | None:
        """Write the store to the --state file atomically; returns the path (None without --state)."""
        if not self.options.state:
            return None
        path = Path(self.options.state)
        with self.store.lock:
            text = json.dumps(self.store.to_json(), separators=(",", ":"))
        with self._save_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        return str(path)

    def reset(self) -> None:
        with self.store.lock:
            self.store.reset()
        self.stats.reset()
