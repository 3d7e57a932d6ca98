"""Everything printed for people. The core never prints; the CLI calls these.

Colour only on a terminal (rich decides); plain, stable text otherwise, so logs and
golden files read the same."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from engine.plan import Plan, SyncPlan
from engine.runner import ApplyResult

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def n(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds else "0 s"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def plan_text(plan: Plan) -> list[str]:
    lines = [f"Plan {plan.plan_id}"]
    if not plan.has_changes:
        lines.append("No changes. Braze is in step with every selected model.")
        return lines
    for s in plan.syncs:
        lines += [""] + sync_text(s)
    blocked = plan.blocked
    lines.append("")
    if blocked:
        lines.append(f"Guards blocked {len(blocked)} check(s); `reflow apply` refuses this plan unless "
                     "you pass --allow-guard NAME.")
    else:
        lines.append(f"Saved. Apply exactly this plan with `reflow apply {plan.plan_id}`.")
    return lines


def sync_text(s: SyncPlan) -> list[str]:
    c = s.counts
    head = (f"{s.name} → {s.object} ({s.connection}): "
            f"+{n(c.added)} added  ~{n(c.changed)} changed  -{n(c.removed)} removed  "
            f"={n(c.unchanged)} unchanged  ↻{n(c.retry)} retry  ✗{n(c.invalid)} invalid")
    lines = [head]
    if not s.has_changes:
        lines.append("  No changes.")
        return lines
    reqs = ", ".join(f"{k}: {n(v)}" for k, v in sorted(s.requests.items())) or "none"
    lines.append(f"  Braze: {n(s.total_requests)} request(s) ({reqs}); ~{n(s.data_points)} data points; "
                 f"~{duration(s.seconds)} at the rate limit")
    if c.not_sent:
        lines.append(f"  {n(c.not_sent)} row(s) in the plan send nothing (recorded only)")
    for note in s.notes:
        lines.append(f"  note: {note}")
    if s.fields:
        lines.append("  changed fields:")
        for f in s.fields:
            sample = ""
            if f.samples:
                key, old, new = f.samples[0]
                sample = f"  e.g. {key}: {short(old)} → {short(new)}"
            nulled = f", {n(f.nulled)} became null" if f.nulled else ""
            lines.append(f"    {f.field}: {n(f.rows)} row(s){nulled}{sample}")
    for op in ("added", "changed", "removed"):
        for row in s.samples.get(op, []):
            lines.append(f"  {op} {row['key']}: {_sample_values(op, row)}")
    for key, reason in s.invalid_samples[:5]:
        lines.append(f"  invalid {key}: {reason}")
    if len(s.invalid_samples) > 5 or c.invalid > len(s.invalid_samples[:5]):
        lines.append(f"  … {n(c.invalid)} invalid row(s) in all; `reflow show --op invalid` lists them")
    for g in s.guards:
        lines.append(f"  guard {g.describe()}")
    return lines


def _sample_values(op: str, row: dict[str, Any]) -> str:
    values = row.get("values") or {}
    if op == "changed":
        parts = [f"{k} {short(v.get('old'), 24)} → {short(v.get('new'), 24)}" for k, v in values.items()]
    else:
        parts = [f"{k}={short(v, 24)}" for k, v in list(values.items())[:6]]
        if len(values) > 6:
            parts.append("…")
    text = ", ".join(parts)
    if row.get("note"):
        text += f"  ({row['note']})"
    return text


def print_plan(plan: Plan) -> None:
    for line in plan_text(plan):
        out.print(escape(line))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def apply_text(result: ApplyResult) -> list[str]:
    lines = []
    for s in result.syncs:
        line = (f"{s.name}: {n(s.acknowledged)} acknowledged, {n(s.rejected)} rejected, "
                f"{n(s.not_attempted + s.invalid)} pending; {n(s.requests)} request(s), "
                f"{n(s.data_points)} data points, {duration(s.seconds)}")
        lines.append(line)
        if s.error:
            lines.append(f"  stopped: {s.error}")
    if result.interrupted:
        lines.append("Interrupted: batches in flight were recorded; the rest stays pending for the next plan.")
    elif any(s.rejected for s in result.syncs):
        lines.append("Some rows were rejected; `reflow errors` shows Braze's reasons. They are retried next run.")
    return lines


def print_apply(result: ApplyResult) -> None:
    for line in apply_text(result):
        out.print(escape(line))


def print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        out.print(escape(line))


def error(message: str) -> None:
    err.print(escape(f"error: {message}"), style="red" if err.is_terminal else None)


def warning(message: str) -> None:
    err.print(escape(f"warning: {message}"), style="yellow" if err.is_terminal else None)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    if not rows:
        return ["(none)"]
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    for r in rows:
        lines.append("  ".join(_cell(r.get(c)).ljust(widths[c]) for c in columns).rstrip())
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return n(value)
    return str(value)
