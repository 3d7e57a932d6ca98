"""A plan as compact Markdown, for a pull-request or CI comment (`reflow plan --format markdown`).

    this change would update `loyalty_tier` for 4,812 Braze users, ~9.6k data points
"""

from __future__ import annotations

from engine.formatting import compact as _compact
from engine.formatting import duration as _duration
from engine.formatting import n as _n
from engine.formatting import short
from engine.plan import PREVIEW, Plan, SyncPlan

FIELDS_NAMED = 3
PREVIEW_NOTE = ("A read-only preview against the stored state (`reflow plan --read-only`): nothing was locked, "
                "saved or uploaded. After merge, the scheduled `reflow run` plans and sends it.")

# object -> (noun for one row, for several, verb for added rows)
NOUNS = {
    "users": ("Braze user", "Braze users", "create"),
    "events": ("event", "events", "send"),
    "purchases": ("purchase", "purchases", "send"),
    "catalog_items": ("catalog item", "catalog items", "add"),
    "subscription_groups": ("subscription state", "subscription states", "set"),
    "user_deletes": ("Braze user", "Braze users", "delete"),
    "cohorts": ("cohort member", "cohort members", "add"),
}


def _code_list(names: list[str]) -> str:
    quoted = [f"`{x}`" for x in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def sync_sentence(s: SyncPlan) -> str:
    """What one sync would do, in words: "update `loyalty_tier` for 4,812 Braze users, ~9.6k data points"."""
    one, many, add_verb = NOUNS.get(s.object, (f"{s.object} row", f"{s.object} rows", "add"))

    def rows(count: int) -> str:
        return f"{_n(count)} {one if count == 1 else many}"

    c = s.counts
    parts = []
    if c.changed:
        named = [f.field for f in s.fields[:FIELDS_NAMED]]
        more = len(s.fields) - len(named)
        fields = _code_list(named) if named else "values"
        if more:
            fields += f" (+{more} more field{'s' if more > 1 else ''})"
        parts.append(f"update {fields} for {rows(c.changed)}")
    if c.added:
        parts.append(f"{add_verb} {rows(c.added)}")
    if c.removed:
        parts.append(f"remove {rows(c.removed)}")
    if c.retry:
        parts.append(f"retry {_n(c.retry)} rejected row{'s' if c.retry != 1 else ''}")
    if c.invalid:
        parts.append(f"hold back {_n(c.invalid)} invalid row{'s' if c.invalid != 1 else ''}")
    text = ", ".join(parts) if parts else "no changes"
    if s.data_points:
        text += f", ~{_compact(s.data_points)} data points"
    if c.not_sent:
        text += f" ({_n(c.not_sent)} recorded without sending)"
    return text


def plan_markdown(plan: Plan, *, show_command: str = "reflow show") -> str:
    preview = plan.status == PREVIEW
    lines = ["### Reflow plan (preview)" if preview else f"### Reflow plan `{plan.plan_id}`", ""]
    if plan.failed:
        lines.append("> [!WARNING]")
        lines += [f"> **{f.sync}** was not planned: {f.message}  " for f in plan.failed]
        lines.append("")
    if not plan.has_changes and not any(s.unmapped for s in plan.syncs):
        total = sum(s.counts.total for s in plan.syncs)
        lines.append(f"No changes: Braze is in step with {len(plan.syncs)} sync(s) ({_n(total)} rows compared).")
        if preview:
            lines += ["", PREVIEW_NOTE]
        return "\n".join(lines) + "\n"
    blocked = plan.blocked
    if blocked:
        lines.append("> [!CAUTION]")
        lines.append("> Blocked by " + ", ".join(f"`{name}.{g.name}` ({g.describe()})" for name, g in blocked)
                     + ". `reflow apply` refuses it without `--allow-guard`.")
        lines.append("")
    changed = [s for s in plan.syncs if s.has_changes]
    lines.append("This change would:")
    lines.append("")
    for s in changed:
        lines.append(f"- **{s.name}**: {sync_sentence(s)}")
        if s.restart:
            lines.append(f"  - {s.restart}")
    for s in plan.syncs:
        for name, held in s.unmapped:
            what = (f"`{name}` is unset on {_n(held)} rows (on_unmapped: unset)" if s.on_unmapped == "unset"
                    else f"no longer synced: Braze keeps `{name}` on {_n(held)} rows")
            lines.append(f"- **{s.name}**: {what}")
    for s in plan.syncs:
        for w in s.warnings:
            lines.append(f"- **{s.name}**: ⚠ {w.describe()}")
    quiet = [s.name for s in plan.syncs if not s.has_changes]
    if quiet:
        lines.append(f"- no changes: {', '.join(quiet)}")
    lines.append("")
    dp = sum(s.data_points for s in plan.syncs)
    reqs = sum(s.total_requests for s in plan.syncs)
    secs = sum(s.seconds for s in plan.syncs)
    lines.append(f"Braze cost: **~{_compact(dp)} data points** ({_n(dp)}), {_n(reqs)} request(s), "
                 f"~{_duration(secs)} at the rate limit.")
    lines.append("")
    lines.append("| sync | object | added | changed | removed | unchanged | retry | invalid | requests | data points |")
    lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in plan.syncs:
        c = s.counts
        lines.append(f"| {s.name} | {s.object} | {_n(c.added)} | {_n(c.changed)} | {_n(c.removed)} | "
                     f"{_n(c.unchanged)} | {_n(c.retry)} | {_n(c.invalid)} | {_n(s.total_requests)} | "
                     f"{_n(s.data_points)} |")
    fields = [(s, f) for s in changed for f in s.fields]
    if fields:
        lines += ["", "<details><summary>Changed fields</summary>", "",
                  "| sync | field | rows | became null | e.g. |", "|---|---|--:|--:|---|"]
        for s, f in fields:
            sample = ""
            if f.samples:
                key, old, new = f.samples[0]
                sample = f"`{key}`: {_cell(old)} → {_cell(new)}"
            name = f"`{f.field}`" + (f" ← `{f.column}`" if f.column and f.column != f.field else "")
            if f.type_changes:
                sample += f" ⚠ type changes on {_n(f.type_changes)} row(s)"
            lines.append(f"| {s.name} | {name} | {_n(f.rows)} | {_n(f.nulled)} | {sample} |")
        lines += ["", "</details>"]
    guards = [(s.name, g) for s in plan.syncs for g in s.guards]
    if guards:
        passed = sum(1 for _, g in guards if not g.blocked)
        lines += ["", f"Guards: {passed} of {len(guards)} passed."]
    lines += ["", PREVIEW_NOTE if preview else f"Review rows and payloads: `{show_command} {plan.plan_id}`."]
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    text = short(value, 40, strings_as_json=True)
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"
