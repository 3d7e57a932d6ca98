"""Data-point counting: the exact rules the Reflow client estimates with."""

from __future__ import annotations

import pytest

from engine.sandbox.datapoints import attributes_cost, purchase_cost, value_cost

T = "2024-01-01T00:00:00Z"


@pytest.mark.parametrize(("value", "cost"), [
    ("x", 1), (3, 1), (True, 1), (None, 1),
    ({"a": {"b": 1, "c": 2}}, 3),
    ({"a": 1, "b": {"c": {"d": 1}}}, 4),
    ({"a": [1, 2]}, 1),
    (["a", "b", "c"], 1),
    ([], 1),
    ([{"a": 1, "b": {"c": 1}}, {"d": 1}], 4),
    ([{}], 1),
    ({"add": ["a", "b"]}, 2),
    ({"add": ["a"], "remove": ["b", "c"]}, 3),
    ({"remove": []}, 0),
    ({"inc": 5}, 1),
])
def test_value_cost(value, cost):
    assert value_cost(value) == cost


def test_free_keys_cost_nothing():
    obj = {"external_id": "u", "_update_existing_only": False, "_merge_objects": True, "push_token_import": False,
           "email_subscribe": "opted_in", "push_subscribe": "subscribed", "subscription_groups": [],
           "push_tokens": []}
    assert attributes_cost(obj) == 0
    assert attributes_cost({"user_alias": {"alias_name": "a", "alias_label": "b"}}) == 0
    assert attributes_cost({"braze_id": "x"}) == 0


def test_email_and_phone_are_free_only_as_lookup_identifiers():
    assert attributes_cost({"email": "a@x.com", "plan": 1}) == 1
    assert attributes_cost({"phone": "+15555550123", "plan": 1}) == 1
    assert attributes_cost({"email": "a@x.com", "phone": "+15555550123"}) == 0
    assert attributes_cost({"external_id": "u", "email": "a@x.com", "phone": "+15555550123"}) == 2


def test_standard_fields_cost_one_each():
    assert attributes_cost({"external_id": "u", "first_name": "A", "country": "AU", "language": "en"}) == 3


def test_purchase_cost_counts_top_level_properties():
    assert purchase_cost({"properties": {"a": 1, "b": {"c": 1}}}) == 3
    assert purchase_cost({}) == 1


def test_server_total_matches_the_rules(client, sandbox):
    client.track(
        attributes=[
            {"external_id": "u1", "plan": "pro", "tags": ["a"], "car": {"make": "VW", "specs": {"hp": 1}},
             "email": "a@x.com", "email_subscribe": "opted_in"},            # 1 + 1 + 3 + 1 + 0 = 6
            {"email": "b@x.com", "n": {"inc": 1}, "t": {"add": ["x", "y"]}},  # 0 + 1 + 2 = 3
            {"external_id": "ghost", "_update_existing_only": True, "plan": "x"},  # 1 (billed though no-op)
            {"external_id": "bad", "email": "nope", "plan": "x"},          # rejected: 0
        ],
        events=[{"external_id": "u1", "name": "e", "time": T, "properties": {"a": 1, "b": 2}}],  # 1
        purchases=[{"external_id": "u1", "product_id": "p", "currency": "USD", "price": 1, "time": T,
                    "properties": {"a": 1, "b": {"c": 1}}}],                # 1 + 2 = 3
    )
    assert sandbox.stats()["data_points"] == 6 + 3 + 1 + 1 + 3


def test_unchanged_values_still_cost(client, sandbox):
    for _ in range(3):
        client.track(attributes=[{"external_id": "u1", "plan": "pro"}])
    assert sandbox.stats()["data_points"] == 3


def test_other_endpoints_cost_nothing(client, sandbox):
    client.track(attributes=[{"external_id": "u1"}])
    client.post("/users/alias/new", {"user_aliases": [{"external_id": "u1", "alias_name": "a", "alias_label": "l"}]})
    client.post("/subscription/status/set", {"subscription_group_id": "3f1c9a4e-2b7d-4c0a-9e55-0d6f8a1b2c3d",
                                             "subscription_state": "subscribed", "external_id": ["u1"]})
    client.post("/users/delete", {"external_ids": ["u1"]})
    assert sandbox.stats()["data_points"] == 0
