"""Everything printed for people. The core never prints; the CLI calls these.

Colour, tables and progress bars only on a terminal (rich decides); plain, stable text
otherwise, so logs and golden files read the same. A plan is first laid out as blocks
(styled lines and tables); `plan_text` renders them as plain text, `print_plan` with rich.
rich is imported only when something may reach a terminal (`_plain`): a command writing to a log
or a pipe does not pay for it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from engine import strict_json
from engine.formatting import compact, duration, n, plural, short, size  # noqa: F401 - console.compact etc.
from engine.formatting import whole_or_one as _num
from engine.plan import PREVIEW, Plan, SyncPlan

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from engine.runner import ApplyResult

_CONSOLES: dict[str, Console] = {}


def _console(name: str) -> Console:
    """`out` (stdout) or `err` (stderr): the rich Console, made on first use."""
    found = _CONSOLES.get(name)
    if found is None:
        from rich.console import Console

        found = _CONSOLES[name] = Console(stderr=name == "err", highlight=False, soft_wrap=True)
    return found


def __getattr__(name: str) -> Any:
    """`console.out` and `console.err`, the rich Consoles, are made when first read."""
    if name in ("out", "err"):
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain(name: str) -> bool:
    """True when rich would certainly not treat the stream as a terminal (then no rich is needed): it
    is no tty and neither TTY_COMPATIBLE nor FORCE_COLOR, which rich obeys first, is set. Otherwise
    rich's Console decides, as it always did (`is_terminal`)."""
    if "TTY_COMPATIBLE" not in os.environ and "FORCE_COLOR" not in os.environ:
        stream: IO[str] | None = sys.stderr if name == "err" else sys.stdout
        isatty = getattr(stream, "isatty", None)
        try:
            if isatty is None or not isatty():
                return True
        except ValueError:              # a closed stream (rich answers False too)
            return True
    return not _console(name).is_terminal

OPS = ("added", "changed", "removed")
INVALID_SHOWN = 5
OP_STYLE = {"added": "green", "changed": "yellow", "removed": "red", "retry": "cyan", "invalid": "magenta"}


# ------------------------------------------------------------------------------------------ numbers


# numbers, durations and values read the same in every output: engine/formatting.py


# ------------------------------------------------------------------------------------------ blocks


