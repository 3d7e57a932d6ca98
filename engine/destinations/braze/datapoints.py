"""Data points (Braze billing) a payload object costs, by the same rules as the sandbox's counter
(engine/sandbox/datapoints.py; a test checks that both agree).

/users/track attributes object: each attribute sent costs by its value, except keys that cost nothing
(identifiers, flags, subscription states, push tokens); `email`/`phone` cost nothing when they are the
lookup identifier (no primary identifier in the object).
    scalar             1
    dict value         1 per key at every depth (dicts in dicts; lists are not entered):
                       {"a": {"b": 1, "c": 2}} → 3
    list of scalars    1
    list with dicts    keys (all depths) of each dict, at least 1
    {"add"/"remove"}   1 per value
    {"inc": n}         1
    null               1
Event: 1. Purchase: 1 + number of top-level property keys. Deletes, subscriptions, catalogs: 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FREE_KEYS = frozenset({
    "external_id", "user_alias", "braze_id", "_update_existing_only", "_merge_objects", "push_token_import",
    "email_subscribe", "push_subscribe", "subscription_groups", "push_tokens",
})
PRIMARY_IDENTIFIERS = ("external_id", "user_alias", "braze_id")


def attributes_object(obj: Mapping[str, Any]) -> int:
    lookup_by_secondary = not any(obj.get(key) is not None for key in PRIMARY_IDENTIFIERS)
    total = 0
    for key, value in obj.items():
        if key in FREE_KEYS:
            continue
        if key in ("email", "phone") and lookup_by_secondary:
            continue
        total += attribute_value(value)
    return total


def attribute_value(value: Any) -> int:
    if isinstance(value, Mapping):
        if len(value) == 1 and "inc" in value:
            return 1
        if value and set(value) <= {"add", "remove"} and all(isinstance(v, list) for v in value.values()):
            return sum(len(v) for v in value.values())
        return count_keys(value)
    if isinstance(value, list):
        if any(isinstance(item, Mapping) for item in value):
            return max(1, sum(count_keys(item) for item in value if isinstance(item, Mapping)))
        return 1
    return 1


def count_keys(value: Mapping[str, Any]) -> int:
    """Keys of a dict at every depth of nested dicts (lists inside are not entered)."""
    return sum(1 + (count_keys(item) if isinstance(item, Mapping) else 0) for item in value.values())


def event_object(obj: Mapping[str, Any]) -> int:
    return 1


def purchase_object(obj: Mapping[str, Any]) -> int:
    props = obj.get("properties")
    return 1 + (len(props) if isinstance(props, Mapping) else 0)
