"""Plan values: what a plan says it will send. Immutable; built by planner.py, run by runner.py."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from engine.formatting import whole_or_one


class RowStatus(StrEnum):
    """A plan row's status (a str: compares equal to the text stored in `plan_rows.status`)."""

    SEND = "send"            # has a payload item; apply sends it
    INVALID = "invalid"      # failed the destination's validation; never sent, stays pending
    SKIP = "skip"            # part of the plan, sends nothing (e.g. a changed, already-sent event)
    REHASH = "rehash"        # hash differs but no value did (column order, DuckDB upgrade): record only
    BASELINE = "baseline"    # first_run: baseline records the row without sending


SEND, INVALID, SKIP = RowStatus.SEND, RowStatus.INVALID, RowStatus.SKIP
REHASH, BASELINE = RowStatus.REHASH, RowStatus.BASELINE
DROPPED = "sent without "   # reason of a SEND row sent without a field the destination would refuse
                            # (any other reason of a SEND row is a note about it)

# reasons of pending rows (state `pending.reason`): `status` and the next plan read them by prefix
UNKNOWN_REASON = "outcome unknown: "        # sent without a usable answer: Braze may hold it
UNRECORDED_REASON = f"{UNKNOWN_REASON}the state file could not record the outcome (full disk?); it may have been sent"
KILLED_REASON = f"{UNKNOWN_REASON}the process ended during the send (killed, or the machine stopped); it may have been sent"
REJECTED_REASON = "rejected: "              # `reflow status` counts these apart from the other pending rows


class PlanStatus(StrEnum):
    """A saved plan's status (state `plans.status`)."""

    PLANNED = "planned"          # the latest plan: `apply` takes it
    SUPERSEDED = "superseded"    # a newer plan was made
    BLOCKED = "blocked"          # a guard stopped it (it can be sent with the guard allowed)
    APPLYING = "applying"        # being sent, or the process stopped while it was
    APPLIED = "applied"          # every sync went through
    INCOMPLETE = "incomplete"    # sent, but not every row landed: plan again


