"""Cohorts (issue #13), told through the CLI against the sandbox: a warehouse audience becomes a Braze
cohort, and each later run sends only the members who entered or left. Method attribute (an array
custom attribute with {"add"}/{"remove"}) and method partner (Braze's partner cohort import API, body
auth), read back from the sandbox: profiles' attributes and /_sandbox/cohorts/{id} members."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from braze_checks import model_rows
from cli_runner import warehouse_sql
from sync_story import Recorder

from engine.demo import PRODUCTS_CATALOG
from engine.sandbox.testing import SandboxHandle, running_sandbox

pytestmark = pytest.mark.e2e

PARTNER_KEY = "PARTNERKEY-9f8e7d6c5b4a3210"
IMPORT_KEY = "IMPORTKEY-0123456789abcdef"
COHORT_IMPORT = ("    cohort_import:\n      partner: reflow\n"
                 "      partner_api_key: \"{{ env_var('BRAZE_PARTNER_API_KEY') }}\"\n"
                 "      data_import_key: \"{{ env_var('BRAZE_DATA_IMPORT_KEY') }}\"\n")
SYNC = "high_value_customers"


def edit_sync(project: Path, name: str, **destination: Any) -> None:
    path = project / "syncs" / f"{name}.yml"
    doc = yaml.safe_load(path.read_text())
    for key, value in destination.items():
        if value is None:
            doc["destination"].pop(key, None)
        else:
            doc["destination"][key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def members_in_model(project: Path, model: str = SYNC) -> set[str]:
    return {r["customer_id"] for r in model_rows(project, model)}


def with_profiles(sandbox: SandboxHandle, ids: set[str]) -> set[str]:
    """Those of `ids` that have a profile in the sandbox (a cohort never creates users)."""
    return {i for i in ids if sandbox.user(i) is not None}


def cohort_members(sandbox: SandboxHandle, cohort: str) -> set[str]:
    r = requests.get(f"{sandbox.url}/_sandbox/cohorts/{cohort}", timeout=10)
    assert r.status_code == 200, r.text
    return {m["external_id"] for m in r.json()["members"]}


def cohort_name(sandbox: SandboxHandle, cohort: str) -> str:
    return requests.get(f"{sandbox.url}/_sandbox/cohorts/{cohort}", timeout=10).json()["name"]


def holders(sandbox: SandboxHandle, cohort: str, attribute: str = "warehouse_cohorts") -> set[str]:
    return {u["external_id"] for u in sandbox.users() if cohort in (u["custom_attributes"].get(attribute) or [])}


def first_run(cli: Any) -> None:
    """Every sync of the example (the users sync creates the profiles the cohort then addresses)."""
    code, out, err = cli("plan")
    assert code == 0, out + err
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err


@pytest.fixture
def partner_braze(example_project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxHandle]:
    """A sandbox taking partner cohort requests with these keys, the example's cohort sync on method partner."""
    with running_sandbox(partner_api_key=PARTNER_KEY, data_import_key=IMPORT_KEY, cohort_partners="reflow") as sandbox:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
        monkeypatch.setenv("BRAZE_PARTNER_API_KEY", PARTNER_KEY)
        monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", IMPORT_KEY)
        r = requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
        assert r.status_code == 201, r.text
        project_file = example_project / "reflow_project.yml"
        project_file.write_text(project_file.read_text() + COHORT_IMPORT)
        edit_sync(example_project, SYNC, method="partner", attribute=None)
        yield sandbox


# ------------------------------------------------------------------------------------------ attribute


