"""Sceptic pass on cohort syncs: runs that try to make Braze's cohort membership and Reflow's snapshot
disagree silently (a plan saying "No changes", or a wrong count, while the sandbox holds something else)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import yaml
from braze_checks import model_rows
from cli_runner import warehouse_sql
from sync_story import Recorder, set_sandbox_options
from test_cohorts import (
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




def set_tier(project: Path, customer: str, tier: str) -> None:
    warehouse_sql(project, f"UPDATE customers SET loyalty_tier = '{tier}' WHERE customer_id = '{customer}'")


def a_member(sandbox, project: Path) -> str:
    return sorted(with_profiles(sandbox, members_in_model(project)))[0]


def test_a_leave_sent_without_answer_is_sent_again_to_the_member(cli, example_project, braze_env):
    """A member leaves; Braze answers 5xx to every try, so the removal's outcome is unknown and the next
    plan retries it. The retry must address the member: it went out with the snapshot's UNKNOWN marker as
    external_id (the identifier is the row's only field, so the fold of an uncertain row marked it), Braze
    answered success for a user it does not have, and the member stayed in the cohort while the next
    plan said "No changes"."""
    first_run(cli)
    who = a_member(braze_env, example_project)
    set_tier(example_project, who, "bronze")
    set_sandbox_options(braze_env, fail_5xx_rate=1.0)
    code, out, err = cli("run", "--select", SYNC)
    assert "outcome unknown" in out + err, out + err
    set_sandbox_options(braze_env, fail_5xx_rate=0.0)
    recorder = Recorder(braze_env)
    code, out, err = cli("run", "--select", SYNC)
    assert code == 0, out + err
    sent = recorder.attributes()
    assert [a["external_id"] for a in sent] == [who], sent
    assert who not in holders(braze_env, "high_value")
    code, out, err = cli("plan", "--select", SYNC)
    assert holders(braze_env, "high_value") == with_profiles(braze_env, members_in_model(example_project)), out


def tier_holders(sandbox, project: Path) -> dict[str, set[str]]:
    return {t: holders(sandbox, t) for t in ("bronze", "silver", "gold", "platinum")}


def tier_model(sandbox, project: Path) -> dict[str, set[str]]:
    rows = model_rows(project, "tiers")
    return {t: with_profiles(sandbox, {r["customer_id"] for r in rows if r["tier"] == t})
            for t in ("bronze", "silver", "gold", "platinum")}


def test_a_leave_sent_without_answer_under_cohort_column_is_not_invalid_forever(cli, example_project, braze_env):
    """cohort_column: a member moves gold -> silver (fine), then silver -> bronze while Braze answers 5xx.
    The fold of the unanswered rows marks the row's identifier and cohort id UNKNOWN (both are identity
    fields, its only fields): the retried leave became invalid on every later plan, `cohort_id:
    '\\x1freflow:outcome-unknown' is not a cohort id`, and the member stayed in cohort silver for good."""
    tiers_sync(example_project, guards={"max_removed_pct": 50})
    first_run(cli)
    rows = model_rows(example_project, "tiers")
    who = sorted(with_profiles(braze_env, {r["customer_id"] for r in rows if r["tier"] == "gold"}))[0]
    set_tier(example_project, who, "silver")
    code, out, err = cli("run", "--select", "tiers")
    assert code == 0, out + err
    assert tier_holders(braze_env, example_project) == tier_model(braze_env, example_project)
    set_tier(example_project, who, "bronze")
    set_sandbox_options(braze_env, fail_5xx_rate=1.0)
    code, out, err = cli("run", "--select", "tiers")
    assert code != 0, out + err
    set_sandbox_options(braze_env, fail_5xx_rate=0.0)
    code, out, err = cli("run", "--select", "tiers")
    assert "outcome-unknown" not in out + err and "\x1f" not in out + err, out + err
    code, out, err = cli("plan", "--select", "tiers")
    assert "✗0 invalid" in out, out
    assert who not in holders(braze_env, "silver") and who in holders(braze_env, "bronze"), out
    assert tier_holders(braze_env, example_project) == tier_model(braze_env, example_project)


def test_reset_then_a_member_leaves_takes_the_member_out(cli, example_project, braze_env):
    """`reflow reset` promises the next plan "still removes rows that left the model". For a cohort sync
    the reset marks the identifier UNKNOWN (a cohort row's only field): the member who left was sent
    {"external_id": "\\x1freflow:outcome-unknown", …"remove"}, stayed in the cohort, and the next plan
    said "No changes". The plan also told of "58 row(s) now have another external_id" that did not."""
    first_run(cli)
    who = a_member(braze_env, example_project)
    code, out, err = cli("reset", SYNC, "--yes")
    assert code == 0, out + err
    set_tier(example_project, who, "bronze")
    recorder = Recorder(braze_env)
    code, out, err = cli("run", "--select", SYNC)
    assert code == 0, out + err
    assert "now have another external_id" not in out, out
    removed = [a["external_id"] for a in recorder.attributes() if "remove" in a["warehouse_cohorts"]]
    assert removed == [who], removed
    assert holders(braze_env, "high_value") == with_profiles(braze_env, members_in_model(example_project))


def test_a_member_deleted_by_the_gdpr_sync_and_back_is_in_the_cohort_again(cli, example_project, braze_env):
    """The example's cohort model says it applies the users sync's rule, but it keeps customers with a
    GDPR request, whom braze_users leaves out and gdpr_deletes deletes in Braze: the cohort sync kept
    recording the member as in while Braze had no user ("No changes"). When the request is withdrawn the
    users sync creates the profile again, and the cohort never adds the member back: "No changes"
    while Braze's profile lacks high_value."""
    first_run(cli)
    who = a_member(braze_env, example_project)
    warehouse_sql(example_project, f"INSERT INTO gdpr_requests VALUES ('{who}', TIMESTAMP '2026-01-01 00:00:00')")
    code, out, err = cli("run")
    assert code == 0, out + err
    assert braze_env.user(who) is None
    warehouse_sql(example_project, f"DELETE FROM gdpr_requests WHERE customer_id = '{who}'")
    code, out, err = cli("run")
    assert code == 0, out + err
    assert braze_env.user(who) is not None
    code, out, err = cli("plan", "--select", SYNC)
    assert who in holders(braze_env, "high_value"), out
    assert holders(braze_env, "high_value") == with_profiles(braze_env, members_in_model(example_project))


def test_a_rename_still_pending_is_not_lost_when_a_member_leaves(cli, example_project, partner_braze):  # noqa: F811
    """A partner cohort is renamed while Braze answers 423 until the retries run out: the rename is pending.
    Before the next run a member leaves the model. The rename used to ride on one member row (the others
    recorded the new name without it being sent); when that member left, its leave was sent, the rename
    with it was gone, Braze kept the old name and the next plan said "No changes". Every member row
    whose recorded name is the old one now waits on the rename, so whichever member leaves, it is sent."""
    first_run(cli)
    edit_sync(example_project, SYNC, cohort={"id": "high_value", "name": "Top customers"})
    requests.post(f"{partner_braze.url}/_sandbox/cohorts/lock?count=100", timeout=10)
    code, out, err = cli("run", "--select", SYNC)
    assert "423" in out + err, out + err
    assert cohort_name(partner_braze, "high_value") == "High-value customers"
    requests.post(f"{partner_braze.url}/_sandbox/cohorts/lock?count=0", timeout=10)
    for leaving in sorted(with_profiles(partner_braze, members_in_model(example_project)))[:2]:
        set_tier(example_project, leaving, "bronze")       # whichever row carried it, one of these did
    code, out, err = cli("run", "--select", SYNC)
    assert code == 0, out + err
    assert cohort_name(partner_braze, "high_value") == "Top customers", out
    assert cohort_members(partner_braze, "high_value") == with_profiles(partner_braze,
                                                                        members_in_model(example_project))
    code, out, err = cli("plan", "--select", SYNC)
    assert code == 0 and "No changes" in out, out


def test_a_rename_sends_one_request_however_many_members(cli, example_project, partner_braze):  # noqa: F811
    """Every member row waits on the rename, yet the cohort is renamed by one request, and the plan says one."""
    first_run(cli)
    edit_sync(example_project, SYNC, cohort={"id": "high_value", "name": "Top customers"})
    code, out, err = cli("plan", "--select", SYNC, "--json")
    assert code == 0, out + err
    sync = json.loads(out)["syncs"][0]
    assert sync["requests"] == 1 and sync["requests_by_endpoint"] == {"POST /partners/reflow/cohorts": 1}, sync
    # nobody enters: neither the note on members Braze may lack nor the one on billable assignments
    assert not [n for n in sync["notes"] if "never creates users" in n or "billable" in n], sync["notes"]
    recorder = Recorder(partner_braze)
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert [r.path for r in recorder.since()] == ["/partners/reflow/cohorts"]


@pytest.mark.parametrize("diff", ["local", "hashes"])
def test_a_cohort_given_two_names_by_the_model_is_refused_naming_them(cli, example_project, partner_braze,  # noqa: F811
                                                                       diff):
    """cohort_column + name_column: one member row of gold comes to carry another name. Each entering
    batch renames the cohort to the name it carries, so Braze would hold whichever went last while every
    row records its own: the plan stops the sync, naming the cohort and both names, and nothing is sent."""
    tiers_sync(example_project, name_column="tier_name")
    first_run(cli)
    doc = yaml.safe_load((example_project / "syncs" / "tiers.yml").read_text())
    (example_project / "syncs" / "tiers.yml").write_text(yaml.safe_dump({**doc, "diff": diff}, sort_keys=False))
    rows = model_rows(example_project, "tiers")
    who = sorted(r["customer_id"] for r in rows if r["tier"] == "gold")[0]
    (example_project / "models" / "tiers.sql").write_text(
        "select customer_id, loyalty_tier as tier, case when customer_id = '" + who + "' then 'Gold VIP' "
        "else upper(loyalty_tier) || ' tier' end as tier_name from {{ ref('customers') }} where not deleted\n")
    recorder = Recorder(partner_braze)
    code, out, err = cli("run", "--select", "tiers")
    assert code != 0, out + err
    assert "model rows of one tier with different tier_name values ('gold': \"GOLD tier\", \"Gold VIP\")" in err, err
    assert "Nothing was sent for this sync" in err and "Traceback" not in err, err
    assert recorder.since() == [] and cohort_name(partner_braze, "gold") == "GOLD tier"