class RunStatus(StrEnum):
    """One sync's run in an apply (state `runs.status`)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"          # some rows not delivered (pending)
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # stopped (Ctrl-C, SIGTERM) or the process died

PLAN_FORMAT_VERSION = 1  # of Plan.to_json; bumped only if a key changes meaning or goes away
PREVIEW = "preview"     # the status of a read-only plan (`reflow plan --read-only`): not saved, never applied


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
        return f"{self.name}: {whole_or_one(self.actual)}{unit} (limit {whole_or_one(self.limit)}{unit}) {verdict}"


@dataclass(frozen=True)
class FieldStat:
    field: str                                          # the destination's name (Braze attribute, …)
    rows: int
    nulled: int
    samples: tuple[tuple[str, Any, Any], ...] = ()     # (key, old, new)
    column: str | None = None                           # the model column it reads
    type_changes: int = 0                               # rows whose JSON type changed (number → string, …)
    type_sample: tuple[str, str, str, Any, Any] | None = None   # (key, old type, new type, old, new)

    def to_row(self) -> list[Any]:
        return [self.field, self.rows, self.nulled, [list(x) for x in self.samples], self.column,
                self.type_changes, list(self.type_sample) if self.type_sample else None]

    @classmethod
    def from_row(cls, row: list[Any]) -> FieldStat:
        extra = row[4:] + [None, 0, None][len(row) - 4:]
        sample = tuple(extra[2]) if extra[2] else None
        return cls(row[0], row[1], row[2], tuple(tuple(x) for x in row[3]), extra[0], int(extra[1] or 0),
                   sample)  # type: ignore[arg-type]


# what a ValueWarning says, by kind (destinations.base: NON_FINITE, TIME_RANGE, ARRAY_MAX)
WARNING_TEXT = {
    "non_finite": "is NaN or ±Infinity (JSON cannot carry it)",
    "time_range": "is a time Braze cannot store (infinite, or a year outside 0-3000)",
    "array_max": "is an array longer than the workspace keeps (connection array_max)",
}
WARNING_ACTION = {
    "left out": "the field is left out of those rows (the rest of each row is sent)",
    "invalid": "those rows are invalid and not sent",
}


@dataclass(frozen=True)
class ValueWarning:
    """Rows whose value of one field the destination would mangle, and what the plan does instead."""

    kind: str           # non_finite | time_range | array_max
    field: str
    rows: int
    action: str         # "left out" (the field) | "invalid" (the row)
    key: str            # an example row ...
    reason: str         # ... and its reason

    def describe(self) -> str:
        what = WARNING_TEXT.get(self.kind, "cannot be stored as it is")
        rows = f"{self.rows:,} row{'' if self.rows == 1 else 's'}"
        return (f"{self.field} {what} on {rows}; {WARNING_ACTION.get(self.action, self.action)}; "
                f"e.g. {self.key}: {self.reason}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "field": self.field, "rows": self.rows, "action": self.action,
                "example": {"key": self.key, "reason": self.reason}, "message": self.describe()}


@dataclass(frozen=True)
class SyncFailure:
    """A sync that could not be planned, and why (the other syncs of the plan are unaffected)."""

    sync: str
    message: str
    exit_code: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"sync": self.sync, "message": self.message, "exit_code": self.exit_code}


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
    identity: dict[str, str] = field(default_factory=dict)    # where the rows go (see destinations.base)
    restart: str | None = None                  # the destination changed: what did; the sync starts over
    unmapped: tuple[tuple[str, int], ...] = ()  # fields no longer mapped: (field, rows holding a value)
    on_unmapped: str = "keep"                   # keep | unset
    append_only: bool = False
    apply_rank: int = 1         # the destination's Capabilities.apply_rank: syncs are applied in rank order
    columns: tuple[tuple[str, str], ...] = ()   # the fields this plan's rows hold, with their model types
    identity_fields: tuple[str, ...] = ()       # fields naming the destination object of a row
    membership: bool = False                    # the destination's Capabilities.membership
    warnings: tuple[ValueWarning, ...] = ()     # values the destination would mangle, counted per field
    read: dict[str, Any] = field(default_factory=dict)  # where phase 1 ran, rows and bytes read from the warehouse

    @property
    def blocked(self) -> tuple[GuardResult, ...]:
        return tuple(g for g in self.guards if g.blocked)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def has_changes(self) -> bool:
        c = self.counts
        return bool(c.added or c.changed or c.removed or c.retry or c.invalid or self.restart
                    or (self.unmapped and self.on_unmapped == "unset"))

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
            "fields": [{"field": f.field, "column": f.column, "rows": f.rows, "nulled": f.nulled,
                        "type_changes": f.type_changes,
                        "type_sample": (dict(zip(("key", "old_type", "new_type", "old", "new"), f.type_sample,
                                                 strict=True)) if f.type_sample else None),
                        "samples": [{"key": k, "old": old, "new": new} for k, old, new in f.samples]}
                       for f in self.fields],
            "destination": dict(self.identity),
            "restart": self.restart,
            "unmapped": [{"field": f, "rows_with_value": n, "action": self.on_unmapped} for f, n in self.unmapped],
            "guards": [asdict(g) for g in self.guards],
            "blocked": bool(self.blocked),
            "samples": {op: list(rows) for op, rows in self.samples.items()},
            "invalid_samples": [{"key": k, "reason": r} for k, r in self.invalid_samples],
            "notes": list(self.notes),
            "warnings": [w.to_json() for w in self.warnings],
            "read": dict(self.read),
            "snapshot_version": self.snapshot_version,
            "snapshot_rows": self.snapshot_rows,
            "fingerprint": self.fingerprint,
        }

    def info_json(self) -> str:
        return json.dumps({
            "model": self.model, "object": self.object, "connection": self.connection,
            "samples": self.samples, "invalid_samples": [list(s) for s in self.invalid_samples],
            "snapshot_rows": self.snapshot_rows, "first_run": self.first_run, "notes": list(self.notes),
            "restart": self.restart, "unmapped": [list(u) for u in self.unmapped], "on_unmapped": self.on_unmapped,
            "append_only": self.append_only, "apply_rank": self.apply_rank, "columns": [list(c) for c in self.columns],
            "identity_fields": list(self.identity_fields), "membership": self.membership,
            "warnings": [asdict(w) for w in self.warnings], "read": self.read,
        }, default=str)


@dataclass(frozen=True)
class Plan:
    plan_id: str
    created_at: datetime
    syncs: tuple[SyncPlan, ...] = field(default_factory=tuple)
    status: str = "planned"
    failed: tuple[SyncFailure, ...] = ()        # syncs that could not be planned

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
            "failed": [f.to_json() for f in self.failed],
            "totals": {
                key: sum(s[key] for s in syncs)
                for key in ("added", "changed", "removed", "unchanged", "retry", "invalid", "requests",
                            "data_points")
            } | {"estimated_seconds": round(sum(s.seconds for s in self.syncs), 3)},
            "syncs": syncs,
        }


