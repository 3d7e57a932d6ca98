"""Browsing a saved plan's rows and their exact payloads (read-only).

A plan's rows live in `plan_rows`, one per delta row, numbered by `seq`; each sync owns a
contiguous seq range (`SyncPlan.seq_min..seq_max`). Queries scan that range in growing
windows, so `show --limit 20` on a plan of millions of rows reads a few row groups, not the
whole table. Rows whose hash changed but no value did (`rehash`) are counted as unchanged
and never shown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from engine import strict_json
from engine.errors import UserError
from engine.plan import INVALID, REHASH, Plan, SyncPlan
from engine.state import State
from engine.state.plan_rows import ShownRow, SyncRows

KINDS = ("added", "changed", "removed", "invalid", "retry")
FIRST_WINDOW = 4096
EXPORT_CHUNK = 10_000


def kind_of(op: str, status: str, retry: bool) -> str:
    """The review category of a plan row: invalid, retry, or its op."""
    if status == INVALID:
        return "invalid"
    if retry:
        return "retry"
    return op


def _filters(op: str | None, key: str | None, field: str | None) -> tuple[list[str], list[Any]]:
    clauses = [f"status <> '{REHASH}'"]
    params: list[Any] = []
    if op == "invalid":
        clauses.append(f"status = '{INVALID}'")
    elif op == "retry":
        clauses.append(f"retry AND status <> '{INVALID}'")
    elif op:
        clauses.append(f"op = ? AND NOT retry AND status <> '{INVALID}'")
        params.append(op)
    if key is not None:
        clauses.append("key = ?")
        params.append(key)
    if field:
        clauses.append("list_contains(changed, ?)")
        params.append(field)
    return clauses, params


def select_syncs(plan: Plan, sync: str | None) -> list[SyncPlan]:
    if sync is None:
        return list(plan.syncs)
    chosen = [s for s in plan.syncs if s.name == sync]
    if not chosen:
        names = ", ".join(s.name for s in plan.syncs) or "none"
        raise UserError(f"--sync: plan {plan.plan_id} has no sync '{sync}' (it has: {names})")
    return chosen


def check_op(op: str | None) -> None:
    if op is not None and op not in KINDS:
        raise UserError(f"--op must be one of {', '.join(KINDS)}, not '{op}'")


def iter_plan_rows(state: State, plan: Plan, *, sync: str | None = None, op: str | None = None,
                   key: str | None = None, field: str | None = None,
                   limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Plan rows matching the filters, in plan order (sync by sync, seq order: a first run's rows landed
    from a warehouse in the order they were held, `plan_rows.in_any_order`), at most `limit`."""
    check_op(op)
    if state.empty:
        return
    clauses, params = _filters(op, key, field)
    remaining = limit if limit is not None and limit > 0 else None
    for sp in select_syncs(plan, sync):
        if sp.seq_max < sp.seq_min:
            continue
        start, window = sp.seq_min, FIRST_WINDOW
        while start <= sp.seq_max:
            if remaining is not None and remaining <= 0:
                return
            end = min(sp.seq_max + 1, start + window)
            cap = remaining if remaining is not None else EXPORT_CHUNK
            batch = SyncRows.of(state.con, plan.plan_id, sp).shown(
                clauses, params, start, end, cap)
            for r in batch:
                yield row_dict(r)
            if remaining is not None:
                remaining -= len(batch)
            if len(batch) == cap and (remaining is None or remaining > 0):
                start = int(batch[-1].seq) + 1          # the window had more: continue after the last row
                continue
            start = end
            window = min(window * 8, 1 << 22) if remaining is not None else max(window, EXPORT_CHUNK * 4)


def plan_rows(state: State, plan: Plan, *, sync: str | None = None, op: str | None = None,
              key: str | None = None, field: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Up to `limit` rows (0: all) matching the filters, with the exact payload each sends."""
    return list(iter_plan_rows(state, plan, sync=sync, op=op, key=key, field=field, limit=limit or None))


def count_rows(state: State, plan: Plan, *, sync: str | None = None, op: str | None = None,
               key: str | None = None, field: str | None = None) -> int:
    check_op(op)
    if state.empty:
        return 0
    clauses, params = _filters(op, key, field)
    total = 0
    for sp in select_syncs(plan, sync):
        total += SyncRows.of(state.con, plan.plan_id, sp).count(clauses, params)
    return total


def row_dict(r: ShownRow) -> dict[str, Any]:
    sync, key, op, status, retry, changed, new_row, old_row = (
        r.sync, r.key, r.op, r.status, r.retry, r.changed, r.new_row, r.old_row)
    channel, item, data_points, reason = r.channel, r.item, r.data_points, r.reason
    new = json.loads(new_row) if new_row else None
    old = json.loads(old_row) if old_row else None
    changed = list(changed or [])
    return {
        "sync": sync, "key": key, "kind": kind_of(op, status, bool(retry)), "op": op, "status": status,
        "retry": bool(retry), "changed": changed,
        "diff": {f: {"old": (old or {}).get(f), "new": (new or {}).get(f)} for f in changed},
        "new": new, "old": old, "channel": channel,
        "payload": json.loads(item) if item else None, "payload_json": item,
        "data_points": data_points, "reason": reason,
    }


# ------------------------------------------------------------------------------------------ export

CSV_COLUMNS = ("sync", "key", "kind", "op", "status", "changed", "diff", "channel", "payload", "data_points", "reason")


def csv_record(row: dict[str, Any]) -> list[str]:
    """One row as CSV cells: lists joined with ';', objects as compact JSON, the payload exactly as sent."""
    return [
        row["sync"], row["key"], row["kind"], row["op"], row["status"], ";".join(row["changed"]),
        strict_json.dumps(row["diff"], ensure_ascii=False, separators=(",", ":")) if row["diff"] else "",
        row["channel"] or "", row["payload_json"] or "", str(row["data_points"] or 0), row["reason"] or "",
    ]


def json_record(row: dict[str, Any]) -> dict[str, Any]:
    """One row for --format json/jsonl (everything but the duplicate payload text)."""
    return {k: v for k, v in row.items() if k != "payload_json"}


# ------------------------------------------------------------------------------------------ statistics


def numeric_deltas(state: State, plan: Plan, sp: SyncPlan, field: str, bins: int = 20) -> dict[str, Any] | None:
    """Distribution of new − old for a numeric field over the sync's changed rows, computed in DuckDB.

    None when fewer than two rows changed between numbers (e.g. a text field, or null ↔ number)."""
    if state.empty or sp.seq_max < sp.seq_min:
        return None
    return SyncRows.of(state.con, plan.plan_id, sp).numeric_deltas(field, bins)
