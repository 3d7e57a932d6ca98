"""Injected faults: latency, dropped connections, random 5xx, and 429 for the first N requests."""

from __future__ import annotations

import random
import threading
import time

from .options import SandboxOptions

SERVER_ERROR_STATUSES = (500, 502, 503, 504)


class Faults:
    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self._rng = random.Random(options.seed)
        self._lock = threading.Lock()
        self._forced_429_left = options.fail_429_first

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

    def forced_429(self) -> bool:
        with self._lock:
            if self._forced_429_left > 0:
                self._forced_429_left -= 1
                return True
        return False

    def _roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate
