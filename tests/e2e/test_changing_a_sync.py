"""Changing a sync after it ran, the way users do, through the real CLI against the sandbox.

Each test edits the sync YAML, the model SQL or the warehouse between commands, checks what the
plan said, and ends with Braze (read back from the sandbox) equal to the model under the CURRENT
mapping (tests/e2e/sync_story.py). A test that fails here is a place where Braze and Reflow
disagree without Reflow saying so; it is kept failing until the engine is fixed.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from braze_checks import SUBSCRIPTION_GROUP, assert_in_step
from sync_story import MISSING, Story, create_catalog, profile_value, set_sandbox_options

from engine.sandbox.testing import running_sandbox

pytestmark = pytest.mark.e2e

USERS = "braze_users"
TRACK = "/users/track"
# a mapping change touches every profile: the sync's max_changed_pct guard (50%) rightly asks first
ALLOW = ("--allow-guard", "max_changed_pct")


@pytest.fixture
def story(example_project, cli, braze_env) -> Story:
    return Story(example_project, cli, braze_env)


def first_sync(s: Story, *args: str) -> None:
    """The first full sync of the example project: everything lands."""
    s.ok("run", *args)
    s.assert_users_in_step()
    again = s.plan(*args)
    assert not again["has_changes"], [x["name"] for x in again["syncs"] if x["has_changes"]]


def add_customer(s: Story, customer_id: str, like: str, order_id: str, **values: Any) -> None:
    """A new customer copied from `like` (with `values` changed) and one order, so the model has it."""
    replace = ", ".join([f"? AS {k}" for k in ("customer_id", *values)])
    s.sql(f"INSERT INTO customers SELECT * REPLACE ({replace}) FROM customers WHERE customer_id = ?",
          [customer_id, *values.values(), like])
    s.sql("INSERT INTO orders VALUES (?, ?, TIMESTAMP '2026-01-02 10:00:00', 'completed', 10.00, 'USD', 'web')",
          [order_id, customer_id])
    s.sql("INSERT INTO order_items VALUES (?, 1, 'sku_0001', 1, 10.00)", [order_id])


def attr_requests(s: Story, mark: int) -> list[dict[str, Any]]:
    """/users/track attributes objects of a users sync (not subscription states) received since `mark`."""
    return [o for o in s.sent.attributes(mark)
            if set(o) - {"external_id", "_update_existing_only", "subscription_groups"}]


def assert_nothing_sent(s: Story, mark: int) -> None:
    sent = s.sent.since(mark)
    assert not sent, f"{len(sent)} request(s) sent, e.g. {sent[:2]}"


def no_changes_text(out: str) -> bool:
    return out.lstrip().startswith("No changes")


# ------------------------------------------------------------------------------ 1. mapping added


def test_mapping_added_sends_the_new_attribute_with_non_null_values_only(story):
    s = story
    first_sync(s)
    s.edit_fields(USERS, lambda f: f.update(ltv2="lifetime_value", phone_copy="phone"))
    model = s.model(USERS)
    with_phone = {r["customer_id"] for r in model if r["phone"] is not None}
    assert 0 < len(with_phone) < len(model)

    users = s.sync_of(s.plan("--select", USERS), USERS)
    fields = {f["field"]: f for f in users["fields"]}
    assert set(fields) == {"ltv2", "phone_copy"}
    assert (fields["ltv2"]["column"], fields["ltv2"]["rows"], fields["ltv2"]["nulled"]) == (
        "lifetime_value", len(model), 0)
    assert (fields["phone_copy"]["column"], fields["phone_copy"]["rows"], fields["phone_copy"]["nulled"]) == (
        "phone", len(with_phone), 0)
    assert (users["added"], users["changed"], users["removed"]) == (0, len(model), 0)
    assert users["unmapped"] == []
    text = s.ok("plan", "--select", USERS)
    assert "ltv2 ← lifetime_value" in text and "phone_copy ← phone" in text

    mark = s.sent.mark()
    s.ok("apply", "--yes", *ALLOW)
    sent = attr_requests(s, mark)
    assert len(sent) == len(model)
    for obj in sent:      # only the new attributes, never a null
        assert set(obj) - {"external_id"} <= {"ltv2", "phone_copy"}, obj
        assert all(v is not None for v in obj.values()), obj
    assert {o["external_id"] for o in sent if "phone_copy" in o} == with_phone
    s.assert_users_in_step()
    assert not s.plan()["has_changes"]


# ------------------------------------------------------------------------------ 2. attribute renamed


def test_renamed_attribute_with_on_unmapped_keep_leaves_the_old_one_in_braze(story):
    s = story
    first_sync(s)
    before = s.profiles()
    s.rename_field(USERS, "lifetime_value", "ltv")
    model = s.model(USERS)

    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert users["unmapped"] == [{"field": "lifetime_value", "rows_with_value": len(model), "action": "keep"}]
    assert [(f["field"], f["column"], f["rows"]) for f in users["fields"]] == [("ltv", "lifetime_value", len(model))]
    text = s.ok("plan", "--select", USERS)
    assert f"no longer synced: Braze keeps `lifetime_value` on {len(model)} profiles" in text, text

    mark = s.sent.mark()
    s.ok("apply", "--yes", *ALLOW)
    sent = attr_requests(s, mark)
    assert sent and all(set(o) == {"external_id", "ltv"} for o in sent), sent[:3]
    s.assert_users_in_step()
    for r in model:       # the old attribute is left as it was
        assert before[r["customer_id"]]["custom_attributes"]["lifetime_value"] == pytest.approx(
            s.sandbox.user(r["customer_id"])["custom_attributes"]["lifetime_value"])

    again = s.plan()
    assert not again["has_changes"] and s.sync_of(again, USERS)["unmapped"] == []
    out = s.ok("plan")
    assert no_changes_text(out), out
    mark = s.sent.mark()
    s.ok("apply", "--yes")
    assert_nothing_sent(s, mark)


def test_renamed_attribute_with_on_unmapped_unset_unsets_the_old_one_once(story):
    s = story
    first_sync(s)
    s.rename_field(USERS, "lifetime_value", "ltv")
    s.set_destination(USERS, on_unmapped="unset")
    model = s.model(USERS)

    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert users["unmapped"] == [{"field": "lifetime_value", "rows_with_value": len(model), "action": "unset"}]
    text = s.ok("plan", "--select", USERS)
    assert f"`lifetime_value` is unset on {len(model)} profiles" in text, text

    mark = s.sent.mark()
    # the unsets count as removals for the guards (max_removed_pct: 5) although no row is removed
    s.ok("apply", "--yes", *ALLOW, "--allow-guard", "max_removed_pct")
    sent = attr_requests(s, mark)
    assert sorted(o["external_id"] for o in sent if "lifetime_value" in o) == sorted(r["customer_id"] for r in model)
    assert all(o.get("lifetime_value", None) is None for o in sent)
    s.assert_users_in_step()
    assert s.unset_problems([r["customer_id"] for r in model], ["lifetime_value"]) == []

    again = s.plan()
    assert not again["has_changes"] and s.sync_of(again, USERS)["unmapped"] == []
    mark = s.sent.mark()
    s.ok("apply", "--yes")
    assert_nothing_sent(s, mark)


def test_renamed_with_on_unmapped_unset_and_a_customer_leaving_in_the_same_plan(story):
    """on_unmapped: unset promises the old attribute is unset on every profile holding it, and
    on_removed: unset that a customer who leaves keeps none of the synced attributes."""
    s = story
    first_sync(s)
    s.rename_field(USERS, "lifetime_value", "ltv")
    s.set_destination(USERS, on_unmapped="unset")
    s.sql("DELETE FROM customers WHERE customer_id = 'c_00002'")
    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert users["removed"] == 1
    assert users["unmapped"] == [{"field": "lifetime_value", "rows_with_value": len(s.model(USERS)) + 1,
                                  "action": "unset"}]
    s.ok("run", "--select", USERS, *ALLOW, "--allow-guard", "max_removed_pct")
    s.assert_users_in_step()
    problems = s.unset_problems(["c_00002"], ["lifetime_value", *s.mapping(USERS)])
    assert not problems, "\n".join(problems)
    assert not s.plan("--select", USERS)["has_changes"]


def test_rename_and_data_change_together(story):
    """The renamed attribute carries the new values; the old one keeps what Braze had."""
    s = story
    first_sync(s)
    before = s.profiles()
    s.rename_field(USERS, "lifetime_value", "ltv")
    s.sql("UPDATE orders SET total = total + 100 WHERE customer_id IN ('c_00002', 'c_00004') AND status <> 'cancelled'")
    s.ok("run", "--select", USERS, *ALLOW)
    s.assert_users_in_step()
    for cid in ("c_00002", "c_00004"):
        attrs = s.sandbox.user(cid)["custom_attributes"]
        assert attrs["lifetime_value"] == before[cid]["custom_attributes"]["lifetime_value"]
        assert attrs["ltv"] > attrs["lifetime_value"]
    assert not s.plan("--select", USERS)["has_changes"]


# ------------------------------------------------------------------------------ 3. removed, changed, re-added


def test_mapping_removed_data_changed_mapping_readded_sends_the_new_value(story):
    s = story
    first_sync(s)
    original = s.spec(USERS)["destination"]["fields"]
    s.edit_fields(USERS, lambda f: {k: v for k, v in f.items() if k != "loyalty_tier"})
    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert users["unmapped"][0]["field"] == "loyalty_tier"
    mark = s.sent.mark()
    s.ok("run", "--select", USERS)
    assert attr_requests(s, mark) == []          # keep: nothing to send

    s.sql("UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id IN ('c_00002', 'c_00004', 'c_00005')")
    s.edit_fields(USERS, lambda f: dict(original))
    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert users["changed"] > 0 and users["unmapped"] == []
    s.ok("run", "--select", USERS, *ALLOW)
    for cid in ("c_00002", "c_00004", "c_00005"):
        assert s.sandbox.user(cid)["custom_attributes"]["loyalty_tier"] == "platinum"
    s.assert_users_in_step()
    # the new platinum customers also enter the high_value cohort, a sync this run did not select
    assert not s.plan("--select", USERS)["has_changes"]


def test_mapping_removed_value_nulled_mapping_readded_clears_braze(story):
    """While `phone` is not mapped (on_unmapped: keep) Braze keeps each profile's phone. When the
    model's phone becomes null meanwhile and the mapping comes back, Braze must end with no phone."""
    s = story
    first_sync(s)
    original = s.spec(USERS)["destination"]["fields"]
    s.edit_fields(USERS, lambda f: {k: v for k, v in f.items() if k != "phone"})
    s.ok("run", "--select", USERS)
    nulled = [r[0] for r in s.sql("SELECT customer_id FROM customers WHERE phone IS NOT NULL AND NOT deleted "
                                  "ORDER BY customer_id LIMIT 3")]
    s.sql("UPDATE customers SET phone = NULL WHERE list_contains(?, customer_id)", [nulled])
    assert all(s.sandbox.user(c).get("phone") for c in nulled)   # Braze kept them while unmapped

    s.edit_fields(USERS, lambda f: dict(original))
    plan = s.plan("--select", USERS)
    s.ok("run", "--select", USERS, *ALLOW)
    problems = s.users_out_of_step()
    assert not problems, (f"plan said {s.sync_of(plan, USERS)['fields']}; " + "\n".join(problems[:5]))


