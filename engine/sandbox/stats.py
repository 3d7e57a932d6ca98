"""Request counters for GET /_sandbox/stats."""

from __future__ import annotations

import threading
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
                "objects_per_request": {
                    "histogram": histogram,
                    "max": max(self.objects_per_request, default=0),
                    "requests": sum(self.objects_per_request.values()),
                },
            }
