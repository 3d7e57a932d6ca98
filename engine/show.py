"""Browsing a saved plan's rows and their exact payloads (read-only)."""

from __future__ import annotations

import json
from typing import Any

from engine.plan import Plan
from engine.state import DB, State


def plan_rows(state: State, plan: Plan, *, sync: str | None = None, op: str | None = None,
              key: str | None = None, field: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    clauses = ["plan_id = ?"]
    params: list[Any] = [plan.plan_id]
    if sync:
        clauses.append("sync = ?")
        params.append(sync)
    if op == "invalid":
        clauses.append("status = 'invalid'")
    elif op == "retry":
        clauses.append("retry")
    elif op:
        clauses.append("op = ? AND NOT retry AND status <> 'invalid'")
        params.append(op)
    if key:
        clauses.append("key = ?")
        params.append(key)
    if field:
        clauses.append("list_contains(changed, ?)")
        params.append(field)
    cur = state.con.execute(
        f"SELECT sync, key, op, status, retry, changed, new_row, old_row, channel, item, data_points, reason "
        f"FROM {DB}.plan_rows WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT {int(limit)}", params)
    out = []
    for r in cur.fetchall():
        out.append({
            "sync": r[0], "key": r[1], "op": r[2], "status": r[3], "retry": r[4], "changed": list(r[5] or []),
            "new": json.loads(r[6]) if r[6] else None, "old": json.loads(r[7]) if r[7] else None,
            "channel": r[8], "payload": json.loads(r[9]) if r[9] else None, "payload_json": r[9],
            "data_points": r[10], "reason": r[11],
        })
    return out