# ------------------------------------------------------------------------------ 4. unmapped column changes


def test_unmapped_model_column_changed_on_every_row_plans_nothing(story):
    s = story
    s.edit_model(USERS, "    c.loyalty_tier,\n", "    c.loyalty_tier,\n    c.updated_at,\n    c.signup_at,\n")
    first_sync(s)
    s.sql("UPDATE customers SET updated_at = updated_at + INTERVAL 1 DAY, signup_at = signup_at - INTERVAL 1 DAY")
    plan = s.plan()
    users = s.sync_of(plan, USERS)
    assert not plan["has_changes"]
    assert (users["added"], users["changed"], users["removed"], users["to_send"]) == (0, 0, 0, 0)
    assert users["unchanged"] == users["total"] == len(s.model(USERS))
    assert users["fields"] == [] and users["unmapped"] == []
    out = s.ok("plan")
    assert no_changes_text(out), out
    assert s.plan_rows() == []                  # nothing planned or stored
    mark = s.sent.mark()
    out = s.ok("apply", "--yes")
    assert "no changes" in out
    assert_nothing_sent(s, mark)


# ------------------------------------------------------------------------------ 5. mode changed


def test_mode_upsert_to_update_resends_nothing(story):
    s = story
    first_sync(s)
    s.set_destination(USERS, mode="update")
    plan = s.plan()
    assert not plan["has_changes"]
    mark = s.sent.mark()
    out = s.ok("apply", "--yes")
    assert "no changes" in out
    assert_nothing_sent(s, mark)
    s.sql("UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id = 'c_00002'")
    s.ok("run", "--select", USERS)
    [obj] = attr_requests(s, mark)
    assert obj == {"external_id": "c_00002", "_update_existing_only": True, "loyalty_tier": "platinum"}
    s.assert_users_in_step()


