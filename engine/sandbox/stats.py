"""Request counters for GET /_sandbox/stats, and the log of requests applied then failed.

`applied_then_failed` lists every Braze request the process-then-fail fault applied to the store
and then answered 500/504 or dropped: {"seq", "route", "answer" (500, 504 or "dropped"), "at"
(epoch seconds), "body" (the parsed request body)}. A client that retries them sends duplicates;
the chaos suite traces extra events and purchases to these bodies.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from typing import Any


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()     # ("POST /users/track", 201) -> n
        self.objects_per_request: Counter[int] = Counter()      # /users/track objects -> requests
        self.dropped_connections = 0
        self.applied_then_failed: list[dict[str, Any]] = []

    def record(self, route: str, status: int) -> None:
        with self._lock:
            self.requests[(route, status)] += 1

    def track_objects(self, count: int) -> None:
        with self._lock:
            self.objects_per_request[count] += 1

    def dropped(self, route: str) -> None:
        with self._lock:
            self.dropped_connections += 1
            self.requests[(route, 0)] += 1

    def failed_after_apply(self, route: str, answer: int, body: Any) -> None:
        """Log a request that was applied and then answered `answer` (0 = connection dropped)."""
        with self._lock:
            self.applied_then_failed.append({
                "seq": len(self.applied_then_failed) + 1, "route": route,
                "answer": answer or "dropped", "at": time.time(), "body": copy.deepcopy(body),
            })

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            by_path: dict[str, dict[str, int]] = {}
            for (route, status), n in sorted(self.requests.items()):
                by_path.setdefault(route, {})[str(status) if status else "dropped"] = n
            histogram = {str(k): v for k, v in sorted(self.objects_per_request.items())}
            return {
                "requests": by_path,
                "requests_total": sum(self.requests.values()),
                "dropped_connections": self.dropped_connections,
                "applied_then_failed": copy.deepcopy(self.applied_then_failed),
                "objects_per_request": {
                    "histogram": histogram,
                    "max": max(self.objects_per_request, default=0),
                    "requests": sum(self.objects_per_request.values()),
                },
            }
