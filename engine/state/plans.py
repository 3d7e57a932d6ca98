"""Saved plans: the tables `plans` (one per `reflow plan`) and `plan_syncs` (one per planned sync).

Their rows are `plan_rows.py`'s. `save_plan` makes a plan the one `apply` takes (the earlier planned one
is superseded); `load_plan` reads one back as the `plan.Plan` it was.
"""

from __future__ import annotations

import json
from datetime import datetime

from engine.errors import PlanError
from engine.plan import Counts, FieldStat, GuardResult, Plan, PlanStatus, SyncFailure, SyncPlan, ValueWarning
from engine.state.store import DB, State


def save_plan(state: State, plan: Plan, created_by: str = "reflow") -> None:
    """Record `plan` (its rows are written already) as the latest, superseding the one planned before."""
    with state.transaction() as con:
        con.execute(f"UPDATE {DB}.plans SET status = ? WHERE status = ?", [PlanStatus.SUPERSEDED, PlanStatus.PLANNED])
        con.execute(f"INSERT INTO {DB}.plans (plan_id, created_at, status, created_by, seq) "
                    f"SELECT ?, ?, ?, ?, coalesce(max(seq), 0) + 1 FROM {DB}.plans",
                    [plan.plan_id, plan.created_at, PlanStatus.PLANNED, created_by])
        for s in plan.syncs:
            con.execute(
                f"INSERT INTO {DB}.plan_syncs (plan_id, sync, snapshot_version, fingerprint, counts, estimate, "
                "guards, fields, info, seq_min, seq_max, identity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [plan.plan_id, s.name, s.snapshot_version, s.fingerprint, s.counts_json(),
                 json.dumps({"requests": s.requests, "data_points": s.data_points, "seconds": s.seconds}),
                 json.dumps([g.__dict__ for g in s.guards]), json.dumps([f.to_row() for f in s.fields], default=str),
                 s.info_json(), s.seq_min, s.seq_max, json.dumps(s.identity, sort_keys=True)],
            )
        if plan.failed:
            con.execute(f"UPDATE {DB}.plans SET failed = ? WHERE plan_id = ?",
                        [json.dumps([f.to_json() for f in plan.failed]), plan.plan_id])
    state.prune_plans()


def load_plan(state: State, plan_id: str | None = None) -> Plan:
    """A saved plan (the latest when `plan_id` is None), as `save_plan` recorded it."""
    if state.empty:
        raise PlanError("no plan found; run `reflow plan` first")
    plan_id = plan_id or state.latest_plan_id()
    if plan_id is None:
        raise PlanError("no plan found; run `reflow plan` first")
    head = state.con.execute(f"SELECT plan_id, created_at, status, failed FROM {DB}.plans WHERE plan_id = ?",
                             [plan_id]).fetchone()
    if head is None:
        raise PlanError(f"unknown plan '{plan_id}'; `reflow history` lists recent plans")
    rows = state.con.execute(
        f"SELECT sync, snapshot_version, fingerprint, counts, estimate, guards, fields, info, seq_min, seq_max, "
        f"identity FROM {DB}.plan_syncs WHERE plan_id = ? ORDER BY rowid", [plan_id]).fetchall()
    syncs = []
    for (name, version, fingerprint, counts, estimate, guards, fields, info_json, seq_min, seq_max,
         identity) in rows:
        est, info = json.loads(estimate), json.loads(info_json)
        syncs.append(SyncPlan(
            name=name, model=info["model"], object=info["object"], connection=info["connection"],
            counts=Counts(**json.loads(counts)), requests=est["requests"], data_points=est["data_points"],
            seconds=est["seconds"], guards=tuple(GuardResult(**g) for g in json.loads(guards)),
            fields=tuple(FieldStat.from_row(f) for f in json.loads(fields)),
            samples=info["samples"], invalid_samples=tuple(tuple(x) for x in info["invalid_samples"]),
            snapshot_version=version, snapshot_rows=info["snapshot_rows"], fingerprint=fingerprint,
            seq_min=seq_min, seq_max=seq_max, first_run=info["first_run"], notes=tuple(info["notes"]),
            identity=json.loads(identity) if identity else {}, restart=info.get("restart"),
            unmapped=tuple((f, c) for f, c in info.get("unmapped", [])), on_unmapped=info.get("on_unmapped", "keep"),
            append_only=bool(info.get("append_only")), apply_rank=int(info.get("apply_rank", 1)), columns=tuple((f, t) for f, t in info.get("columns", [])),
            identity_fields=tuple(info.get("identity_fields", [])), membership=bool(info.get("membership")),
            warnings=tuple(ValueWarning(**w) for w in info.get("warnings", [])), read=dict(info.get("read", {})),
        ))
    created = head[1] if isinstance(head[1], datetime) else datetime.fromisoformat(str(head[1]))
    failed = tuple(SyncFailure(**f) for f in json.loads(head[3] or "[]"))
    return Plan(plan_id=head[0], created_at=created, syncs=tuple(syncs), status=head[2], failed=failed)