def test_mode_update_with_skip_says_new_users_land_nowhere_and_switching_back_resends_nothing(story):
    """Under mode: update Braze silently ignores a new user (201, nothing kept). With missing_users: skip
    the plan says so when it happens; switching back to upsert applies from then on and re-sends nothing."""
    s = story
    first_sync(s, "--select", USERS)
    s.set_destination(USERS, mode="update", missing_users="skip")
    add_customer(s, "c_09001", like="c_00002", order_id="o_9000001", email="new.customer9001@example.com")
    plan = s.plan("--select", USERS)
    [note] = [n for n in s.sync_of(plan, USERS)["notes"] if n.startswith("missing_users: skip")]
    assert "Braze keeps nothing for a user it does not have" in note and "1 row(s) sent" in note, note
    s.ok("run", "--select", USERS)
    assert s.sandbox.user("c_09001") is None          # update-only: Braze kept nothing, as the plan said
    s.edit_spec(USERS, lambda d: (d["destination"].pop("missing_users"), d["destination"].update(mode="upsert")))
    assert not s.plan("--select", USERS)["has_changes"]


def test_mode_update_holds_a_new_user_back_and_switching_back_sends_it(story):
    """Under mode: update with missing_users: wait (the default) a row whose user Braze does not have is
    held back, pending, not recorded as sent; switching back to upsert delivers it (Braze creates it)."""
    s = story
    first_sync(s, "--select", USERS)
    s.set_destination(USERS, mode="update")
    add_customer(s, "c_09001", like="c_00002", order_id="o_9000001", email="new.customer9001@example.com")
    plan = s.plan("--select", USERS)
    assert any(n.startswith("missing_users: wait") for n in s.sync_of(plan, USERS)["notes"]), plan
    s.ok("run", "--select", USERS)
    assert s.sandbox.user("c_09001") is None
    s.set_destination(USERS, mode="upsert")
    plan = s.plan("--select", USERS)
    assert s.sync_of(plan, USERS)["retry"] == 1, plan
    s.ok("run", "--select", USERS)
    assert s.sandbox.user("c_09001") is not None
    s.assert_users_in_step()


# ------------------------------------------------------------------------------ 6. mapped column renamed


def test_mapped_column_renamed_in_the_model_fails_that_sync_only(story):
    s = story
    first_sync(s)
    before = s.profiles()
    s.edit_model(USERS, "::double as lifetime_value", "::double as lifetime_total")
    s.sql("UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id = 'c_00002'")
    s.sql("UPDATE products SET price = price + 1 WHERE product_id = 'sku_0001'")
    s.sql("UPDATE customers SET newsletter_opt_in = NOT newsletter_opt_in WHERE customer_id = 'c_00004'")

    mark = s.sent.mark()
    code, out, err = s("run")
    assert code == 1, out + err
    message = out + err
    m = re.search(r"syncs/braze_users\.yml:(\d+):(\d+)", message)
    assert m, message
    assert "destination.fields.lifetime_value" in message
    assert "column 'lifetime_value' is not returned by model 'braze_users'" in message
    assert "did you mean 'lifetime_total'" in message.lower(), message
    assert attr_requests(s, mark) == []              # nothing sent for that sync
    assert s.profiles()["c_00002"]["custom_attributes"] == before["c_00002"]["custom_attributes"]
    # the other syncs were applied in the same run
    s.assert_catalog_in_step()
    state = s.sandbox.user("c_00004")["subscription_groups"][SUBSCRIPTION_GROUP]
    [(opt_in,)] = s.sql("SELECT newsletter_opt_in FROM customers WHERE customer_id = 'c_00004'")
    assert state == ("subscribed" if opt_in else "unsubscribed")

    s.edit_fields(USERS, lambda f: f.update(lifetime_value="lifetime_total"))
    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert (users["changed"], [f["field"] for f in users["fields"]]) == (1, ["loyalty_tier"])
    s.ok("run")
    s.assert_users_in_step()


