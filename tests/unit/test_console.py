"""What people see: the plan as plain text (logs) and with rich (terminal), apply outcomes, progress."""

from __future__ import annotations

import dataclasses
import io
from datetime import datetime

from rich.console import Console

from engine import console
from engine.plan import Counts, FieldStat, GuardResult, Plan, SyncPlan
from engine.runner import ApplyResult, SyncOutcome


def users_plan(*, changed: int = 4812, blocked: bool = False, invalid: int = 0) -> Plan:
    sp = SyncPlan(
        name="braze_users", model="braze_users", object="users", connection="braze",
        counts=Counts(total=100_000, added=3, changed=changed, removed=0, unchanged=100_000 - changed - 3,
                      invalid=invalid),
        requests={"POST /users/track": 65}, data_points=9_624, seconds=0.065,
        guards=(GuardResult("max_changed_pct", 5.0, 4.81, False),
                GuardResult("max_removed", 0.0, 3.0 if blocked else 0.0, blocked)),
        fields=(FieldStat("loyalty_tier", changed, 12, (("c_1", "gold", "platinum"),)),
                FieldStat("lifetime_value", 7, 0, (("c_2", 10.5, 12.25),))),
        samples={"changed": [{"key": "c_1", "values": {"loyalty_tier": {"old": "gold", "new": "platinum"}},
                              "payload": {"external_id": "c_1", "loyalty_tier": "platinum"}, "note": None}]},
        invalid_samples=tuple((f"c_bad{i}", "email: not an email address") for i in range(invalid)),
        snapshot_version=3, snapshot_rows=100_000, fingerprint="0123456789abcdef",
    )
    return Plan("plan_20260101T000000_0001", datetime(2026, 1, 1), (sp,))


def test_plan_text_has_summary_field_table_samples_and_guards():
    lines = console.plan_text(users_plan())
    text = "\n".join(lines)
    assert lines[0] == "Plan plan_20260101T000000_0001"
    head = lines[2]
    assert head.startswith("braze_users → users (braze): +3 added  ~4,812 changed  -0 removed")
    assert "65 requests, ~9,624 data points, ~65 ms at the rate limit" in head
    table = [line for line in lines if line.startswith("  ") and ("rows changed" in line or "c_1:" in line
                                                                  or "c_2:" in line)]
    assert table[0].split() == ["field", "rows", "changed", "became", "null", "e.g.", "old", "→", "new"]
    assert table[1].split()[:3] == ["loyalty_tier", "4,812", "12"]
    # numbers are right-aligned: both rows end their count in the same column
    assert table[1].index("4,812") + 5 == table[2].index("7") + 1
    assert "  changed c_1: loyalty_tier 'gold' → 'platinum'" in lines
    assert "  guard max_changed_pct: 4.8% (limit 5%) passed" in lines
    assert lines[-1].startswith("Saved. Review rows with `reflow show plan_20260101T000000_0001`")
    assert "\x1b[" not in text


def test_no_change_plan_is_one_line():
    plan = users_plan(changed=0)
    quiet = dataclasses.replace(plan.syncs[0], counts=Counts(total=10, unchanged=10), fields=(), samples={})
    lines = console.plan_text(Plan("plan_x", datetime(2026, 1, 1), (quiet,)))
    assert lines == ["No changes (plan plan_x): Braze is in step with 1 sync, 10 rows compared."]


def test_blocked_guard_and_invalid_rows_are_named():
    lines = console.plan_text(users_plan(blocked=True, invalid=7))
    assert "  guard max_removed: 3 (limit 0) BLOCKED" in lines
    assert sum(1 for line in lines if line.startswith("  invalid c_bad")) == console.INVALID_SHOWN
    assert any("7 invalid rows in all; `reflow show --sync braze_users --op invalid`" in line for line in lines)
    assert lines[-1].startswith("Blocked by 1 guard: `reflow apply` refuses this plan unless you pass "
                                "--allow-guard max_removed")


