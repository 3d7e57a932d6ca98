"""Plan values: what a plan says it will send. Immutable; built by planner.py, run by runner.py."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

# plan row statuses
SEND = "send"            # has a payload item; apply sends it
INVALID = "invalid"      # failed the destination's validation; never sent, stays pending
SKIP = "skip"            # part of the plan, sends nothing (e.g. a changed, already-sent event)
REHASH = "rehash"        # hash differs but no value did (column order, DuckDB upgrade): record only
BASELINE = "baseline"    # first_run: baseline records the row without sending

PLAN_FORMAT_VERSION = 1  # of Plan.to_json; bumped only if a key changes meaning or goes away


@dataclass(frozen=True)
class Counts:
    total: int = 0          # rows in the model result
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    retry: int = 0          # previously rejected rows planned again
    invalid: int = 0
    not_sent: int = 0       # rows in the plan that send nothing (skip/baseline), included above
    baseline: int = 0

    @property
    def to_send(self) -> int:
        return self.added + self.changed + self.removed + self.retry - self.not_sent


@dataclass(frozen=True)
class GuardResult:
    name: str
    limit: float
    actual: float
    blocked: bool

    def describe(self) -> str:
        verdict = "BLOCKED" if self.blocked else "passed"
        unit = "%" if self.name.endswith("_pct") else ""
        return f"{self.name}: {_num(self.actual)}{unit} (limit {_num(self.limit)}{unit}) {verdict}"


@dataclass(frozen=True)
class FieldStat:
    field: str
    rows: int
    nulled: int
    samples: tuple[tuple[str, Any, Any], ...] = ()     # (key, old, new)


@dataclass(frozen=True)
class SyncPlan:
    name: str
    model: str
    object: str
    connection: str
    counts: Counts
    requests: dict[str, int]
    data_points: int
    seconds: float
    guards: tuple[GuardResult, ...]
    fields: tuple[FieldStat, ...]
    samples: dict[str, list[dict[str, Any]]]            # op -> a few rows
    invalid_samples: tuple[tuple[str, str], ...]        # (key, reason)
    snapshot_version: int
    snapshot_rows: int
    fingerprint: str
    seq_min: int = 0
    seq_max: int = -1
    first_run: bool = False
    notes: tuple[str, ...] = ()

    @property
    def blocked(self) -> tuple[GuardResult, ...]:
        return tuple(g for g in self.guards if g.blocked)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def has_changes(self) -> bool:
        c = self.counts
        return bool(c.added or c.changed or c.removed or c.retry or c.invalid)

    def counts_json(self) -> str:
        return json.dumps(asdict(self.counts))

    def to_json(self) -> dict[str, Any]:
        """One sync of `Plan.to_json` (schemas/plan.schema.json, `$defs/sync`)."""
        c = self.counts
        return {
            "name": self.name, "model": self.model, "object": self.object, "connection": self.connection,
            "added": c.added, "changed": c.changed, "removed": c.removed,
            "unchanged": c.unchanged, "retry": c.retry, "invalid": c.invalid,
            "not_sent": c.not_sent, "baseline": c.baseline, "total": c.total, "to_send": c.to_send,
            "has_changes": self.has_changes,
            "requests": self.total_requests, "requests_by_endpoint": dict(self.requests),
            "data_points": self.data_points, "estimated_seconds": round(self.seconds, 3),
            "first_run": self.first_run,
            "fields": [{"field": f.field, "rows": f.rows, "nulled": f.nulled,
                        "samples": [{"key": k, "old": old, "new": new} for k, old, new in f.samples]}
                       for f in self.fields],
            "guards": [asdict(g) for g in self.guards],
            "blocked": bool(self.blocked),
            "samples": {op: list(rows) for op, rows in self.samples.items()},
            "invalid_samples": [{"key": k, "reason": r} for k, r in self.invalid_samples],
            "notes": list(self.notes),
            "snapshot_version": self.snapshot_version,
            "snapshot_rows": self.snapshot_rows,
            "fingerprint": self.fingerprint,
        }

    def info_json(self) -> str:
        return json.dumps({
            "model": self.model, "object": self.object, "connection": self.connection,
            "samples": self.samples, "invalid_samples": [list(s) for s in self.invalid_samples],
            "snapshot_rows": self.snapshot_rows, "first_run": self.first_run, "notes": list(self.notes),
        }, default=str)


@dataclass(frozen=True)
class Plan:
    plan_id: str
    created_at: datetime
    syncs: tuple[SyncPlan, ...] = field(default_factory=tuple)
    status: str = "planned"

    @property
    def has_changes(self) -> bool:
        return any(s.has_changes for s in self.syncs)

    @property
    def blocked(self) -> tuple[tuple[str, GuardResult], ...]:
        return tuple((s.name, g) for s in self.syncs for g in s.blocked)

    def to_json(self) -> dict[str, Any]:
        """The stable, documented machine form (schemas/plan.schema.json). Keys are only ever added."""
        syncs = [s.to_json() for s in self.syncs]
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "plan_id": self.plan_id,
            "created_at": self.created_at.isoformat(timespec="seconds") + "Z",
            "status": self.status,
            "has_changes": self.has_changes,
            "blocked": [{"sync": name, "guard": g.name} for name, g in self.blocked],
            "totals": {
                key: sum(s[key] for s in syncs)
                for key in ("added", "changed", "removed", "unchanged", "retry", "invalid", "requests",
                            "data_points")
            } | {"estimated_seconds": round(sum(s.seconds for s in self.syncs), 3)},
            "syncs": syncs,
        }


def _num(value: float) -> str:
    return f"{value:,.1f}" if isinstance(value, float) and not value.is_integer() else f"{int(value):,}"