# ------------------------------------------------------------------------------ 7. destination changes


def stale_plan(s: Story) -> str:
    """A plan made before a change, with something to send (a price moved)."""
    s.sql("UPDATE products SET price = price + 2 WHERE product_id = 'sku_0002'")
    s.sql("UPDATE customers SET loyalty_tier = 'silver' WHERE customer_id = 'c_00005'")
    plan = s.plan()
    assert plan["has_changes"]
    return str(plan["plan_id"])


def assert_refused(s: Story, plan_id: str) -> None:
    mark = s.sent.mark()
    code, out, err = s("apply", plan_id, "--yes")
    assert code == 1, out + err
    assert "plan is stale" in err + out and "changed since the plan was made" in err + out, err + out
    assert_nothing_sent(s, mark)


def assert_restart(s: Story, sync: str, *expected: str, args: tuple[str, ...] = ()) -> dict[str, Any]:
    plan = s.plan(*args)
    sp = s.sync_of(plan, sync)
    assert sp["restart"] and sp["restart"].startswith("destination changed: "), sp["restart"]
    assert sp["restart"].endswith("; the sync starts again")
    for text in expected:
        assert text in sp["restart"], sp["restart"]
    assert sp["has_changes"] and sp["first_run"]
    assert sp["removed"] == 0 and sp["changed"] == 0 and sp["added"] == sp["total"]
    out = s.ok("plan", *args)
    assert "No changes" not in out and sp["restart"] in out, out
    return sp


def test_catalog_changed_starts_the_sync_again(story):
    s = story
    first_sync(s)
    old = stale_plan(s)
    create_catalog(s.sandbox, "products_v2")
    products_before = s.sandbox.catalog_items("products")
    s.set_destination("catalog_products", catalog="products_v2")
    assert_refused(s, old)

    sp = assert_restart(s, "catalog_products", "catalog products → products_v2")
    assert sp["added"] == len(s.model("catalog_products"))
    mark = s.sent.mark()
    s.ok("apply", "--yes")
    assert [r for r in s.sent.to("/catalogs/products/", mark)] == []       # old catalog untouched
    assert not [r for r in s.sent.since(mark) if r.method == "DELETE"]
    assert s.sandbox.catalog_items("products") == products_before
    s.assert_catalog_in_step()
    s.assert_users_in_step()
    assert not s.plan()["has_changes"]


def test_endpoint_changed_starts_every_sync_again(story, monkeypatch):
    s = story
    first_sync(s)
    old = stale_plan(s)
    with running_sandbox() as second:
        create_catalog(second, "products")
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", second.url)
        monkeypatch.setenv("BRAZE_API_KEY", second.api_key)
        assert_refused(s, old)
        plan = s.plan()
        for sp in plan["syncs"]:
            assert sp["restart"] and f"endpoint {s.sandbox.url.split('//')[1]} → {second.url.split('//')[1]}" in (
                sp["restart"]), sp["restart"]
            assert sp["first_run"] and sp["removed"] == 0
        mark = s.sent.mark()
        s.ok("apply", "--yes")
        assert_nothing_sent(s, mark)                # the first workspace gets nothing
        assert_in_step(s.project, second)
        s.assert_users_in_step(sandbox=second)
        assert not s.plan()["has_changes"]


def test_identifier_changed_starts_again_and_no_profile_loses_a_value(story):
    s = story
    first_sync(s)
    old = stale_plan(s)
    before = s.profiles()
    s.edit_model(USERS, "    c.customer_id,\n", "    c.customer_id,\n    'x' || c.customer_id AS ext_id,\n")
    s.set_destination(USERS, identifier={"external_id": "ext_id"})
    assert_refused(s, old)

    assert_restart(s, USERS, "identifier external_id from column customer_id → external_id from column ext_id",
                   args=("--select", USERS))
    mark = s.sent.mark()
    s.ok("run", "--select", USERS)
    sent = attr_requests(s, mark)
    assert all(o["external_id"].startswith("x") for o in sent)
    assert all(v is not None for o in sent for v in o.values()), "a restart sends no unsets"
    s.assert_users_in_step()
    after = s.profiles()
    changed = [cid for cid, p in before.items() if after.get(cid) != p]
    assert changed == [], f"old profiles changed: {changed[:5]}"
    assert not s.plan("--select", USERS)["has_changes"]


def test_primary_key_changed_starts_again_and_no_profile_loses_a_value(story):
    s = story
    first_sync(s)
    old = stale_plan(s)
    s.edit_spec(USERS, lambda d: d.update(primary_key="email"))
    assert_refused(s, old)
    sp = assert_restart(s, USERS, "primary key customer_id → email", args=("--select", USERS))
    assert sp["added"] == len(s.model(USERS))
    mark = s.sent.mark()
    s.ok("run", "--select", USERS)
    sent = attr_requests(s, mark)
    assert len(sent) == len(s.model(USERS))
    assert all(v is not None for o in sent for v in o.values()), "a restart sends no unsets"
    s.assert_users_in_step()
    assert not s.plan("--select", USERS)["has_changes"]


