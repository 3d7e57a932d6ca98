"""MemoryDestination: the destination contract in memory, with configurable failures, for tests of the core.

Every row of any object becomes the canonical JSON of {"key", "op", "fields"} (fields: the changed values
for changed rows, all values otherwise) on channel "memory". Failures:
    reject_keys           keys answered REJECTED (a mapping gives each key its reason)
    fail_batches          0-based send calls answered NOT_ATTEMPTED for every key
    fail_after_batches    the send call after N batches raises DestinationError (and every later one)
    latency               seconds slept in each send
    unknown_batches       0-based send calls answered UNKNOWN (applied here, but no usable answer)

Its projection is every model column under its own name (`fields` narrows and renames: field ->
column); `identity` (a mapping) and `identity_fields` stand for where the rows go and what names them.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from engine.destinations.base import (
    ACKNOWLEDGED,
    CHANGED,
    NOT_ATTEMPTED,
    REJECTED,
    REMOVED,
    UNKNOWN,
    Batch,
    Capabilities,
    Destination,
    Estimate,
    Invalid,
    Item,
    PlanRow,
    Projection,
    RowResult,
    Skip,
    cut_batches,
)
from engine.errors import DestinationError

CHANNEL = "memory"
DEFAULT_REJECT_REASON = "rejected by the memory destination"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class MemoryDestination(Destination):
    """A destination that records what it receives. Thread-safe."""

    def __init__(self, append_only: bool = False, sends_removed: bool = True,
                 reject_keys: Iterable[str] | Mapping[str, str] = (), fail_after_batches: int | None = None,
                 max_objects_per_request: int = 75, *, fail_batches: Collection[int] = (), latency: float = 0.0,
                 requests_per_second: float = 1000.0, default_concurrency: int = 4,
                 invalid_keys: Mapping[str, str] | None = None, max_body_bytes: int = 4_000_000,
                 unknown_batches: Collection[int] = (), fields: Mapping[str, str] | None = None,
                 identity: Mapping[str, str] | None = None, identity_fields: Sequence[str] = (),
                 membership: bool = False) -> None:
        self.capabilities = Capabilities(default_concurrency=default_concurrency, append_only=append_only,
                                         sends_removed=sends_removed, membership=membership)
        self.max_objects_per_request = max_objects_per_request
        self.max_body_bytes = max_body_bytes
        self.requests_per_second = requests_per_second
        if isinstance(reject_keys, Mapping):
            self.reject_keys: dict[str, str] = dict(reject_keys)
        else:
            self.reject_keys = {key: DEFAULT_REJECT_REASON for key in reject_keys}
        self.invalid_keys = dict(invalid_keys or {})
        self.fail_after_batches = fail_after_batches
        self.fail_batches = frozenset(fail_batches)
        self.unknown_batches = frozenset(unknown_batches)
        self.fields = dict(fields) if fields is not None else None
        self._identity = dict(identity or {"destination": "memory"})
        self.identity_fields = tuple(identity_fields)
        self.latency = latency
        self.received: list[Batch] = []            # every batch send() was called with, in call order
        self.acknowledged: dict[str, str] = {}      # key -> last acknowledged item_json
        self.closed = False
        self._calls = 0
        self._lock = threading.Lock()

    def project(self, columns: Sequence[str]) -> Projection:
        pairs = list(self.fields.items()) if self.fields is not None else [(c, c) for c in columns]
        return Projection(fields=tuple(pairs), identity=self.identity_fields)

    def identity(self) -> Mapping[str, str]:
        return dict(self._identity)

    def prepare(self, row: PlanRow) -> Item | Invalid | Skip:
        if row.key in self.invalid_keys:
            return Invalid(self.invalid_keys[row.key])
        if row.op == REMOVED and (self.capabilities.append_only or not self.capabilities.sends_removed):
            return Skip("removed rows are not sent")
        if row.op == CHANGED and self.capabilities.append_only:
            return Skip("append-only: changes are not re-sent")
        if row.op == CHANGED:
            fields = {column: row.values.get(column) for column in row.changed}
        else:
            fields = dict(row.values)
        for gone in row.unmapped:
            fields[gone] = None
        if row.replaces:
            fields.update({f: None for f, v in row.replaces.items() if v is not None and fields.get(f) is None})
        try:
            text = canonical_json({"key": row.key, "op": row.op, "fields": fields})
        except ValueError as exc:
            return Invalid(f"value cannot be sent as JSON: {exc}")
        return Item(CHANNEL, text, len(fields))

    def estimate(self, items: Mapping[str, tuple[int, int]]) -> Estimate:
        limit = self.max_objects_per_request
        requests = {channel: math.ceil(count / limit) for channel, (count, _) in items.items() if count > 0}
        total = sum(requests.values())
        return Estimate(requests=requests, data_points=sum(points for _, points in items.values()),
                        seconds=total / self.requests_per_second)

    def batch_limits(self, channel: str) -> tuple[int, int]:
        return self.max_objects_per_request, self.max_body_bytes

    def batches(self, channel: str, rows: Iterable[tuple[str, str]]) -> Iterator[Batch]:
        return cut_batches(channel, rows, *self.batch_limits(channel))

    def send(self, batch: Batch) -> Sequence[RowResult]:
        with self._lock:
            call = self._calls
            self._calls += 1
            self.received.append(batch)
        if self.latency:
            time.sleep(self.latency)
        if self.fail_after_batches is not None and call >= self.fail_after_batches:
            raise DestinationError(f"memory destination: configured to fail after {self.fail_after_batches} batches")
        if call in self.fail_batches:
            return [RowResult(key, NOT_ATTEMPTED, "memory destination: batch configured to fail")
                    for key in batch.keys]
        if call in self.unknown_batches:
            with self._lock:
                self.acknowledged.update(zip(batch.keys, batch.items, strict=True))
            return [RowResult(key, UNKNOWN, "memory destination: applied, answer lost") for key in batch.keys]
        results = []
        with self._lock:
            for key, item in zip(batch.keys, batch.items, strict=True):
                if key in self.reject_keys:
                    results.append(RowResult(key, REJECTED, self.reject_keys[key]))
                else:
                    self.acknowledged[key] = item
                    results.append(RowResult(key, ACKNOWLEDGED))
        return results

    @property
    def sent_items(self) -> list[dict[str, Any]]:
        """Every item received, parsed, in call order (for assertions)."""
        return [json.loads(item) for batch in self.received for item in batch.items]

    def close(self) -> None:
        self.closed = True