def test_attribute_method_sends_only_who_entered_or_left(cli, example_project, braze_env):
    first_run(cli)
    members = members_in_model(example_project)
    assert members and holders(braze_env, "high_value") == with_profiles(braze_env, members)
    waiting = members - with_profiles(braze_env, members)      # no Braze user: held back, pending
    warehouse_sql(example_project, "UPDATE customers SET loyalty_tier = 'bronze' WHERE customer_id IN "
                                   f"({', '.join(repr(m) for m in sorted(members)[:3])})",
                  "UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id IN (SELECT customer_id FROM "
                  "customers WHERE NOT deleted AND loyalty_tier = 'bronze' ORDER BY customer_id DESC LIMIT 2)")
    after = members_in_model(example_project)
    entered, left = after - members, members - after
    assert len(entered) == 2 and len(left) == 3
    recorder = Recorder(braze_env)
    code, out, err = cli("plan", "--select", SYNC)
    assert code == 0, out + err
    retried = waiting & after               # still waiting for their user: planned again, not sent
    assert (f"cohort high_value: {2 + len(retried)} entered, 3 left, {len(after) - 2 - len(retried)} unchanged; "
            f"{5 + len(retried)} data point(s)") in out, out
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    sent = [a for r in recorder.since() if r.path == "/users/track" for a in r.body["attributes"]]
    assert {a["external_id"] for a in sent if a["warehouse_cohorts"] == {"add": ["high_value"]}} == entered
    assert {a["external_id"] for a in sent if a["warehouse_cohorts"] == {"remove": ["high_value"]}} == left
    assert len(sent) == 5 and all(a["_update_existing_only"] is True for a in sent)
    assert holders(braze_env, "high_value") == with_profiles(braze_env, after)


def test_a_member_braze_has_no_user_for_waits_and_enters_once_the_user_exists(cli, example_project, braze_env):
    """Braze answers success to an update-only object of a user it lacks and keeps nothing: recorded as
    entered, that member would never enter. With missing_users: wait (the default) it is held back, pending,
    and enters on the first run after its user appears."""
    warehouse_sql(example_project, "UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id = 'c_00001'")
    code, out, err = cli("run", "--select", SYNC)          # the cohort alone: no user created
    assert code == 0, out + err
    assert braze_env.user("c_00001") is None and "c_00001" in members_in_model(example_project)
    assert holders(braze_env, "high_value") == set()
    code, out, err = cli("status")
    assert "waiting for profile" in out, out
    code, out, err = cli("plan", "--select", SYNC)
    assert "have been waiting for what they need in cohorts" in out, out
    r = requests.post(f"{braze_env.url}/users/track", headers=braze_env.headers, timeout=10, json={
        "attributes": [{"external_id": "c_00001", "_update_existing_only": False, "first_name": "Ada"}]})
    assert r.status_code == 201, r.text
    code, out, err = cli("run", "--select", SYNC)
    assert code == 0, out + err
    assert "c_00001" in holders(braze_env, "high_value")
    code, out, err = cli("plan", "--select", SYNC)
    code, shown, err = cli("show", "--sync", SYNC, "--key", "c_00001")
    assert "c_00001" not in shown, out + shown      # entered: not planned again (the others still wait)


def test_another_cohort_id_says_what_the_old_cohort_keeps(cli, example_project, braze_env):
    """A new cohort id is a new destination: the members enter the new cohort, and the plan says that the
    old cohort keeps its members (Reflow does not take them out), so Braze and Reflow never disagree silently."""
    first_run(cli)
    old = holders(braze_env, "high_value")
    assert old
    edit_sync(example_project, SYNC, cohort={"id": "vip", "name": "VIP"})
    code, out, err = cli("plan", "--select", SYNC)
    assert code == 0, out + err
    assert "destination changed" in out and "cohort high_value → vip" in out, out
    assert (f"Braze keeps the {len(members_in_model(example_project)):,} membership(s) this sync recorded in cohort "
            "id(s) high_value in the array attribute warehouse_cohorts") in out, out
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert holders(braze_env, "vip") == old and holders(braze_env, "high_value") == old