def test_primary_key_changed_while_a_value_became_null(story):
    """The same profiles, keyed anew: a restart sends every row as added, and an added row carries
    only its non-null values. A phone that became null in the same plan must not stay in Braze."""
    s = story
    first_sync(s)
    [(cid,)] = s.sql("SELECT customer_id FROM customers WHERE phone IS NOT NULL AND NOT deleted "
                     "ORDER BY customer_id LIMIT 1")
    s.sql("UPDATE customers SET phone = NULL WHERE customer_id = ?", [cid])
    s.edit_spec(USERS, lambda d: d.update(primary_key="email"))
    assert_restart(s, USERS, "primary key customer_id → email", args=("--select", USERS))
    s.ok("run", "--select", USERS)
    problems = s.users_out_of_step()
    assert not problems, "\n".join(problems[:5])


def test_destination_change_under_first_run_baseline_sends_nothing_and_says_so(story):
    s = story
    first_sync(s)
    create_catalog(s.sandbox, "products_v2")
    s.edit_spec("catalog_products", lambda d: d.update(first_run="baseline"))
    s.set_destination("catalog_products", catalog="products_v2")
    plan = s.plan("--select", "catalog_products")
    sp = s.sync_of(plan, "catalog_products")
    assert sp["restart"] and sp["first_run"] and sp["baseline"] == sp["total"]
    assert any("baseline" in n for n in sp["notes"]), sp["notes"]
    mark = s.sent.mark()
    s.ok("apply", "--yes")
    assert_nothing_sent(s, mark)


# ------------------------------------------------------------------------------ 8. two keys, one external_id


def test_two_keys_addressing_one_external_id_are_refused_before_sending(story):
    s = story
    first_sync(s)
    before = s.profiles()
    s.edit_model(USERS, "    c.customer_id,\n",
                 "    c.customer_id,\n    CASE WHEN c.customer_id IN ('c_00002', 'c_00004') THEN 'shared' "
                 "ELSE c.customer_id END AS ext,\n")
    s.set_destination(USERS, identifier={"external_id": "ext"})
    code, out, err = s("plan", "--select", USERS)
    assert code == 1
    assert "external_id 'shared': keys c_00002, c_00004" in err, err
    mark = s.sent.mark()
    code, out, err = s("run")
    assert code == 1, out + err
    assert "external_id 'shared': keys c_00002, c_00004" in err and "Nothing was sent" in err, err
    assert attr_requests(s, mark) == []
    for cid in ("c_00002", "c_00004", "c_00001"):
        assert s.profiles()[cid]["custom_attributes"] == before[cid]["custom_attributes"]
    assert s.sandbox.user("shared") is None


# ------------------------------------------------------------------------------ 9. removed + added, same id


def use_ext_ref(s: Story) -> None:
    """braze_users identified by `coalesce(ext_ref, customer_id)`: a customer can take over a profile."""
    s.sql("ALTER TABLE customers ADD COLUMN ext_ref VARCHAR")
    s.edit_model(USERS, "    c.customer_id,\n", "    c.customer_id,\n    coalesce(c.ext_ref, c.customer_id) AS ext,\n")
    s.set_destination(USERS, identifier={"external_id": "ext"})


def test_removed_and_added_key_with_one_external_id_keep_the_added_values(story):
    s = story
    use_ext_ref(s)
    first_sync(s)
    assert s.sandbox.user("c_00002")["phone"]
    s.sql("DELETE FROM customers WHERE customer_id = 'c_00002'")
    add_customer(s, "c_09002", like="c_00004", order_id="o_9000002", ext_ref="c_00002", phone=None,
                 loyalty_tier="platinum", email="taker.9002@example.com")
    plan = s.plan("--select", USERS)
    users = s.sync_of(plan, USERS)
    assert (users["added"], users["removed"]) == (1, 1)
    assert any("address the same Braze user" in n for n in users["notes"]), users["notes"]
    mark = s.sent.mark()
    s.ok("run", "--select", USERS)
    sent = [o for o in attr_requests(s, mark) if o["external_id"] == "c_00002"]
    assert len(sent) == 1, sent
    profile = s.sandbox.user("c_00002")
    assert profile["custom_attributes"]["loyalty_tier"] == "platinum"
    assert profile["email"] == "taker.9002@example.com"
    assert "phone" not in profile
    s.assert_users_in_step()
    assert not s.plan("--select", USERS)["has_changes"]


def test_external_id_taken_over_by_a_changed_key_holds_only_the_new_rows_values(story):
    """c_00002 moves to another external_id and c_00004 takes c_00002's in the same plan (no row
    is removed). Profile c_00002 must then hold c_00004's values only: nothing of c_00002's."""
    s = story
    use_ext_ref(s)
    first_sync(s)
    assert s.sandbox.user("c_00002")["phone"]
    s.sql("UPDATE customers SET ext_ref = 'moved_00002' WHERE customer_id = 'c_00002'")
    s.sql("UPDATE customers SET ext_ref = 'c_00002', phone = NULL WHERE customer_id = 'c_00004'")
    plan = s.plan("--select", USERS)
    users = s.sync_of(plan, USERS)
    assert users["changed"] == 2
    s.ok("run", "--select", USERS)
    problems = s.users_out_of_step()
    assert not problems, (f"notes: {users['notes']}\n" + "\n".join(problems[:8]))


# ------------------------------------------------------------------------------ 10. applied, no answer


def with_own_sandbox(s: Story, monkeypatch: Any, **options: Any) -> Any:
    ctx = running_sandbox(**options)
    handle = ctx.__enter__()
    s.use_sandbox(handle)
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", handle.url)
    monkeypatch.setenv("BRAZE_API_KEY", handle.api_key)
    create_catalog(handle, "products")
    return ctx


