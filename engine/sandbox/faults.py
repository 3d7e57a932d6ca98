"""Injected faults: latency, dropped connections, random 5xx, 429 for the first N requests, and
"process, then fail": a request applied to the store and then answered 500/504 or dropped, as
Braze may do (a 5xx does not say whether the request was applied; braze-api.md §0.1).

One seeded generator (`seed`) drives every random fault.
"""

from __future__ import annotations

import random
import threading
import time

from .options import SandboxOptions

SERVER_ERROR_STATUSES = (500, 502, 503, 504)
DROPPED = 0                                    # process_then_fail(): drop the connection
_AFTER_APPLY = {"500": (500,), "504": (504,), "drop": (DROPPED,), "mixed": (500, 504, DROPPED)}


class Faults:
    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self._rng = random.Random(options.seed)
        self._lock = threading.Lock()
        self._forced_429_left = options.fail_429_first
        self._locked_left = options.fail_423_first

    def delay(self) -> None:
        if self.options.latency_ms:
            time.sleep(self.options.latency_ms / 1000)

    def drop_connection(self) -> bool:
        return self._roll(self.options.drop_connection_rate)

    def server_error(self) -> int | None:
        """A 5xx status to answer with, or None."""
        if not self._roll(self.options.fail_5xx_rate):
            return None
        with self._lock:
            return self._rng.choice(SERVER_ERROR_STATUSES)

    def process_then_fail(self) -> int | None:
        """After a request was applied: 500 or 504 to answer instead, DROPPED, or None (answer normally)."""
        if not self._roll(self.options.process_then_fail_rate):
            return None
        choices = _AFTER_APPLY[self.options.process_then_fail_kind]
        with self._lock:
            return choices[0] if len(choices) == 1 else self._rng.choice(choices)

    def forced_429(self) -> bool:
        with self._lock:
            if self._forced_429_left > 0:
                self._forced_429_left -= 1
                return True
        return False

    def locked(self) -> bool:
        """Answer 423 `Resource locked` to this partner cohort request (`fail_423_first`, `lock(n)`)."""
        with self._lock:
            if self._locked_left > 0:
                self._locked_left -= 1
                return True
        return False

    def lock(self, count: int) -> None:
        """The next `count` partner cohort requests answer 423 (POST /_sandbox/cohorts/lock)."""
        with self._lock:
            self._locked_left = max(0, count)

    def _roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate
