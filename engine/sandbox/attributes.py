"""Applying a validated attributes object to a profile (braze-api.md §2.5).

- null removes; `{"inc": n}` increments (a missing or non-numeric value counts as 0);
- arrays of scalars are de-duplicated; `{"add": [...]}` moves existing values to the end;
  `{"remove": [...]}` runs before `add`; the oldest elements drop off past the max length (FIFO);
- nested objects replace by default and deep-merge with `"_merge_objects": true` (a null inside a
  merged object removes that key);
- arrays of objects take `$add`, `$update` (deep merge of `$new_object`) and `$remove` (all matches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.isodata import country_code

from .options import SandboxOptions
from .store import Store, User
from .validate import CONTROL_KEYS, MAX_STRING, STANDARD_FIELDS

_time_zones: frozenset[str] | None = None


def _is_time_zone(value: str) -> bool:
    global _time_zones
    if _time_zones is None:
        import zoneinfo

        _time_zones = frozenset(zoneinfo.available_timezones())
    return value in _time_zones


def apply_attributes(store: Store, user: User, obj: Mapping[str, Any], options: SandboxOptions) -> None:
    merge = obj.get("_merge_objects") is True
    for key, value in obj.items():
        if key in CONTROL_KEYS:
            continue
        if key in STANDARD_FIELDS:
            _apply_standard(store, user, key, value)
        else:
            _apply_custom(user.custom_attributes, key, value, merge, options)
    store.touch(user)


def _apply_standard(store: Store, user: User, key: str, value: Any) -> None:
    if key in ("email", "phone"):
        store.set_contact(user, key, value)
    elif key == "subscription_groups":
        for group in value or []:
            user.subscription_groups[group["subscription_group_id"]] = group["subscription_state"]
    elif value is None:
        user.attributes.pop(key, None)
    elif key == "country":
        user.attributes["country"] = country_code(value)     # unmappable → stored null
    elif key == "time_zone":
        if _is_time_zone(value):                             # invalid values are ignored
            user.attributes["time_zone"] = value
    else:
        user.attributes[key] = value


def _apply_custom(target: dict[str, Any], key: str, value: Any, merge: bool, options: SandboxOptions) -> None:
    if value is None:
        target.pop(key, None)
        return
    if isinstance(value, str):
        target[key] = value[:MAX_STRING]
        return
    if isinstance(value, list):
        if any(isinstance(v, dict) for v in value):
            target[key] = [_truncated(v) for v in value]
        else:
            target[key] = _capped(_dedup([_truncated(v) for v in value]), options)
        return
    if not isinstance(value, dict):
        target[key] = value
        return
    keys = set(value)
    if keys == {"inc"}:
        current = target.get(key)
        base = current if isinstance(current, int | float) and not isinstance(current, bool) else 0
        target[key] = base + value["inc"]
    elif keys <= {"add", "remove"} and keys:
        current = target.get(key)
        items = list(current) if isinstance(current, list) else []
        removed = {_hashable(v) for v in value.get("remove", [])}
        items = [v for v in items if _hashable(v) not in removed]
        for added in value.get("add", []):
            added = _truncated(added)
            items = [v for v in items if v != added] + [added]
        target[key] = _capped(items, options)
    elif keys <= {"$add", "$update", "$remove"} and keys:
        current = target.get(key)
        target[key] = _object_array_ops(current if isinstance(current, list) else [], value)
    else:
        current = target.get(key)
        if merge and isinstance(current, dict):
            target[key] = _deep_merge(current, value)
        else:
            target[key] = _copied(value)


def _object_array_ops(items: list[Any], ops: Mapping[str, Any]) -> list[Any]:
    items = list(items)
    for entry in ops.get("$remove", []):
        k, v = entry["$identifier_key"], entry["$identifier_value"]
        items = [i for i in items if not (isinstance(i, dict) and k in i and i[k] == v)]
    for entry in ops.get("$update", []):
        k, v = entry["$identifier_key"], entry["$identifier_value"]
        items = [_deep_merge(i, entry["$new_object"]) if isinstance(i, dict) and k in i and i[k] == v else i
                 for i in items]
    for new in ops.get("$add", []):
        items.append(_copied(new))
    return items


def _deep_merge(current: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict) and set(value) != {"$time"}:
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = _copied(value) if isinstance(value, dict) else value
    return merged


def _copied(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (_copied(v) if isinstance(v, dict) else v) for k, v in value.items()}


def _dedup(items: list[Any]) -> list[Any]:
    seen: set[Any] = set()
    out: list[Any] = []
    for item in items:
        marker = _hashable(item)
        if marker not in seen:
            seen.add(marker)
            out.append(item)
    return out


def _hashable(value: Any) -> Any:
    return (type(value).__name__, value) if not isinstance(value, list | dict) else repr(value)


def _truncated(value: Any) -> Any:
    return value[:MAX_STRING] if isinstance(value, str) else value


def _capped(items: list[Any], options: SandboxOptions) -> list[Any]:
    extra = len(items) - options.max_array_length
    return items[extra:] if extra > 0 else items
