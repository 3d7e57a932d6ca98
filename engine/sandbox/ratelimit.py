"""Fixed-window rate limits per bucket (braze-api.md §3), and the x-ratelimit-* headers.

Windows are aligned to the epoch (so hourly windows reset on the clock hour). Headers come in two
documented flavours: `epoch` (reset = epoch seconds) and `mau` (reset = seconds remaining; a 429
carries only `x-ratelimit-retry-after`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping

# bucket -> (requests, seconds); braze-api.md §3.1
DEFAULT_LIMITS: dict[str, tuple[int, float]] = {
    "users.track": (3000, 3.0),
    "users.export.ids": (250, 60.0),
    "users.identity": (20000, 60.0),        # delete, alias/new, alias/update, identify, merge
    "subscription": (5000, 60.0),
    "catalogs.items.async": (16000, 60.0),
    "catalogs.items.sync": (50, 60.0),
    "catalogs.manage": (50, 60.0),
    "partners.cohorts": (250000, 3600.0),    # partner cohort import: not the workspace's limits
    "default": (250000, 3600.0),
}


class RateLimiter:
    def __init__(self, limits: Mapping[str, tuple[int, float]], mode: str = "epoch") -> None:
        self.limits = dict(limits)
        self.mode = mode
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}   # bucket -> (window start, count)

    def _window(self, bucket: str, now: float) -> tuple[float, int, int, float]:
        limit, period = self.limits.get(bucket, self.limits["default"])
        start = math.floor(now / period) * period
        seen_start, count = self._windows.get(bucket, (start, 0))
        if seen_start != start:
            count = 0
        return start, count, limit, period

    def acquire(self, bucket: str) -> tuple[bool, dict[str, str]]:
        """Count one request; returns (allowed, headers)."""
        now = time.time()
        with self._lock:
            start, count, limit, period = self._window(bucket, now)
            allowed = count < limit
            if allowed:
                count += 1
            self._windows[bucket] = (start, count)
        return allowed, self._headers(limit, limit - count, start + period, now, allowed)

    def peek(self, bucket: str) -> dict[str, str]:
        """Headers for a response that did not count (401, 403, 404)."""
        now = time.time()
        with self._lock:
            start, count, limit, period = self._window(bucket, now)
        return self._headers(limit, limit - count, start + period, now, True)

    def exhausted(self, bucket: str) -> dict[str, str]:
        """Headers for an injected 429 (`--fail-429-first`)."""
        now = time.time()
        with self._lock:
            start, _, limit, period = self._window(bucket, now)
        return self._headers(limit, 0, start + period, now, False)

    def _headers(self, limit: int, remaining: int, reset_at: float, now: float, allowed: bool) -> dict[str, str]:
        seconds_left = max(1, math.ceil(reset_at - now))
        if self.mode == "mau":
            if not allowed:
                return {"x-ratelimit-retry-after": str(seconds_left)}
            reset = str(seconds_left)
        else:
            reset = str(math.ceil(reset_at))
        return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(max(0, remaining)),
                "x-ratelimit-reset": reset}
