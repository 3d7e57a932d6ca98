"""Second sceptic pass on cohort syncs: runs over time (specs and models edited between runs, faults,
interruptions) that try to make Braze's cohorts and Reflow's snapshot disagree without Reflow saying so,
make the plan's per-cohort counts wrong, or print a partner key. Each test below failed when written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from braze_checks import model_rows
from cli_runner import warehouse_sql
from sync_story import Recorder, set_sandbox_options
from test_cohorts import (
    IMPORT_KEY,
    PARTNER_KEY,
    SYNC,
    cohort_members,
    cohort_name,
    edit_sync,
    first_run,
    holders,
    members_in_model,
    partner_braze,  # noqa: F401 (a fixture)
    tiers_sync,
    with_profiles,
)

pytestmark = pytest.mark.e2e


def cohort_note(out: str, cohort: str) -> str:
    """The plan's note line for one cohort ('' when there is none)."""
    found = re.search(rf"note: cohort {re.escape(cohort)}: [^\n]*", out)
    return found.group(0) if found else ""


def set_tier(project: Path, customer: str, tier: str) -> None:
    warehouse_sql(project, f"UPDATE customers SET loyalty_tier = '{tier}' WHERE customer_id = '{customer}'")


# ------------------------------------------------------------------------------------- plan counts


def test_invalid_rows_are_not_counted_as_unchanged_members(cli, example_project, braze_env):
    """The per-cohort note counts `unchanged` as "model rows of the cohort minus those entering", so rows
    that are invalid (never sent, never members) are reported as unchanged members. On the very first
    plan of a constant cohort whose model has two rows with unusable ids (blank; over 987 bytes) the note
    read "cohort high_value: 60 entered, 0 left, 2 unchanged" although the cohort was still empty; with
    cohort_column, a value that is not a cohort id ('gold tier') got a note of its own, "cohort gold tier:
    0 entered, 0 left, 40 unchanged", a cohort that does not exist in Braze, with 40 members it lacks."""
    (example_project / "models" / f"{SYNC}.sql").write_text(
        "select customer_id from {{ ref('customers') }} where not deleted and loyalty_tier in ('gold', 'platinum') "
        "union all select '   ' union all select repeat('x', 1000)\n")
    tiers_sync(example_project, guards={"max_removed_pct": 50})
    (example_project / "models" / "tiers.sql").write_text(
        "select customer_id, case when loyalty_tier = 'gold' then 'gold tier' else loyalty_tier end as tier "
        "from {{ ref('customers') }} where not deleted\n")
    valid = len(members_in_model(example_project)) - 2
    code, out, err = cli("plan", "--select", SYNC, "tiers")
    assert "✗2 invalid" in out and "✗40 invalid" in out, out + err
    wrong = [note for note in (cohort_note(out, "high_value"), cohort_note(out, "gold tier"))
             if note and not note.startswith(f"note: cohort high_value: {valid} entered, 0 left, 0 unchanged")]
    assert not wrong, wrong


# ------------------------------------------------------------------------------- cohort names


def test_dropping_name_column_does_not_rename_the_cohort_behind_the_plans_back(cli, example_project,
                                                                                partner_braze):  # noqa: F811
    """name_column is removed from a partner cohort_column sync. The plan said "no changes ... Braze keeps
    `cohort_name` on 295 rows; Reflow stops managing it"; later a member entered gold: the entering batch
    first sent POST /partners/reflow/cohorts with the name it carries, now the cohort id, so Braze's
    cohort "GOLD tier" became "gold" while the plan said only "cohort gold: 1 entered" (no "renamed").
    A cohort without a name is named by its id, as a field: dropping name_column renames in the plan."""
    tiers_sync(example_project, name_column="tier_name")
    first_run(cli)
    assert cohort_name(partner_braze, "gold") == "GOLD tier"
    edit_sync(example_project, "tiers", name_column=None)
    code, out, err = cli("run", "--select", "tiers")
    assert code == 0 and "renamed" in cohort_note(out, "gold"), out + err
    assert cohort_name(partner_braze, "gold") == "gold"
    newcomer = sorted(r["customer_id"] for r in model_rows(example_project, "tiers")
                      if r["tier"] == "bronze" and partner_braze.user(r["customer_id"]))[0]
    set_tier(example_project, newcomer, "gold")
    code, out, err = cli("run", "--select", "tiers")
    assert code == 0, out + err
    assert newcomer in cohort_members(partner_braze, "gold") and cohort_name(partner_braze, "gold") == "gold"
    code, out, err = cli("plan", "--select", "tiers")
    assert code == 0 and "No changes" in out, out


# ------------------------------------------------------------------------- one cohort, two syncs


def test_a_cohort_column_value_kept_by_another_sync_is_refused(cli, example_project, braze_env):
    """Two cohort syncs keeping one cohort are refused (`_shared_cohorts`), but only when both name it as
    a constant `cohort.id`. A `tiers` sync (cohort_column, same attribute) whose model gives gold and
    platinum customers the cohort id 'high_value' passes validate and plan. When a member leaves the
    example's high_value model (its orders are cancelled) that sync sends {"remove": ["high_value"]};
    the tiers model still holds the member in high_value and its plan counts it as unchanged, while the
    Braze profile no longer has high_value."""
    tiers_sync(example_project, guards={"max_removed_pct": 50})
    (example_project / "models" / "tiers.sql").write_text(
        "select customer_id, case when loyalty_tier in ('gold', 'platinum') then 'high_value' else loyalty_tier "
        "end as tier from {{ ref('customers') }} where not deleted\n")
    code, out, err = cli("plan")
    assert code != 0, out + err
    assert ("sync 'tiers': tier gives cohort id(s) another sync keeps: 'high_value' (sync 'high_value_customers')"
            in out + err), out + err
    assert "high_value_customers → cohorts" in out                  # the other syncs are planned as usual