@dataclass(frozen=True)
class TableBlock:
    """A table: plain text aligns columns with spaces; a terminal gets a rich Table."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    right: tuple[bool, ...]              # right-align this column (numbers)
    indent: int = 2


# the control codes rich's Text removes (rich.control.STRIP_CONTROL_CODES): a line reads the same plain or rich
_STRIPPED = dict.fromkeys((7, 8, 11, 12, 13))


@dataclass(frozen=True)
class Line:
    """One line of styled spans (text, rich style or None), control codes removed as rich removes them:
    `plain` for logs, `rich()` for a terminal (the same text)."""

    spans: tuple[tuple[str, str | None], ...] = ()

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.spans)

    def rich(self) -> Text:
        from rich.text import Text

        text = Text()
        for part, style in self.spans:
            text.append(part, style=style)
        return text


Block = Line | TableBlock


def _line(*parts: str | tuple[str, str]) -> Line:
    return Line(tuple((p[0].translate(_STRIPPED), p[1]) if isinstance(p, tuple) else (p.translate(_STRIPPED), None)
                      for p in parts))


def plan_blocks(plan: Plan) -> list[Block]:
    if not plan.has_changes and not plan.failed and not any(s.unmapped for s in plan.syncs):
        rows = sum(s.counts.total for s in plan.syncs)
        which = "a read-only preview" if plan.status == PREVIEW else f"plan {plan.plan_id}"
        return [_line(("No changes", "bold green"),
                      f" ({which}): Braze is in step with {plural(len(plan.syncs), 'sync')}, "
                      f"{plural(rows, 'row')} compared.")]
    blocks: list[Block] = [_line(("Plan preview", "bold")) if plan.status == PREVIEW
                           else _line(("Plan ", "bold"), (plan.plan_id, "bold"))]
    for s in plan.syncs:
        blocks.append(Line())
        blocks += sync_blocks(s)
    for f in plan.failed:
        blocks += [Line(), _line((f.sync, "bold"), ": ", ("not planned", "bold red"), f": {f.message}")]
    blocks.append(Line())
    totals = [s.to_json() for s in plan.syncs]
    to_send = sum(t["to_send"] for t in totals)       # invalid rows are already left out of it
    blocks.append(_line(
        "Total: ", f"{plural(to_send, 'row')} to send in {plural(sum(t['requests'] for t in totals), 'request')}, "
        f"~{n(sum(t['data_points'] for t in totals))} data points, "
        f"~{duration(sum(s.seconds for s in plan.syncs))} at the rate limit."))
    blocked = plan.blocked
    if blocked:
        names = " ".join(sorted({f"--allow-guard {g.name}" for _, g in blocked}))
        blocks.append(_line((f"Blocked by {plural(len(blocked), 'guard')}", "bold red"),
                            f": `reflow apply` refuses this plan unless you pass {names}."))
    elif plan.status == PREVIEW:
        blocks.append(_line("A read-only preview: computed on a private copy of the state, nothing locked, saved or "
                            "uploaded; it cannot be applied."))
    else:
        blocks.append(_line(f"Saved. Review rows with `reflow show {plan.plan_id}`; apply exactly this plan with "
                            f"`reflow apply {plan.plan_id}`."))
    return blocks


def _counts_parts(s: SyncPlan) -> list[str | tuple[str, str]]:
    c = s.counts
    parts: list[str | tuple[str, str]] = []
    for sign, label, value in (("+", "added", c.added), ("~", "changed", c.changed), ("-", "removed", c.removed),
                               ("=", "unchanged", c.unchanged), ("↻", "retry", c.retry),
                               ("✗", "invalid", c.invalid)):
        style = OP_STYLE.get(label, "dim") if value else "dim"
        parts += [(f"{sign}{n(value)} {label}", style), "  "]
    return parts[:-1]


def read_part(read: dict[str, Any]) -> str:
    """'; read 2,000 rows (41.0 KB), diff: hashes' — what the warehouse sent for a sync; "" for the default
    (a local diff reading the embedded DuckDB in this process), so the usual plan reads as it always did."""
    if not read or (read.get("diff") == "local" and read.get("bytes") is None and not read.get("note")):
        return ""
    nbytes = read.get("bytes")
    wire = f" ({size(int(nbytes))} over the wire)" if nbytes is not None else " (in process)"
    return f"; read {plural(int(read.get('rows', 0)), 'row')}{wire}, diff: {read.get('diff')}"


def sync_blocks(s: SyncPlan) -> list[Block]:
    c = s.counts
    head: list[str | tuple[str, str]] = [(s.name, "bold"), f" → {s.object} ({s.connection}): "]
    if not s.has_changes:
        return [_line(*head, ("no changes", "green"), f" ({plural(c.total, 'row')}{read_part(s.read)})"),
                *_unmapped_blocks(s)]
    head += _counts_parts(s)
    head += [f"  | {plural(s.total_requests, 'request')}, ~{n(s.data_points)} data points, "
             f"~{duration(s.seconds)} at the rate limit"]
    blocks: list[Block] = [_line(*head)]
    if read_part(s.read):
        blocks.append(_line(f"  {read_part(s.read)[2:]}"))
    if len(s.requests) > 1:
        blocks.append(_line("  requests: " + ", ".join(f"{k}: {n(v)}" for k, v in sorted(s.requests.items()))))
    if c.not_sent:
        blocks.append(_line(f"  {plural(c.not_sent, 'row')} in the plan send nothing (recorded only)"))
    for note in s.notes:
        blocks.append(_line(("  note: ", "yellow"), note))
    for warning in s.warnings:
        blocks.append(_line(("  warning: ", "yellow"), warning.describe()))
    blocks += _unmapped_blocks(s)
    if s.fields:
        rows = []
        for f in s.fields:
            sample = ""
            if f.samples:
                key, old, new = f.samples[0]
                sample = f"{key}: {short(old, 30)} → {short(new, 30)}"
            rows.append((field_label(f.field, f.column), n(f.rows), n(f.nulled), sample))
        blocks.append(TableBlock(("field", "rows changed", "became null", "e.g. old → new"), tuple(rows),
                                 (False, True, True, False)))
        for f in s.fields:
            if f.type_changes and f.type_sample:
                key, old_type, new_type, old, new = f.type_sample
                blocks.append(_line(("  warning: ", "yellow"),
                                    f"{f.field} changes type on {plural(f.type_changes, 'row')} ({old_type} → "
                                    f"{new_type}, e.g. {key}: {short(old, 24)} → {short(new, 24)}); Braze keeps "
                                    "the type it saw first for segmentation"))
    for op in OPS:
        for row in s.samples.get(op, []):
            blocks.append(_line("  ", (op, OP_STYLE[op]), f" {row['key']}: {_sample_values(op, row)}"))
    for key, reason in s.invalid_samples[:INVALID_SHOWN]:
        blocks.append(_line("  ", ("invalid", OP_STYLE["invalid"]), f" {key}: {reason}"))
    if c.invalid > min(len(s.invalid_samples), INVALID_SHOWN):
        blocks.append(_line(f"  … {plural(c.invalid, 'invalid row')} in all; "
                            f"`reflow show --sync {s.name} --op invalid` lists them"))
    for g in s.guards:
        verdict = ("BLOCKED", "bold red") if g.blocked else ("passed", "green")
        unit = "%" if g.name.endswith("_pct") else ""
        blocks.append(_line(f"  guard {g.name}: {_num(g.actual)}{unit} (limit {_num(g.limit)}{unit}) ", verdict))
    return blocks


def field_label(field: str, column: str | None) -> str:
    """A destination field, with the model column it reads where the names differ."""
    return field if column is None or column == field else f"{field} ← {column}"


def _unmapped_blocks(s: SyncPlan) -> list[Block]:
    """Fields the sync no longer maps: what Braze keeps, or what this plan unsets."""
    word = "profile" if s.object == "users" else "row"
    out: list[Block] = []
    for name, held in s.unmapped:
        if s.on_unmapped == "unset":
            out.append(_line(("  no longer mapped: ", "yellow"),
                             f"`{name}` is unset on {plural(held, word)} that hold a value (on_unmapped: unset)"))
        else:
            out.append(_line(("  no longer synced: ", "yellow"),
                             f"Braze keeps `{name}` on {plural(held, word)}; Reflow stops managing it "
                             "(on_unmapped: unset would clear it)"))
    return out


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


def blocks_text(blocks: Sequence[Block]) -> list[str]:
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, TableBlock):
            lines += _plain_table(b)
        else:
            lines.append(b.plain)
    return lines


def _plain_table(t: TableBlock) -> list[str]:
    widths = [max(len(c), *(len(r[i]) for r in t.rows)) for i, c in enumerate(t.columns)]

    def fmt(cells: Sequence[str]) -> str:
        out_cells = [c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, t.right, strict=True)]
        return (" " * t.indent + "  ".join(out_cells)).rstrip()

    return [fmt(t.columns)] + [fmt(r) for r in t.rows]


def print_blocks(blocks: Sequence[Block], console: Console | None = None) -> None:
    """`blocks` on stdout (or `console`): a rich rendering on a terminal, else the plain lines."""
    if console is None and _plain("out"):
        _write_lines(sys.stdout, blocks_text(blocks))
        return
    console = console or _console("out")
    if not console.is_terminal:
        _write_lines(console.file, blocks_text(blocks))
        return
    from rich.padding import Padding
    from rich.table import Table

    for b in blocks:
        if isinstance(b, TableBlock):
            table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False, header_style="bold dim")
            for col, right in zip(b.columns, b.right, strict=True):
                table.add_column(col, justify="right" if right else "left", overflow="fold")
            for r in b.rows:
                table.add_row(*r)
            console.print(Padding(table, (0, 0, 0, b.indent)))
        else:
            console.print(b.rich())


def _write_lines(file: IO[str], lines: Sequence[str]) -> None:
    for line in lines:
        file.write(line + "\n")
    file.flush()


def plan_text(plan: Plan) -> list[str]:
    """The plan as plain text: what a log or a non-terminal shows (golden-tested)."""
    return blocks_text(plan_blocks(plan))


def print_plan(plan: Plan) -> None:
    print_blocks(plan_blocks(plan))


def print_json(data: Any) -> None:
    sys.stdout.write(strict_json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


def print_text(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------ apply


def apply_blocks(result: ApplyResult) -> list[Block]:
    blocks: list[Block] = []
    for s in result.syncs:
        if s.blocked:
            blocks.append(_line((s.name, "bold"), ": ", ("blocked by a guard", "bold red"), f": {s.blocked}"))
            continue
        pending = s.not_attempted + s.unknown + s.invalid + s.waiting
        blocks.append(_line(
            (s.name, "bold"), ": ",
            (f"{n(s.acknowledged)} acknowledged", "green" if s.acknowledged else "dim"), ", ",
            (f"{n(s.rejected)} rejected", "red" if s.rejected else "dim"), ", ",
            (f"{n(pending)} pending", "yellow" if pending else "dim"),
            f"; {plural(s.requests, 'request')}, {n(s.data_points)} data points, {duration(s.seconds)}"
            + (f" ({n(round(s.acknowledged / s.seconds))} rows/s)" if s.seconds >= 1 and s.acknowledged else "")))
        if s.skipped:
            blocks.append(_line(f"  {plural(s.skipped, 'row')} recorded without sending"))
        if s.invalid:
            blocks.append(_line(f"  {plural(s.invalid, 'invalid row')} not sent; `reflow show --op invalid` "
                                "lists them with the rule each breaks"))
        if s.dropped:
            blocks.append(_line(f"  {plural(s.dropped, 'row')} sent without a field Braze would refuse; "
                                "`reflow errors` lists what was left out"))
        if s.noted:
            blocks.append(_line(f"  {plural(s.noted, 'row')} sent with a note; `reflow errors` lists them"))
        if s.waiting:
            blocks.append(_line(f"  {plural(s.waiting, 'row')} waiting for the user's profile in Braze (missing_users: "
                                "wait): sent once it exists; `reflow status` counts them"))
        if s.unknown:
            blocks.append(_line(f"  {plural(s.unknown, 'row')} sent without a usable answer: Braze may or may not "
                                "have applied them, so the next plan sends their current values again"))
        if s.error:
            blocks.append(_line(("  stopped: ", "bold red"), s.error))
        elif s.pending and s.reason and (s.not_attempted or s.unknown):
            blocks.append(_line(("  why: ", "yellow"), s.reason))
    for name, message in result.failed:
        blocks.append(_line((name, "bold"), ": ", ("not planned", "bold red"), f": {message}"))
    if result.interrupted:
        blocks.append(_line(("Interrupted", "bold yellow"),
                            ": batches in flight were recorded; the rest stays pending for the next plan."))
    elif any(s.rejected for s in result.syncs):
        blocks.append(_line("Some rows were rejected; `reflow errors` shows Braze's reasons and the payloads sent. "
                            "They are retried next run."))
    return blocks


def apply_text(result: ApplyResult) -> list[str]:
    return blocks_text(apply_blocks(result))


def print_apply(result: ApplyResult) -> None:
    print_blocks(apply_blocks(result))


# ------------------------------------------------------------------------------------------ lines, tables


def print_lines(lines: Sequence[str]) -> None:
    from rich.markup import escape

    out = _console("out")
    for line in lines:
        out.print(escape(line))


def error(message: str) -> None:
    _say(f"error: {message}", "red")


def warning(message: str) -> None:
    _say(f"warning: {message}", "yellow")


def _say(message: str, style: str) -> None:
    """One message on stderr, in `style` on a terminal."""
    from rich.markup import escape

    err = _console("err")
    err.print(escape(message), style=style if err.is_terminal else None)


def table_block(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> TableBlock:
    """The one table of dict rows: numbers (not booleans, which read yes/no) right-aligned."""
    right = tuple(all(r.get(c) is None or (isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool))
                      for r in rows) for c in columns)
    return TableBlock(tuple(columns), tuple(tuple(_cell(r.get(c)) for c in columns) for r in rows), right, indent=0)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """The table as plain lines ("(none)" without rows)."""
    return blocks_text([table_block(rows, columns)]) if rows else ["(none)"]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return n(value)
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """The table on the terminal (a rich table there, else the plain lines)."""
    if not rows:
        print_lines(["(none)"])
        return
    print_blocks([table_block(rows, columns)])


# ------------------------------------------------------------------------------------------ progress

PlanProgress = Callable[[str, int, int], None]               # sync, rows done, rows total
ApplyProgress = Callable[[str, int, int, int], None]         # sync, rows done, rows total, requests


@dataclass
class LineProgress:
    """Quiet progress for logs (stderr not a terminal): one line every `every` seconds, or at each
    10% step once the work has run for `after` seconds. Short runs print nothing."""

    verb: str
    every: float = 10.0
    after: float = 5.0
    clock: Callable[[], float] = time.monotonic
    write: Callable[[str], None] = field(default_factory=lambda: _write_stderr)
    _start: dict[str, float] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)
    _decile: dict[str, int] = field(default_factory=dict)

    def __call__(self, sync: str, done: int, total: int, requests: int | None = None) -> None:
        now = self.clock()
        start = self._start.setdefault(sync, now)
        last = self._last.setdefault(sync, start)
        decile = (10 * done // total) if total else 10
        new_step = decile > self._decile.get(sync, 0)
        if not (now - last >= self.every or (new_step and now - start >= self.after)):
            return
        self._last[sync] = now
        self._decile[sync] = decile
        self.write(progress_line(self.verb, sync, done, total, requests, now - start) + "\n")


def _write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def progress_line(verb: str, sync: str, done: int, total: int, requests: int | None, elapsed: float) -> str:
    pct = f" ({100 * done // total}%)" if total else ""
    parts = [f"{verb} {sync}: {n(done)}/{n(total)} rows{pct}"]
    if requests is not None:
        parts.append(plural(requests, "request"))
    if elapsed > 0 and done:
        rate = done / elapsed
        parts.append(f"{n(round(rate))} rows/s")
        if total > done:
            parts.append(f"ETA {duration((total - done) / rate)}")
    return ", ".join(parts)


@contextmanager
def progress(verb: str) -> Iterator[Callable[..., None]]:
    """A progress callback for planning (sync, done, total) or applying (sync, done, total, requests):
    rich bars on a terminal, a line now and then in logs."""
    if _plain("err"):
        yield LineProgress(verb)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                    TextColumn("{task.fields[extra]}"), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=_console("err"), transient=False)
    tasks: dict[str, TaskID] = {}
    started: dict[str, float] = {}

    def update(sync: str, done: int, total: int, requests: int | None = None) -> None:
        if sync not in tasks:
            tasks[sync] = bars.add_task(f"{verb} {sync}", total=total or None, extra="", rate="")
            started[sync] = time.monotonic()
        elapsed = time.monotonic() - started[sync]
        rate = f"{n(round(done / elapsed))} rows/s" if elapsed > 0.2 and done else ""
        extra = plural(requests, "request") if requests is not None else ""
        bars.update(tasks[sync], completed=done, total=total or None, extra=extra, rate=rate)

    with bars:
        yield update


# ------------------------------------------------------------------------------------------ show, errors, history


def row_summary(row: dict[str, Any], width: int = 48) -> str:
    """What a plan row changes, in one line: field old → new for changed rows, its values otherwise."""
    if row.get("diff"):
        return ", ".join(f"{f} {short(v['old'], width // 2)} → {short(v['new'], width // 2)}"
                         for f, v in row["diff"].items())
    values = row.get("old") if row.get("op") == "removed" else row.get("new")
    if not values:
        return ""
    parts = [f"{k}={short(v, width // 2)}" for k, v in list(values.items())[:5]]
    return ", ".join(parts) + (", …" if len(values) > 5 else "")


def show_blocks(plan_id: str, rows: Sequence[dict[str, Any]], matching: int) -> list[Block]:
    if not rows:
        return [_line(f"Plan {plan_id}: no rows match.")]
    blocks: list[Block] = [_line(("Plan ", "bold"), (plan_id, "bold"),
                                 f": {plural(len(rows), 'row')} of {n(matching)} matching")]
    for r in rows:
        kind = r["kind"]
        blocks.append(_line((r["sync"], "bold"), " ", (kind, OP_STYLE.get(kind, "")), f" {r['key']}: ",
                            row_summary(r)))
        if r.get("reason"):
            blocks.append(_line(("  reason: ", "magenta" if kind == "invalid" else "dim"), r["reason"]))
        payload = r.get("payload_json")
        blocks.append(_line(("  payload: ", "dim"), payload if payload else f"(nothing sent: {r['status']})"))
    return blocks


def errors_blocks(rows: Sequence[dict[str, Any]], limit: int) -> list[Block]:
    if not rows:
        return [_line(("No rejected rows.", "green"))]
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    more = " (the most recent; --limit N shows more)" if len(rows) >= limit else ""
    blocks: list[Block] = [_line((plural(len(rows), "rejected row"), "bold red"), more)]
    blocks.append(TableBlock(("reason", "rows"), tuple((k, n(v)) for k, v in
                                                      sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
                             (False, True)))
    for r in rows:
        blocks.append(_line((r["sync"], "bold"), f" {r['key']} (run {r['run_id']}, {_when(r.get('at'))}): ",
                            (r["reason"], "red")))
        blocks.append(_line(("  sent: ", "dim"), r["item"] or "-"))
    return blocks


def history_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs as table rows: duration, pending, and a plain outcome."""
    out_rows = []
    for r in runs:
        finished = r.get("finished_at")
        seconds = (finished - r["started_at"]).total_seconds() if finished else None
        out_rows.append({
            "run": r["run_id"], "sync": r["sync"], "started": _when(r["started_at"]),
            "duration": duration(seconds) if seconds is not None else "-",
            "outcome": r["status"], "acknowledged": r["acknowledged"], "rejected": r["rejected"],
            "pending": r["not_attempted"], "recorded": r["skipped"], "requests": r["requests"],
            "data points": r["data_points"],
        })
    return out_rows


