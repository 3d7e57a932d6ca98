"""The example project synced to the sandbox through the CLI: what lands equals what the models say."""

from __future__ import annotations

import json

import duckdb
import pytest
from braze_checks import assert_in_step, plan_json

pytestmark = pytest.mark.e2e


def test_full_then_incremental_sync_lands_exactly(cli, braze_env, example_project):
    sandbox = braze_env
    first = plan_json(cli)
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    stats = sandbox.stats()
    assert stats["data_points"] == sum(s["data_points"] for s in first["syncs"])
    assert_in_step(example_project, sandbox)

    again = plan_json(cli)
    assert not again["has_changes"]
    before = sandbox.stats()["requests"]
    code, out, _ = cli("apply", "--yes")
    assert code == 0 and "no changes" in out
    assert sandbox.stats()["requests"] == before

    code, out, err = cli("example", "mutate")
    assert code == 0, err
    third = plan_json(cli)
    users = next(s for s in third["syncs"] if s["name"] == "braze_users")
    assert users["changed"] > 0 and users["added"] > 0
    dp_before = sandbox.stats()["data_points"]
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert sandbox.stats()["data_points"] - dp_before == sum(s["data_points"] for s in third["syncs"])
    assert_in_step(example_project, sandbox)


def test_changed_rows_send_only_changed_fields(cli, braze_env, example_project):
    sandbox = braze_env
    assert cli("plan")[0] == 0 and cli("apply", "--yes")[0] == 0
    con = duckdb.connect(str(example_project / "warehouse.duckdb"))
    con.execute("update customers set loyalty_tier = 'platinum' where customer_id = 'c_00002'")
    con.close()
    code, out, _ = cli("plan", "--select", "braze_users", "--json")
    assert code == 0
    [users] = json.loads(out)["syncs"]
    assert [(f["field"], f["rows"]) for f in users["fields"]] == [("loyalty_tier", 1)]
    code, out, err = cli("show", "--sync", "braze_users", "--op", "changed", "--format", "json")
    rows = json.loads(out)
    if sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"] != "platinum":
        assert [r["payload"] for r in rows] == [{"external_id": "c_00002", "loyalty_tier": "platinum"}]
    code, out, err = cli("apply", "--yes")
    assert code == 0, err
    assert sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"] == "platinum"


GROUP = "5b7b9a4e-1c43-4e7a-9f3b-2d5f0c8e1a11"      # syncs/newsletter_subscriptions.yml


@pytest.mark.parametrize("alone", [False, True], ids=["with the users sync", "subscription sync alone"])
def test_subscription_states_land_although_profiles_appear_late(cli, example_project, monkeypatch, alone):
    """Braze creates profiles asynchronously: another endpoint does not see a new profile for a while
    (the sandbox's visibility delay, 3 s here, longer than the whole run), and /subscription/status/set
    keeps nothing for an unknown user. Every subscription state must still land, whether the users sync
    runs in the same apply or the subscription sync runs alone."""
    import requests

    from engine.demo import PRODUCTS_CATALOG
    from engine.sandbox.testing import running_sandbox

    with running_sandbox(visibility_delay_ms=3000) as sandbox:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
        requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
        args = ("run", "--select", "newsletter_subscriptions") if alone else ("run",)
        code, out, err = cli(*args)
        assert code == 0, out + err
        code, out, _ = cli("compile", "newsletter_subscriptions")
        con = duckdb.connect(str(example_project / "warehouse.duckdb"), read_only=True)
        expected = {k: ("subscribed" if v else "unsubscribed") for k, v in con.execute(out).fetchall()}
        con.close()
        got = {u["external_id"]: u.get("subscription_groups", {}).get(GROUP) for u in sandbox.users()}
        assert expected and {k: got.get(k) for k in expected} == expected
        if alone:
            assert sandbox.stats()["data_points"] == 0            # subscription states cost nothing