@pytest.mark.parametrize("fault", ["process_then_fail", "latency"])
def test_applied_without_answer_then_warehouse_put_back_restores_braze(story, monkeypatch, fault):
    s = story
    ctx = with_own_sandbox(s, monkeypatch)
    try:
        s.edit_project(lambda p: p["connections"]["braze"].update(timeout=1, max_retries=0))
        first_sync(s)
        tiers = dict(s.sql("SELECT customer_id, loyalty_tier FROM customers WHERE customer_id IN "
                           "('c_00002', 'c_00004', 'c_00005')"))
        [(price,)] = s.sql("SELECT price FROM products WHERE product_id = 'sku_0003'")
        s.sql("UPDATE customers SET loyalty_tier = 'platinum' WHERE list_contains(?, customer_id)", [list(tiers)])
        s.sql("UPDATE products SET price = price + 5 WHERE product_id = 'sku_0003'")
        if fault == "latency":
            set_sandbox_options(s.sandbox, latency_ms=1600)
        else:
            set_sandbox_options(s.sandbox, process_then_fail_rate=1.0, process_then_fail_kind="504")
        code, out, err = s("run", "--select", USERS, "catalog_products")
        assert code == 3, out + err
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                s.sandbox.user(c)["custom_attributes"]["loyalty_tier"] != "platinum" for c in tiers):
            time.sleep(0.05)
        assert all(s.sandbox.user(c)["custom_attributes"]["loyalty_tier"] == "platinum" for c in tiers)
        time.sleep(0.8 if fault == "latency" else 0)      # the late catalog request lands too
        set_sandbox_options(s.sandbox, latency_ms=0, process_then_fail_rate=0.0)

        for cid, tier in tiers.items():               # the warehouse is put back
            s.sql("UPDATE customers SET loyalty_tier = ? WHERE customer_id = ?", [tier, cid])
        s.sql("UPDATE products SET price = ? WHERE product_id = 'sku_0003'", [price])
        plan = s.plan()
        users = s.sync_of(plan, USERS)
        assert users["to_send"] >= len(tiers), users
        s.ok("run")
        s.assert_users_in_step()
        s.assert_catalog_in_step()
        assert not s.plan()["has_changes"]
    finally:
        ctx.__exit__(None, None, None)


def test_late_answer_then_the_warehouse_put_back_once_it_landed(story, monkeypatch):
    """The request that timed out lands in Braze after all; the next run (after it landed) restores the
    value although the model equals the last acknowledged snapshot. (A correction sent while the late
    request is still on its way can lose to it: README, "A late answer can still win".)"""
    s = story
    ctx = with_own_sandbox(s, monkeypatch)
    try:
        s.edit_project(lambda p: p["connections"]["braze"].update(timeout=1, max_retries=0))
        first_sync(s, "--select", USERS)
        [(tier,)] = s.sql("SELECT loyalty_tier FROM customers WHERE customer_id = 'c_00002'")
        s.sql("UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id = 'c_00002'")
        set_sandbox_options(s.sandbox, latency_ms=2500)
        code, out, err = s("run", "--select", USERS)
        assert code == 3 and "outcome unknown" in out + err, out + err
        set_sandbox_options(s.sandbox, latency_ms=0)
        time.sleep(2)                                  # the first request lands now
        assert s.sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"] == "platinum"
        s.sql("UPDATE customers SET loyalty_tier = ? WHERE customer_id = 'c_00002'", [tier])
        s.ok("run", "--select", USERS)
        assert s.sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"] == tier
        assert not s.plan("--select", USERS)["has_changes"]
    finally:
        ctx.__exit__(None, None, None)


# ------------------------------------------------------------------------------ 11. type change


def test_type_change_is_warned_with_a_count_and_an_example(story):
    s = story
    first_sync(s)
    s.edit_model(USERS, "coalesce(t.orders_count, 0)::integer as orders_count",
                 "coalesce(t.orders_count, 0)::varchar as orders_count")
    model = s.model(USERS)
    users = s.sync_of(s.plan("--select", USERS), USERS)
    [field] = [f for f in users["fields"] if f["field"] == "orders_count"]
    assert field["type_changes"] == len(model)
    sample = field["type_sample"]
    assert (sample["old_type"], sample["new_type"]) == ("number", "string")
    text = s.ok("plan", "--select", USERS)
    m = re.search(r"warning: orders_count changes type on ([\d,]+) rows \(number → string, e\.g\. (c_\d+): "
                  r"(\d+) → ['\"](\d+)['\"]\)", text)
    assert m, text
    assert int(m.group(1).replace(",", "")) == len(model) and m.group(3) == m.group(4)
    s.ok("apply", "--yes", *ALLOW)
    s.assert_users_in_step()
    assert s.sandbox.user("c_00002")["custom_attributes"]["orders_count"] == str(
        next(r["orders_count"] for r in model if r["customer_id"] == "c_00002"))


def test_type_change_on_some_rows_of_a_json_column(story):
    s = story
    first_sync(s)
    s.edit_model(USERS, "coalesce(t.orders_count, 0)::integer as orders_count",
                 "CASE WHEN coalesce(t.orders_count, 0) >= 12 THEN to_json('many') "
                 "ELSE to_json(coalesce(t.orders_count, 0)::integer) END as orders_count")
    many = [r["customer_id"] for r in s.model(USERS) if r["orders_count"] == '"many"']
    assert 0 < len(many) < len(s.model(USERS))
    users = s.sync_of(s.plan("--select", USERS), USERS)
    [field] = [f for f in users["fields"] if f["field"] == "orders_count"]
    assert field["type_changes"] == len(many) and field["rows"] == len(many), field
    text = s.ok("plan", "--select", USERS)
    assert f"warning: orders_count changes type on {len(many)} row" in text, text
    s.ok("apply", "--yes")
    for r in s.model(USERS):
        got = profile_value(s.sandbox.user(r["customer_id"]), "orders_count")
        assert got == json.loads(r["orders_count"]), (r["customer_id"], got, r["orders_count"])


