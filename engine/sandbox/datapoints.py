"""Data-point accounting for /users/track, the rules the Reflow client estimates with.

Attributes object: +1 per key sent (changed or not), except the free keys below; `email` / `phone`
are free when they are the lookup identifier, i.e. whenever the object has no primary identifier
(external_id / user_alias / braze_id), both of them in that case. Per value:

    dict                  1 per key at every depth (dict values nested in dicts; lists are not entered)
    list of scalars       1
    list with dicts       sum of the dicts' keys (all depths), at least 1
    {"add"/"remove": []}  1 per value
    {"inc": n}            1
    null                  1
    scalar                1

Each event: 1. Each purchase: 1 + the number of top-level keys in `properties`.
Rejected objects cost 0; every other endpoint costs 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .validate import PRIMARY

FREE_KEYS = frozenset({
    "external_id", "user_alias", "braze_id", "_update_existing_only", "_merge_objects",
    "push_token_import", "email_subscribe", "push_subscribe", "subscription_groups", "push_tokens",
})


def attributes_cost(obj: Mapping[str, Any]) -> int:
    has_primary = any(obj.get(k) is not None for k in PRIMARY)
    total = 0
    for key, value in obj.items():
        if key in FREE_KEYS:
            continue
        if key in ("email", "phone") and not has_primary:
            continue
        total += value_cost(value)
    return total


def value_cost(value: Any) -> int:
    if isinstance(value, dict):
        keys = set(value)
        if keys == {"inc"}:
            return 1
        if keys and keys <= {"add", "remove"} and all(isinstance(value[k], list) for k in keys):
            return sum(len(value[k]) for k in keys)
        return count_keys(value)
    if isinstance(value, list):
        if any(isinstance(v, dict) for v in value):
            return max(1, sum(count_keys(v) for v in value if isinstance(v, dict)))
        return 1
    return 1


def count_keys(value: Mapping[str, Any]) -> int:
    return sum(1 + (count_keys(v) if isinstance(v, dict) else 0) for v in value.values())


def event_cost(obj: Mapping[str, Any]) -> int:
    return 1


def purchase_cost(obj: Mapping[str, Any]) -> int:
    properties = obj.get("properties")
    return 1 + (len(properties) if isinstance(properties, dict) else 0)