def live_lines(view: Any) -> list[str]:
    """The head of `status`/`history` while another run holds the state: who, how far, and as of when
    (a state.live.LiveView)."""
    h = view.holder
    lines = [f"`reflow {h.get('command')}` is running (pid {h.get('pid')} on {h.get('host')}, started "
             f"{h.get('started_at')}); figures as of {view.at}, from its status file"]
    p = view.progress
    if p:
        lines.append(f"  sending {p['sync']}: {n(p['done'])} of {n(p['total'])} rows done, "
                     f"{plural(p['requests'], 'request')}")
    return lines


HISTORY_COLUMNS = ("run", "sync", "started", "duration", "outcome", "acknowledged", "rejected", "pending",
                   "recorded", "requests", "data points")


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if hasattr(value, "strftime") else str(value or "-")


# ------------------------------------------------------------------------------------------ machine forms


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds")) + "Z"
    return str(value)


def run_json(r: dict[str, Any]) -> dict[str, Any]:
    """One run for `reflow history --json`: the stored columns, times as ISO 8601 UTC, plus duration."""
    finished = r.get("finished_at")
    seconds = (finished - r["started_at"]).total_seconds() if finished and r.get("started_at") else None
    return {**r, "started_at": _iso(r.get("started_at")), "finished_at": _iso(finished),
            "duration_seconds": round(seconds, 3) if seconds is not None else None,
            "pending": r.get("not_attempted", 0)}