# ------------------------------------------------------------------------------ 12. natural key order


NUMBERED_SYNC = """\
name: numbered
model: numbered
primary_key: id
destination:
  connection: braze
  object: users
  mode: upsert
  identifier: {external_id: id}
  fields: {note: note}
  on_removed: unset
first_run: send_all
"""


def test_numeric_keys_sort_naturally_in_plan_output(story):
    s = story
    (s.project / "syncs" / "numbered.yml").write_text(NUMBERED_SYNC)
    (s.project / "models" / "numbered.sql").write_text(
        "select i::integer as id, 'note ' || i::varchar as note from range(1, 13) as t(i)\n")
    text = s.ok("plan", "--select", "numbered")
    shown = re.findall(r"^\s+added (\S+):", text, re.M)
    assert shown == ["1", "2", "3"], text
    rows = s.plan_rows("--sync", "numbered")
    assert [r["key"] for r in rows] == [str(i) for i in range(1, 13)]
    s.ok("apply", "--yes")
    (s.project / "models" / "numbered.sql").write_text(
        "select i::integer as id, case when i in (2, 10, 11) then 'changed' else 'note ' || i::varchar end as note "
        "from range(1, 13) as t(i)\n")
    text = s.ok("plan", "--select", "numbered")
    assert re.findall(r"^\s+changed (\S+):", text, re.M) == ["2", "10", "11"], text
    assert [r["key"] for r in s.plan_rows("--sync", "numbered")] == ["2", "10", "11"]
    s.ok("apply", "--yes")
    assert s.sandbox.user("10")["custom_attributes"]["note"] == "changed"


# ------------------------------------------------------------------------------ beyond the list


def test_nulls_skip_then_unset_clears_what_braze_kept(story):
    """With nulls: skip a value that became null is left in Braze (as asked). Switching to
    nulls: unset must then clear it: the model says null and Braze still holds the old value."""
    s = story
    s.set_destination(USERS, nulls="skip")
    first_sync(s)
    [(cid, phone)] = s.sql("SELECT customer_id, phone FROM customers WHERE phone IS NOT NULL AND NOT deleted "
                           "ORDER BY customer_id LIMIT 1")
    s.sql("UPDATE customers SET phone = NULL WHERE customer_id = ?", [cid])
    s.ok("run", "--select", USERS)
    assert s.sandbox.user(cid)["phone"] == phone          # skip: Braze keeps it
    s.assert_users_in_step(skip_nulls=True)
    s.set_destination(USERS, nulls="unset")
    plan = s.plan("--select", USERS)
    s.ok("run", "--select", USERS)
    problems = s.users_out_of_step()
    assert not problems, f"plan has_changes={plan['has_changes']}; " + "\n".join(problems[:5])


def test_fields_key_removed_maps_every_column_and_sends_nothing_new(story):
    s = story
    first_sync(s)
    s.edit_spec(USERS, lambda d: d["destination"].pop("fields"))
    plan = s.plan()
    assert not plan["has_changes"], s.sync_of(plan, USERS)
    mark = s.sent.mark()
    s.ok("apply", "--yes")
    assert_nothing_sent(s, mark)
    s.edit_model(USERS, "    c.loyalty_tier,\n", "    c.loyalty_tier,\n    c.signup_at,\n")
    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert [f["field"] for f in users["fields"]] == ["signup_at"]
    s.ok("apply", "--yes", *ALLOW)
    sent = attr_requests(s, mark)
    assert sent and all(set(o) == {"external_id", "signup_at"} for o in sent)
    s.assert_users_in_step()
    assert not s.plan()["has_changes"]


def test_sync_file_renamed_does_not_send_events_twice(story):
    """A sync's name comes from its file unless it has `name:`: renaming the file makes a new sync. One
    with the destination of a sync the project lost is refused until the user says what it is."""
    s = story
    first_sync(s)
    path = s.project / "syncs" / "order_events.yml"
    s.edit_spec("order_events", lambda d: d.pop("name"))       # the name now comes from the file
    assert not s.plan()["has_changes"]
    path.rename(s.project / "syncs" / "orders_placed.yml")
    code, out, err = s.cli("run")
    assert code == 1, out + err
    assert ("sync 'orders_placed' is new, but the state holds sync 'order_events' (2,059 rows) with the same "
            "destination") in err and "reflow state rename order_events orders_placed" in err, err
    s.ok("state", "rename", "order_events", "orders_placed")
    assert not s.plan()["has_changes"]
    s.ok("run")
    sent = [e["properties"]["order_id"] for e in s.sandbox.events()]
    assert len(sent) == len(set(sent)), "an order_placed event sits twice in Braze"


def test_reset_then_a_customer_leaves_unsets_their_attributes(story):
    s = story
    first_sync(s)
    s.ok("reset", USERS, "--yes")
    s.sql("DELETE FROM customers WHERE customer_id = 'c_00002'")
    plan = s.plan("--select", USERS)            # every row again in full: the change guard says so
    assert s.sync_of(plan, USERS)["changed"] == len(s.model(USERS)) and s.sync_of(plan, USERS)["removed"] == 1
    s.ok("run", "--select", USERS, "--allow-guard", "max_changed_pct")
    s.assert_users_in_step()
    problems = s.unset_problems(["c_00002"], list(s.mapping(USERS)))
    assert not problems, "on_removed: unset after reflow reset:\n" + "\n".join(problems[:5])


