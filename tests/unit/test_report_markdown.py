"""The Markdown summary for a pull-request comment."""

from __future__ import annotations

from test_console import users_plan

from engine.report_markdown import plan_markdown, sync_sentence


def test_sentence_reads_like_the_issue():
    import dataclasses

    users = users_plan().syncs[0]
    one_field = dataclasses.replace(users, fields=users.fields[:1])
    assert sync_sentence(one_field).startswith("update `loyalty_tier` for 4,812 Braze users, create 3 Braze users")
    assert sync_sentence(one_field).endswith("~9.6k data points")


def test_markdown_has_table_fields_and_guard_caution():
    md = plan_markdown(users_plan(blocked=True))
    assert md.startswith("### Reflow plan `plan_20260101T000000_0001`\n")
    assert "> [!CAUTION]" in md and "`braze_users.max_removed`" in md
    assert "| braze_users | users | 3 | 4,812 | 0 |" in md
    assert "| braze_users | `loyalty_tier` | 4,812 | 12 | `c_1`: `\"gold\"` → `\"platinum\"` |" in md
    assert "Guards: 1 of 2 passed." in md
    assert md.endswith("`reflow show plan_20260101T000000_0001`.\n")


def test_no_change_markdown():
    import dataclasses

    from engine.plan import Counts, Plan

    plan = users_plan()
    quiet = dataclasses.replace(plan.syncs[0], counts=Counts(total=5, unchanged=5))
    md = plan_markdown(Plan("plan_x", plan.created_at, (quiet,)))
    assert md == "### Reflow plan `plan_x`\n\nNo changes: Braze is in step with 1 sync(s) (5 rows compared).\n"


def test_a_read_only_preview_names_no_plan_to_show_or_apply():
    import dataclasses

    from engine.plan import PREVIEW, Counts, Plan

    md = plan_markdown(dataclasses.replace(users_plan(), status=PREVIEW))
    assert md.startswith("### Reflow plan (preview)\n")
    assert "plan_20260101T000000_0001" not in md and "reflow show" not in md
    assert md.endswith("nothing was locked, saved or uploaded. After merge, the scheduled `reflow run` plans and "
                       "sends it.\n")
    quiet = dataclasses.replace(users_plan().syncs[0], counts=Counts(total=5, unchanged=5))
    md = plan_markdown(Plan("plan_x", users_plan().created_at, (quiet,), status=PREVIEW))
    assert md.startswith("### Reflow plan (preview)\n\nNo changes:") and "nothing was locked" in md