def test_two_cohort_column_syncs_on_one_attribute_are_refused(cli, example_project, braze_env):
    """Two syncs taking cohort ids from columns, on one attribute: their models could both produce one id."""
    tiers_sync(example_project)
    doc = yaml.safe_load((example_project / "syncs" / "tiers.yml").read_text())
    (example_project / "syncs" / "tiers2.yml").write_text(yaml.safe_dump({**doc, "name": "tiers2"}, sort_keys=False))
    code, out, err = cli("validate")
    assert code != 0 and "also takes its cohort ids from a column (attribute warehouse_cohorts)" in out + err, out + err
    assert "tiers2.yml" in out + err and "Traceback" not in out + err


def test_a_users_sync_mapping_the_cohort_attribute_automatically_is_refused(cli, example_project, braze_env):
    """A users sync may not write the array attribute cohorts keep their ids in: `fields:
    {warehouse_cohorts: …}` is refused. The same sync without `fields:` (automatic mapping: every
    non-key column) and a model column named warehouse_cohorts passes validate; when its value changes
    it replaces the array, every member loses high_value, and the cohort sync's plan says "No changes"."""
    (example_project / "models" / "extras.sql").write_text(
        "select customer_id, [{{ var('badge', \"'vip'\") }}] as warehouse_cohorts from {{ ref('customers') }} "
        "where not deleted and loyalty_tier = 'gold'\n")
    (example_project / "syncs" / "extras.yml").write_text(yaml.safe_dump({
        "name": "extras", "model": "extras", "primary_key": "customer_id",
        "destination": {"connection": "braze", "object": "users", "mode": "update", "missing_users": "skip",
                        "identifier": {"external_id": "customer_id"}, "on_removed": "ignore"}}, sort_keys=False))
    refusal = ("sync 'extras': 'warehouse_cohorts' holds the cohort ids of sync 'high_value_customers', and this "
               "sync writes it (mapped from the model's column of that name (no destination.fields))")
    for command in (("validate",), ("plan", "--select", "extras")):
        code, out, err = cli(*command)
        assert code != 0 and refusal in out + err and "Traceback" not in out + err, out + err
    code, out, err = cli("run")                        # the other syncs go ahead; this one sends nothing
    assert code != 0 and refusal in out + err, out + err
    assert holders(braze_env, "high_value") == with_profiles(braze_env, members_in_model(example_project))
    assert not any("vip" in (u["custom_attributes"].get("warehouse_cohorts") or []) for u in braze_env.users())


# ------------------------------------------------------------------------------------- secrets


def test_a_partner_key_written_as_a_number_is_not_printed(cli, example_project, monkeypatch):
    """A partner_api_key written unquoted in reflow_project.yml is a YAML integer: only string secrets are
    registered with the scrubber, and validate's type error prints the key: "connections.braze.
    cohort_import.partner_api_key: expected string, got integer 98765432101234"."""
    monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", IMPORT_KEY)
    project_file = example_project / "reflow_project.yml"
    project_file.write_text(project_file.read_text() + "    cohort_import:\n      partner: reflow\n"
                            "      partner_api_key: 98765432101234\n"
                            "      data_import_key: \"{{ env_var('BRAZE_DATA_IMPORT_KEY') }}\"\n")
    edit_sync(example_project, SYNC, method="partner", attribute=None)
    for command in (("validate",), ("plan",)):
        code, out, err = cli(*command)
        assert code != 0 and "partner_api_key" in out + err, out + err
        assert "98765432101234" not in out + err, out + err
        assert PARTNER_KEY not in out + err and IMPORT_KEY not in out + err


def test_a_rename_without_answer_is_sent_again_as_a_rename_not_as_every_member_entering(
        cli, example_project, partner_braze):  # noqa: F811
    """A partner cohort is renamed; Braze applies the rename but answers 500, so its outcome is unknown.
    The next plan said "cohort high_value: 59 entered, 0 left, 0 unchanged; 59 data point(s)" although
    nobody entered, and the apply re-sent every member to /cohorts/users (59 billable data points) besides
    the rename: the fold of an unanswered row could not tell an unanswered rename from an unanswered
    entering. An added membership's unanswered send now leaves its identity UNKNOWN too."""
    project_file = example_project / "reflow_project.yml"
    project_file.write_text(project_file.read_text() + "    max_retries: 0\n")
    first_run(cli)
    members = cohort_members(partner_braze, "high_value")
    edit_sync(example_project, SYNC, cohort={"id": "high_value", "name": "Top customers"})
    set_sandbox_options(partner_braze, process_then_fail_rate=1.0, process_then_fail_kind="500")
    code, out, err = cli("run", "--select", SYNC)
    assert "outcome unknown" in out + err, out + err
    set_sandbox_options(partner_braze, process_then_fail_rate=0.0)
    code, out, err = cli("plan", "--select", SYNC)
    assert code == 0, out + err
    note = cohort_note(out, "high_value")
    assert note.startswith(f"note: cohort high_value: 0 entered, 0 left, {len(members)} unchanged; "
                           "0 data point(s); renamed"), note
    recorder = Recorder(partner_braze)
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert [r.path for r in recorder.since()] == ["/partners/reflow/cohorts"], [r.path for r in recorder.since()]
    assert cohort_name(partner_braze, "high_value") == "Top customers"
    assert cohort_members(partner_braze, "high_value") == members