def test_cohort_column_carries_several_cohorts_in_one_attribute(cli, example_project, braze_env):
    (example_project / "models" / "tiers.sql").write_text(
        "select customer_id, loyalty_tier as tier from {{ ref('customers') }} where not deleted\n")
    doc = yaml.safe_load((example_project / "syncs" / f"{SYNC}.yml").read_text())
    doc.update(name="tiers", model="tiers", primary_key=["customer_id", "tier"])
    doc["destination"].pop("cohort")
    doc["destination"]["cohort_column"] = "tier"
    (example_project / "syncs" / "tiers.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    first_run(cli)
    rows = model_rows(example_project, "tiers")
    for tier in ("bronze", "silver", "gold", "platinum"):
        expected = with_profiles(braze_env, {r["customer_id"] for r in rows if r["tier"] == tier})
        assert expected and holders(braze_env, tier) == expected, tier
    # the other cohort sync shares the attribute: neither overwrites the other
    assert holders(braze_env, "high_value") == with_profiles(braze_env, members_in_model(example_project))
    code, out, err = cli("plan", "--select", "tiers")
    # nothing to send but the members whose user Braze does not have, still waiting for it
    waiting = len({(r["customer_id"], r["tier"]) for r in rows if braze_env.user(r["customer_id"]) is None})
    assert code == 0 and "+0 added  ~0 changed  -0 removed" in out and f"↻{waiting} retry" in out, out
    assert not waiting or f"{waiting} row(s) have been waiting" in out, out


def test_a_model_returning_no_rows_is_blocked_and_nothing_is_sent(cli, example_project, braze_env):
    first_run(cli)
    before = holders(braze_env, "high_value")
    (example_project / "models" / f"{SYNC}.sql").write_text(
        "select customer_id from {{ ref('customers') }} where false\n")
    recorder = Recorder(braze_env)
    code, out, err = cli("plan", "--select", SYNC)
    assert "max_removed_pct" in out and "BLOCKED" in out.upper(), out + err
    code, out, err = cli("apply", "--yes")
    assert code != 0, out + err
    assert recorder.since() == [] and holders(braze_env, "high_value") == before


# -------------------------------------------------------------------------------------------- partner


def test_partner_method_first_run_then_members_entering_and_leaving(cli, example_project, partner_braze):
    first_run(cli)
    members = members_in_model(example_project)
    assert cohort_members(partner_braze, "high_value") == with_profiles(partner_braze, members)
    assert cohort_name(partner_braze, "high_value") == "High-value customers"
    code, out, err = cli("example", "mutate")
    assert code == 0, out + err
    after = members_in_model(example_project)
    entered, left = after - members, members - after
    assert entered or left
    recorder = Recorder(partner_braze)
    code, out, err = cli("plan", "--select", SYNC)
    assert code == 0, out + err
    assert f"cohort high_value: {len(entered)} entered, {len(left)} left" in out, out
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    sent_in, sent_out = set(), set()
    for r in recorder.since():
        if r.path.endswith("/cohorts/users"):
            for change in r.body["cohort_changes"]:
                (sent_out if change.get("should_remove") else sent_in).update(change["user_ids"])
        assert r.body["partner_api_key"] == PARTNER_KEY and r.body["client_secret"] == IMPORT_KEY
    assert (sent_in, sent_out) == (entered, left)
    assert cohort_members(partner_braze, "high_value") == with_profiles(partner_braze, after)


def test_a_renamed_partner_cohort_is_renamed_once_and_no_member_is_sent(cli, example_project, partner_braze):
    first_run(cli)
    members = cohort_members(partner_braze, "high_value")
    edit_sync(example_project, SYNC, cohort={"id": "high_value", "name": "Top customers"})
    recorder = Recorder(partner_braze)
    code, out, err = cli("plan", "--select", SYNC)
    assert code == 0 and "renamed" in out and "destination changed" not in out, out + err
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    sent = recorder.since()
    assert [(r.path, r.body["name"]) for r in sent] == [("/partners/reflow/cohorts", "Top customers")]
    assert cohort_name(partner_braze, "high_value") == "Top customers"
    assert cohort_members(partner_braze, "high_value") == members
    code, out, err = cli("plan", "--select", SYNC)
    assert code == 0 and "No changes" in out, out


def tiers_sync(project: Path, *, guards: dict[str, int] | None = None, **destination: str) -> None:
    """A `tiers` sync beside the example's cohort sync: one cohort per loyalty tier (`cohort_column`)."""
    (project / "models" / "tiers.sql").write_text(
        "select customer_id, loyalty_tier as tier, upper(loyalty_tier) || ' tier' as tier_name "
        "from {{ ref('customers') }} where not deleted\n")
    doc = yaml.safe_load((project / "syncs" / f"{SYNC}.yml").read_text())
    doc.update(name="tiers", model="tiers", primary_key=["customer_id", "tier"])
    doc["destination"].pop("cohort")
    doc["destination"].update(cohort_column="tier", **destination)
    if guards is not None:
        doc["guards"] = guards
    (project / "syncs" / "tiers.yml").write_text(yaml.safe_dump(doc, sort_keys=False))


def test_partner_cohort_column_with_names(cli, example_project, partner_braze):
    tiers_sync(example_project, name_column="tier_name")
    first_run(cli)
    rows = model_rows(example_project, "tiers")
    for tier in ("bronze", "silver", "gold", "platinum"):
        expected = with_profiles(partner_braze, {r["customer_id"] for r in rows if r["tier"] == tier})
        assert cohort_members(partner_braze, tier) == expected, tier
        assert cohort_name(partner_braze, tier) == f"{tier.upper()} tier"


def test_a_locked_cohort_423_is_retried(cli, example_project, partner_braze):
    requests.post(f"{partner_braze.url}/_sandbox/cohorts/lock?count=2", timeout=10)
    first_run(cli)
    assert partner_braze.stats()["requests"]["POST /partners/{partner}/cohorts"].get("423") == 2
    assert cohort_members(partner_braze, "high_value") == with_profiles(partner_braze,
                                                                        members_in_model(example_project))


def test_a_refused_partner_key_401_is_fatal_for_the_sync_and_named(cli, example_project, partner_braze,
                                                                    monkeypatch):
    monkeypatch.setenv("BRAZE_PARTNER_API_KEY", PARTNER_KEY + "-wrong")
    code, out, err = cli("plan")
    assert code == 0, out + err
    code, out, err = cli("apply", "--yes")
    text = out + err
    assert code != 0, text
    assert "partner cohort import credentials (401: Invalid Partner API key)" in text, text
    assert "high_value_customers" in text and "cohort_import.partner_api_key" in text, text
    assert PARTNER_KEY not in text and IMPORT_KEY not in text
    assert partner_braze.user("c_00002") is not None        # the other syncs were applied


def test_the_partner_keys_are_written_nowhere(example_project, tmp_path):
    with running_sandbox(partner_api_key=PARTNER_KEY, data_import_key=IMPORT_KEY) as sandbox:
        requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
        project_file = example_project / "reflow_project.yml"
        project_file.write_text(project_file.read_text() + COHORT_IMPORT)
        edit_sync(example_project, SYNC, method="partner", attribute=None)
        env = {**os.environ, "BRAZE_REST_ENDPOINT": sandbox.url, "BRAZE_API_KEY": sandbox.api_key,
               "BRAZE_PARTNER_API_KEY": PARTNER_KEY, "BRAZE_DATA_IMPORT_KEY": IMPORT_KEY}
        outputs: list[str] = []

        def step(expect: int, *args: str, extra: dict[str, str] | None = None) -> None:
            proc = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(example_project), *args],
                                  capture_output=True, text=True, env={**env, **(extra or {})}, timeout=120,
                                  check=False)
            outputs.extend([proc.stdout, proc.stderr])
            assert proc.returncode == expect, (args, proc.stdout, proc.stderr)

        step(0, "plan", "--json")
        step(0, "apply", "--yes")
        step(0, "example", "mutate")
        step(0, "--debug", "plan")
        step(0, "show", "--format", "json", "--limit", "0")
        step(0, "apply", "--yes")
        step(0, "errors", "--json")
        step(0, "example", "mutate", "--step", "2")
        step(1, "--debug", "run", extra={"BRAZE_DATA_IMPORT_KEY": IMPORT_KEY + "-wrong"})
        assert "Invalid client secret" in outputs[-2] + outputs[-1], outputs[-2:]
        assert sandbox.stats()["requests"]["POST /partners/{partner}/cohorts/users"]
    assert not any(PARTNER_KEY in t or IMPORT_KEY in t for t in outputs), "a partner key appeared in the output"
    written = [p for p in example_project.rglob("*") if p.is_file()]
    leaked = [str(p) for p in written if PARTNER_KEY.encode() in p.read_bytes() or IMPORT_KEY.encode() in p.read_bytes()]
    assert not leaked, f"a partner key was written to {leaked}"
