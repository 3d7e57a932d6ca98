"""Third sceptic pass on cohort syncs: a users sync that writes the cohort attribute by a way around the
refusal of 4 (a users sync may not write the array attribute a method-attribute cohort keeps its ids in),
after which Braze's profiles lack the cohort while the cohort sync's plan says "No changes". Each test
below failed when written."""

from __future__ import annotations

import pytest
import yaml
from test_cohorts import SYNC, first_run, holders, members_in_model, with_profiles

pytestmark = pytest.mark.e2e


def test_a_users_sync_unsetting_the_cohort_attribute_is_refused(cli, example_project, braze_env):
    """braze_users once mapped `warehouse_cohorts` (before any cohort sync kept its ids there), with
    `on_unmapped: unset`. The cohort sync is added; mapping the attribute is now refused, so the field
    is dropped from braze_users as the refusal says. validate passes, the cohort sync runs (59 members
    hold high_value), then the next run's braze_users plan unsets `warehouse_cohorts` on every profile
    ("no longer mapped: ... unset on 286 profiles", with no word of the cohort): once the removal guard
    is allowed, all 59 members lose high_value in Braze and the cohort sync's plan says "No changes".
    Unsetting the attribute is writing it: it should be refused like mapping it is."""
    cohort_file = example_project / "syncs" / f"{SYNC}.yml"
    cohort_spec = cohort_file.read_text()
    cohort_file.unlink()
    users = example_project / "syncs" / "braze_users.yml"
    doc = yaml.safe_load(users.read_text())
    doc["destination"]["fields"]["warehouse_cohorts"] = "favourite_categories"
    doc["destination"]["on_unmapped"] = "unset"
    users.write_text(yaml.safe_dump(doc, sort_keys=False))
    first_run(cli)                               # no cohort sync yet: braze_users writes warehouse_cohorts
    cohort_file.write_text(cohort_spec)
    del doc["destination"]["fields"]["warehouse_cohorts"]
    users.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, out, err = cli("run", "--select", SYNC)
    assert code == 0, out + err
    members = with_profiles(braze_env, members_in_model(example_project))
    assert members and holders(braze_env, "high_value") == members
    code, out, err = cli("run", "--allow-guard", "max_removed_pct")
    assert code != 0 and ("sync 'braze_users': on_unmapped: unset would unset 'warehouse_cohorts', which now "
                          "holds the cohort ids of sync 'high_value_customers'") in out + err, out + err
    code, plan, _ = cli("plan", "--select", SYNC)
    assert holders(braze_env, "high_value") == members, out + err + plan
    assert "No changes" in plan


def test_a_users_sync_on_another_connection_to_the_workspace_may_not_write_the_cohort_attribute(
        cli, example_project, braze_env):
    """The refusal is keyed by the connection's name, not by the workspace: a second connection
    `braze_b` with the same endpoint and key, and a users sync on it with `fields: {warehouse_cohorts:
    tags}`, pass validate and plan. When its value changes it replaces the array: 39 of the 59 members
    lost high_value in Braze, and the cohort sync's plan said "No changes". (The same key decides
    `_shared_cohorts`' two-syncs-one-cohort.id refusal and `kept_cohorts`.)"""
    project_file = example_project / "reflow_project.yml"
    project_file.write_text(project_file.read_text() + "  braze_b:\n    type: braze\n"
                            "    endpoint: \"{{ env_var('BRAZE_REST_ENDPOINT') }}\"\n"
                            "    api_key: \"{{ env_var('BRAZE_API_KEY') }}\"\n")
    model = example_project / "models" / "extras.sql"
    model.write_text("select customer_id, ['x'] as tags from {{ ref('customers') }} "
                     "where not deleted and loyalty_tier = 'gold'\n")
    (example_project / "syncs" / "extras.yml").write_text(yaml.safe_dump({
        "name": "extras", "model": "extras", "primary_key": "customer_id",
        "destination": {"connection": "braze_b", "object": "users", "mode": "update", "missing_users": "skip",
                        "identifier": {"external_id": "customer_id"}, "on_removed": "ignore",
                        "fields": {"warehouse_cohorts": "tags"}}}, sort_keys=False))
    refusal = "sync 'extras': 'warehouse_cohorts' holds the cohort ids of sync 'high_value_customers'"
    for command in (("validate",), ("plan",)):
        code, out, err = cli(*command)
        assert code != 0 and refusal in out + err and "Traceback" not in out + err, out + err


def test_one_cohort_id_kept_through_two_connections_to_the_workspace_is_refused(cli, example_project, braze_env):
    """Two syncs naming one cohort.id on one connection are refused by validate; through two connections to
    the same REST host both stop at plan time, naming each other."""
    project_file = example_project / "reflow_project.yml"
    project_file.write_text(project_file.read_text() + "  braze_b:\n    type: braze\n"
                            "    endpoint: \"{{ env_var('BRAZE_REST_ENDPOINT') }}\"\n"
                            "    api_key: \"{{ env_var('BRAZE_API_KEY') }}\"\n")
    doc = yaml.safe_load((example_project / "syncs" / f"{SYNC}.yml").read_text())
    doc["destination"]["connection"] = "braze_b"
    (example_project / "syncs" / "twin.yml").write_text(yaml.safe_dump({**doc, "name": "twin"}, sort_keys=False))
    code, out, err = cli("plan")
    assert code != 0, out + err
    assert "sync 'twin': cohort 'high_value' is also kept by sync 'high_value_customers'" in out + err, out + err
    assert "sync 'high_value_customers': cohort 'high_value' is also kept by sync 'twin'" in out + err, out + err