def test_terminal_gets_colour_and_a_rich_table_logs_get_plain_text():
    buf = io.StringIO()
    tty = Console(file=buf, force_terminal=True, color_system="standard", width=160, highlight=False)
    console.print_blocks(console.plan_blocks(users_plan(blocked=True)), tty)
    coloured = buf.getvalue()
    assert "\x1b[" in coloured and "BLOCKED" in coloured and "loyalty_tier" in coloured
    buf = io.StringIO()
    console.print_blocks(console.plan_blocks(users_plan()), Console(file=buf, force_terminal=False))
    assert buf.getvalue().splitlines() == console.plan_text(users_plan())


def test_apply_outcome_per_sync():
    result = ApplyResult("plan_x", [SyncOutcome("braze_users", "run_1", acknowledged=4812, rejected=2,
                                                requests=65, data_points=9600, seconds=2.0, skipped=3)])
    lines = console.apply_text(result)
    assert lines[0] == ("braze_users: 4,812 acknowledged, 2 rejected, 0 pending; 65 requests, 9,600 data points, "
                        "2.0 s (2,406 rows/s)")
    assert lines[1] == "  3 rows recorded without sending"
    assert lines[-1].startswith("Some rows were rejected; `reflow errors`")


def test_line_progress_is_quiet_for_short_runs_and_periodic_for_long_ones():
    now = [0.0]
    written: list[str] = []
    progress = console.LineProgress("sending", clock=lambda: now[0], write=written.append)
    for done in range(0, 101, 10):            # a 1-second run: nothing
        now[0] = done / 100
        progress("quick", done, 100, done)
    assert written == []
    for step in range(0, 61):                 # 60 s, 1% per second
        now[0] = 100.0 + step
        progress("long", step * 1000, 100_000, step * 14)
    # every 10% step once 5 s have passed, and at least every 10 s: here one line per 10 s
    assert len(written) == 6
    assert written[0].rstrip() == "sending long: 10,000/100,000 rows (10%), 140 requests, 1,000 rows/s, ETA 90.0 s"


def test_compact_numbers():
    assert [console.compact(x) for x in (999, 1000, 9624, 9_600_000)] == ["999", "1k", "9.6k", "9.6M"]


def test_one_table_renderer_booleans_read_yes_no_left_aligned_numbers_right() -> None:
    rows = [{"sync": "a", "rows": 5, "blocked": True}, {"sync": "bb", "rows": 12345, "blocked": False}]
    lines = console.table(rows, ["sync", "rows", "blocked"])
    assert lines == ["sync    rows  blocked", "a          5  yes", "bb    12,345  no"]
    block = console.table_block(rows, ["sync", "rows", "blocked"])
    assert block.right == (False, True, False)       # print_table renders this same block


def test_a_line_reads_as_rich_reads_it() -> None:
    """Plain lines are laid out without rich, with the control codes rich's Text removes removed too."""
    from rich.control import strip_control_codes
    from rich.text import Text

    raw = "a\rb\x07c\x08d\x0be\x0cf\x1bg\th é"
    line = console._line(("bold", "bold"), raw, (raw, "red"))
    rich_text = Text()
    rich_text.append("bold", style="bold")
    rich_text.append(raw)
    rich_text.append(raw, style="red")
    assert line.plain == rich_text.plain == "bold" + 2 * strip_control_codes(raw)
    assert line.rich().plain == rich_text.plain and line.rich().spans == rich_text.spans


def test_plain_output_needs_no_rich(monkeypatch) -> None:
    """A pipe or a log (not a tty, no FORCE_COLOR or TTY_COMPATIBLE) gets plain text without rich being asked;
    with either variable set, rich decides as before."""
    monkeypatch.setattr(console, "_CONSOLES", {})
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    console.print_plan(users_plan())
    assert out.getvalue().splitlines() == console.plan_text(users_plan())
    assert console._CONSOLES == {}
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert console._plain("out") is False and "out" in console._CONSOLES
    monkeypatch.setenv("FORCE_COLOR", "")
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert console._plain("out") is True