def test_second_plan_before_applying_the_first(story):
    s = story
    first_sync(s)
    s.sql("UPDATE customers SET loyalty_tier = 'platinum' WHERE customer_id = 'c_00002'")
    first_plan = s.plan()["plan_id"]
    s.sql("UPDATE customers SET loyalty_tier = 'gold' WHERE customer_id = 'c_00002'")
    second = s.plan()["plan_id"]
    mark = s.sent.mark()
    code, out, err = s("apply", first_plan, "--yes")
    assert code == 1 and "superseded" in err + out, out + err
    assert_nothing_sent(s, mark)
    s.ok("apply", second, "--yes")
    code, out, err = s("apply", second, "--yes")
    assert code == 1 and "already applied" in err + out
    s.assert_users_in_step()
    assert s.sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"] == "gold"


def test_rename_away_and_back_sends_the_attribute_again(story):
    """lifetime_value → ltv → lifetime_value (on_unmapped: keep): the plan says Braze keeps `ltv`,
    and `lifetime_value` is sent again on every profile."""
    s = story
    first_sync(s)
    s.rename_field(USERS, "lifetime_value", "ltv")
    s.ok("run", "--select", USERS, *ALLOW)
    s.rename_field(USERS, "ltv", "lifetime_value")
    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert users["unmapped"] == [{"field": "ltv", "rows_with_value": len(s.model(USERS)), "action": "keep"}]
    s.ok("run", "--select", USERS, *ALLOW)
    s.assert_users_in_step()
    assert profile_value(s.sandbox.user("c_00002"), "ltv") is not MISSING


def test_on_removed_ignore_then_unset_applies_to_rows_leaving_from_then_on(story):
    """Customers who left while on_removed was ignore keep their attributes (as asked, and the plan said
    so then). Switching to on_removed: unset applies to customers who leave from then on (README,
    "Changing a sync")."""
    s = story
    s.set_destination(USERS, on_removed="ignore")
    first_sync(s)
    s.sql("DELETE FROM customers WHERE customer_id = 'c_00002'")
    s.plan("--select", USERS)
    rows = s.plan_rows("--sync", USERS, "--op", "removed")
    assert [(r["key"], r["reason"]) for r in rows] == [("c_00002", "removed from the model; on_removed is ignore")]
    s.ok("run", "--select", USERS)
    assert s.sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"]     # ignore: kept
    s.set_destination(USERS, on_removed="unset")
    s.sql("DELETE FROM customers WHERE customer_id = 'c_00003'")
    s.ok("run", "--select", USERS)
    assert not s.unset_problems(["c_00003"], list(s.mapping(USERS)))
    assert s.sandbox.user("c_00002")["custom_attributes"]["loyalty_tier"]     # left before: not unset


PAIRS_SYNC = """\
name: pairs
model: pairs
primary_key: [grp, n]
destination:
  connection: braze
  object: users
  mode: upsert
  identifier: {external_id: ext}
  fields: {note: note}
first_run: send_all
"""


def test_composite_numeric_keys_sort_naturally(story):
    s = story
    (s.project / "syncs" / "pairs.yml").write_text(PAIRS_SYNC)
    (s.project / "models" / "pairs.sql").write_text(
        "select 1 as grp, i::integer as n, 'p1-' || i::varchar as ext, 'note' as note from range(1, 12) as t(i)\n")
    s.ok("plan", "--select", "pairs")
    keys = [r["key"] for r in s.plan_rows("--sync", "pairs")]
    numbers = [json.loads(k)[1] for k in keys]
    assert numbers == [str(i) for i in range(1, 12)], keys


# ------------------------------------------------------------------------------ a list of timestamps


def test_a_list_of_timestamps_is_sent_as_iso_text_and_plans_nothing_again(story):
    """A TIMESTAMPTZ[] column (once refused: its type was taken for a timestamp) is an array attribute of
    ISO texts in UTC to the millisecond, as a single timestamp is: a change under the millisecond or of
    the session's time zone plans nothing; a millisecond is a change."""
    s = story
    first_sync(s)
    s.edit_model(USERS, "    t.last_order_at,\n", "    t.last_order_at,\n    [t.last_order_at::timestamptz, "
                 "timestamptz '2026-03-01 12:00:00.123456+02'] as seen_at,\n")
    s.edit_fields(USERS, lambda f: f.update(seen_at="seen_at"))
    s.ok("run", "--select", USERS, *ALLOW)
    model = s.model(USERS)
    one = model[0]["customer_id"]
    seen = profile_value(s.sandbox.user(one), "seen_at")
    assert isinstance(seen, list) and seen[1] == "2026-03-01T10:00:00.123Z", seen
    assert seen[0].endswith("Z") and len(seen[0]) == len("2026-03-01T10:00:00.123Z"), seen
    assert not s.plan("--select", USERS)["has_changes"]
    s.edit_model(USERS, "12:00:00.123456+02", "12:00:00.123999+02")       # under the millisecond
    assert not s.plan("--select", USERS)["has_changes"]
    s.edit_model(USERS, "12:00:00.123999+02", "12:00:00.124+02")
    users = s.sync_of(s.plan("--select", USERS), USERS)
    assert users["changed"] == len(model), users
    s.ok("run", "--select", USERS, *ALLOW)
    assert profile_value(s.sandbox.user(one), "seen_at")[1] == "2026-03-01T10:00:00.124Z"
    assert not s.plan("--select", USERS)["has_changes"]