def error_json(r: dict[str, Any]) -> dict[str, Any]:
    """One rejected row for `reflow errors --json`: the payload sent, parsed, next to its text."""
    item = r.get("item")
    try:
        payload = json.loads(item) if item else None
    except ValueError:
        payload = None
    return {"run_id": r["run_id"], "sync": r["sync"], "key": r["key"], "reason": r["reason"],
            "payload": payload, "payload_json": item, "at": _iso(r.get("at"))}


def print_jsonl(records: Iterable[Any]) -> None:
    for record in records:
        sys.stdout.write(strict_json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_csv(header: Sequence[str], records: Iterable[Sequence[Any]]) -> None:
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        writer.writerow(record)
    sys.stdout.flush()


def note(message: str) -> None:
    """A side remark (e.g. a file written) on stderr, so stdout stays the command's output."""
    _say(message, "dim")


# ------------------------------------------------------------------------------------------ check


def check_blocks(report: Any) -> list[Block]:
    """`reflow check` (a destinations.braze.check.CheckReport): per connection its endpoint and key,
    then each permission → ok / missing / not needed / not checked, then what to do."""
    blocks: list[Block] = []
    for c in report.connections:
        key_style = "green" if c.key == "accepted" else "red"
        blocks += [_line((c.name, "bold"), f"  {c.base_url}  API key: ", (c.key, key_style)),
                   TableBlock(("permission", "request", "needed by", "result"),
                              tuple((p.permission, p.endpoint or "-", ", ".join(p.needed_by) or "-",
                                     p.result + (f" ({p.detail})" if p.detail else "")) for p in c.permissions),
                              (False, False, False, False))]
        blocks += [_line(("  problem: ", "red"), problem) for problem in c.problems]
        blocks.append(Line())
    if report.ok:
        blocks.append(_line(("OK", "bold green"), ": every connection answers, and its key holds every permission "
                                                   "the syncs need."))
        return blocks
    missing = report.missing
    if missing:
        names = ", ".join(f"{p} ({c})" for c, p in missing)
        blocks.append(_line((f"Missing {plural(len(missing), 'permission')}", "bold red"),
                            f": {names}. Braze keys cannot be edited: create a key with these permissions "
                            "and point the connection's api_key at it."))
    else:
        blocks.append(_line(("Not ready", "bold red"), ": see the problems above."))
    return blocks


def print_check(report: Any) -> None:
    print_blocks(check_blocks(report))
