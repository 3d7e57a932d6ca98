"""Identity endpoints: /users/export/ids, /users/delete, /users/alias/new, /users/alias/update,
/users/identify (braze-api.md §4). None of them cost data points.

/users/delete by email or phone picks one profile per entry with Braze's ordered
`prioritization` (`identified`, `unidentified`, `most_recently_updated`; `Store.prioritized`) and
deletes nothing for the entry when several profiles still match. `deleted` counts the profiles
really queued for deletion, so a client can compare it with what it sent (`deleted_counts=
"requested"` counts every identifier sent instead).

Export and delete do not see a profile /users/track created less than `visibility_delay_ms` ago
(alias/new, alias/update and identify do, so that an external_id or alias never names two profiles).

Choices where Braze is silent: /users/delete answers 201; validation failures answer 400
{"message": ...}.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .responses import MAX_EXTERNAL_IDS, MAX_IDS, Response, message
from .store import (
    PRIORITY_IDENTIFIED,
    PRIORITY_LEAST_RECENT,
    PRIORITY_RECENT,
    PRIORITY_UNIDENTIFIED,
    Store,
    User,
)
from .times import export_created_at, iso_utc, parse_time
from .validate import alias_ok

if TYPE_CHECKING:
    from .app import Request, Sandbox

MAX_PER_REQUEST = 50
EXPORT_FIELDS = frozenset({
    "apps", "attributed_campaign", "attributed_source", "attributed_adgroup", "attributed_ad", "push_subscribe",
    "email_subscribe", "braze_id", "country", "created_at", "custom_attributes", "custom_events", "devices", "dob",
    "email", "external_id", "first_name", "gender", "home_city", "language", "last_coordinates", "last_name",
    "phone", "purchases", "push_tokens", "random_bucket", "time_zone", "total_revenue", "uninstalled_at",
    "user_aliases", "campaigns_received", "canvases_received", "cards_clicked",
})
DELETE_PRIORITIES = frozenset({PRIORITY_IDENTIFIED, PRIORITY_UNIDENTIFIED, PRIORITY_RECENT})
PRIORITIES = DELETE_PRIORITIES | {PRIORITY_LEAST_RECENT}        # /users/identify also takes least_recently_updated


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


# ---- /users/export/ids ---------------------------------------------------------------------


def export_ids(app: Sandbox, request: Request) -> Response:
    body = request.body
    external_ids = body.get("external_ids", [])
    aliases = body.get("user_aliases", [])
    if not _string_list(external_ids):
        return message(400, "'external_ids' must be an array of strings")
    if not isinstance(aliases, list) or not all(alias_ok(a) for a in aliases):
        return message(400, "'user_aliases' must be an array of objects with 'alias_name' and 'alias_label'")
    if len(external_ids) + len(aliases) > MAX_PER_REQUEST:
        return message(400, MAX_EXTERNAL_IDS)
    singles = [k for k in ("device_id", "email_address", "phone") if body.get(k) is not None]
    if len(singles) > 1:
        return message(400, "Only one of 'device_id', 'email_address' or 'phone' may be provided")
    for key in ("device_id", "email_address", "phone", "braze_id"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return message(400, f"'{key}' must be a string")
    fields = body.get("fields_to_export")
    if fields is not None:
        if not _string_list(fields):
            return message(400, "'fields_to_export' must be an array of strings")
        unknown = sorted(set(fields) - EXPORT_FIELDS)
        if unknown:
            return message(400, f"Invalid 'fields_to_export' field(s): {', '.join(unknown)}")
    store = app.store
    found: dict[str, User] = {}
    invalid: list[str] = []
    with store.lock:
        for external_id in external_ids:
            _collect(found, invalid, external_id, store.seen(store.by_external(external_id)))
        for alias in aliases:
            user = store.seen(store.by_alias_pair(alias["alias_name"], alias["alias_label"]))
            _collect(found, invalid, alias["alias_name"], user)
        if body.get("braze_id") is not None:
            _collect(found, invalid, body["braze_id"], store.seen(store.users.get(body["braze_id"])))
        if body.get("email_address") is not None:
            with_email = store.only_visible(store.users_with_email(body["email_address"]))
            for user in with_email or [None]:  # type: ignore[list-item]
                _collect(found, invalid, body["email_address"], user)
        if body.get("phone") is not None:
            with_phone = store.only_visible(store.users_with_phone(body["phone"]))
            for user in with_phone or [None]:  # type: ignore[list-item]
                _collect(found, invalid, body["phone"], user)
        users = [export_user(store, u, fields) for u in found.values()]
    result: dict[str, Any] = {"message": "success", "users": users}
    if invalid:
        result["invalid_user_ids"] = invalid
    return Response(200, result)


def _collect(found: dict[str, User], invalid: list[str], requested: str, user: User | None) -> None:
    if user is None:
        invalid.append(requested)
    else:
        found[user.braze_id] = user


def export_user(store: Store, user: User, fields: list[str] | None) -> dict[str, Any]:
    """The /users/export/ids shape; only requested fields (all when absent); null/empty omitted."""
    events = _summaries([(e["name"], e["time"]) for e in store.events if e["braze_id"] == user.braze_id])
    bought = [p for p in store.purchases if p["braze_id"] == user.braze_id]
    full: dict[str, Any] = {
        "external_id": user.external_id,
        "braze_id": user.braze_id,
        "user_aliases": [{"alias_name": n, "alias_label": label} for label, n in user.aliases.items()],
        **{k: v for k, v in user.attributes.items() if k not in ("current_location",)},
        "custom_attributes": user.custom_attributes,
        "custom_events": events,
        "purchases": _summaries([(p["product_id"], p["time"]) for p in bought]),
        "total_revenue": round(sum(p["price"] * p["quantity"] for p in bought), 2) if bought else None,
        "created_at": export_created_at(user.created_at),
    }
    if "current_location" in user.attributes:
        full["last_coordinates"] = [user.attributes["current_location"]["longitude"],
                                    user.attributes["current_location"]["latitude"]]
    wanted = set(fields) if fields is not None else set(full)
    out = {k: v for k, v in full.items() if k in wanted and v not in (None, [], {})}
    if "braze_id" in out:
        out["appboy_id"] = user.braze_id
    return out


def _summaries(occurrences: list[tuple[str, str]]) -> list[dict[str, Any]]:
    by_name: dict[str, list[str]] = defaultdict(list)
    for name, moment in occurrences:
        by_name[name].append(moment)
    out = []
    for name, moments in by_name.items():
        parsed = sorted(t for t in (parse_time(m) for m in moments) if t is not None)
        out.append({"name": name, "first": iso_utc(parsed[0]), "last": iso_utc(parsed[-1]), "count": len(moments)})
    return out


# ---- /users/delete -------------------------------------------------------------------------

DELETE_KINDS = ("external_ids", "user_aliases", "braze_ids", "email_addresses", "phone_numbers")


def delete_users(app: Sandbox, request: Request) -> Response:
    body = request.body
    kinds = [k for k in DELETE_KINDS if body.get(k) is not None]
    if len(kinds) != 1:
        return message(400, "Exactly one of 'external_ids', 'user_aliases', 'braze_ids', 'email_addresses' "
                       "or 'phone_numbers' must be provided")
    kind = kinds[0]
    entries = body[kind]
    if not isinstance(entries, list) or not entries:
        return message(400, f"'{kind}' must be a non-empty array")
    if len(entries) > MAX_PER_REQUEST:
        return message(400, MAX_IDS)
    problem = _check_delete_entries(kind, entries)
    if problem:
        return message(400, problem)
    store = app.store
    deleted = 0
    with store.lock:
        for entry in entries:
            user = _delete_target(store, kind, entry)
            if user is not None:
                store.delete_user(user)
                deleted += 1
    count = len(entries) if app.options.deleted_counts == "requested" else deleted
    return Response(201, {"deleted": count, "message": "success"})


def _check_delete_entries(kind: str, entries: list[Any]) -> str | None:
    if kind in ("external_ids", "braze_ids"):
        return None if _string_list(entries) else f"'{kind}' must be an array of strings"
    if kind == "user_aliases":
        return None if all(alias_ok(a) for a in entries) else \
            "'user_aliases' must be an array of objects with 'alias_name' and 'alias_label'"
    key = "email" if kind == "email_addresses" else "phone"
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get(key), str) or not entry[key]:
            return f"each of '{kind}' must be an object with '{key}' and 'prioritization'"
        problem = check_prioritization(entry.get("prioritization"), DELETE_PRIORITIES)
        if problem:
            return problem
    return None


def check_prioritization(value: Any, allowed: frozenset[str] = PRIORITIES) -> str | None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return "'prioritization' must be a non-empty array"
    unknown = sorted(set(value) - allowed)
    if unknown:
        return f"Invalid 'prioritization' value(s): {', '.join(unknown)}"
    if PRIORITY_IDENTIFIED in value and PRIORITY_UNIDENTIFIED in value:
        return "'prioritization' may contain only one of 'identified' and 'unidentified'"
    return None


def _delete_target(store: Store, kind: str, entry: Any) -> User | None:
    if kind == "external_ids":
        return store.seen(store.by_external(entry))
    if kind == "braze_ids":
        return store.seen(store.users.get(entry))
    if kind == "user_aliases":
        return store.seen(store.by_alias_pair(entry["alias_name"], entry["alias_label"]))
    matches = store.users_with_email(entry["email"]) if kind == "email_addresses" else \
        store.users_with_phone(entry["phone"])
    return store.prioritized(store.only_visible(matches), entry["prioritization"])


# ---- /users/alias/new, /users/alias/update --------------------------------------------------


def alias_new(app: Sandbox, request: Request) -> Response:
    aliases = request.body.get("user_aliases")
    if not isinstance(aliases, list) or not aliases:
        return message(400, "'user_aliases' must be a non-empty array")
    if len(aliases) > MAX_PER_REQUEST:
        return message(400, MAX_IDS)
    for alias in aliases:
        if not alias_ok(alias) or (alias.get("external_id") is not None and not isinstance(alias["external_id"], str)):
            return message(400, "each of 'user_aliases' must be an object with 'alias_name', 'alias_label' "
                           "and an optional 'external_id' string")
    store = app.store
    with store.lock:
        for alias in aliases:
            name, label = alias["alias_name"], alias["alias_label"]
            if store.by_alias_pair(name, label) is not None:
                continue
            if alias.get("external_id") is not None:
                user = store.by_external(alias["external_id"])
                if user is not None and store.add_alias(user, name, label):
                    store.touch(user)
            else:
                store.add_alias(store.create_user(), name, label)
    return Response(201, {"aliases_processed": len(aliases), "message": "success"})


def alias_update(app: Sandbox, request: Request) -> Response:
    updates = request.body.get("alias_updates")
    if not isinstance(updates, list) or not updates:
        return message(400, "'alias_updates' must be a non-empty array")
    if len(updates) > MAX_PER_REQUEST:
        return message(400, MAX_IDS)
    keys = ("alias_label", "old_alias_name", "new_alias_name")
    for update in updates:
        if not isinstance(update, dict) or not all(isinstance(update.get(k), str) and update[k] for k in keys):
            return message(400, "each of 'alias_updates' must have 'alias_label', 'old_alias_name' and 'new_alias_name'")
    store = app.store
    with store.lock:
        for update in updates:
            label = update["alias_label"]
            user = store.by_alias_pair(update["old_alias_name"], label)
            if user is None or store.by_alias_pair(update["new_alias_name"], label) is not None:
                continue
            store.by_alias.pop((label, update["old_alias_name"]), None)
            user.aliases.pop(label, None)
            store.add_alias(user, update["new_alias_name"], label)
            store.touch(user)
    return Response(201, {"message": "success"})


# ---- /users/identify -----------------------------------------------------------------------

IDENTIFY_KINDS = ("aliases_to_identify", "emails_to_identify", "phone_numbers_to_identify")


def identify(app: Sandbox, request: Request) -> Response:
    body = request.body
    groups = {k: body[k] for k in IDENTIFY_KINDS if body.get(k) is not None}
    if not groups:
        return message(400, "One of 'aliases_to_identify', 'emails_to_identify' or 'phone_numbers_to_identify' "
                       "is required")
    if any(not isinstance(v, list) for v in groups.values()):
        return message(400, "identify lists must be arrays")
    if sum(len(v) for v in groups.values()) > MAX_PER_REQUEST:
        return message(400, MAX_IDS)
    for kind, entries in groups.items():
        for entry in entries:
            problem = _check_identify_entry(kind, entry)
            if problem:
                return message(400, problem)
    store = app.store
    with store.lock:
        for kind, entries in groups.items():
            for entry in entries:
                _identify_one(store, kind, entry)
    return Response(201, {"aliases_processed": sum(len(v) for v in groups.values()), "message": "success"})


def _check_identify_entry(kind: str, entry: Any) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("external_id"), str) or not entry["external_id"]:
        return f"each of '{kind}' must be an object with an 'external_id' string"
    if kind == "aliases_to_identify":
        return None if alias_ok(entry.get("user_alias")) else "'user_alias' must have 'alias_name' and 'alias_label'"
    key = "email" if kind == "emails_to_identify" else "phone"
    if not isinstance(entry.get(key), str) or not entry[key]:
        return f"each of '{kind}' must have a '{key}' string"
    return check_prioritization(entry.get("prioritization"))


def _identify_one(store: Store, kind: str, entry: Mapping[str, Any]) -> None:
    if kind == "aliases_to_identify":
        alias = entry["user_alias"]
        source = store.by_alias_pair(alias["alias_name"], alias["alias_label"])
        label = alias["alias_label"]
    else:
        key = "email" if kind == "emails_to_identify" else "phone"
        matches = store.users_with_email(entry[key]) if key == "email" else store.users_with_phone(entry[key])
        source = store.prioritized([u for u in matches if u.external_id is None], entry["prioritization"])
        label = None
    if source is None or source.external_id is not None:
        return
    target = store.by_external(entry["external_id"])
    if target is None:
        store.set_external_id(source, entry["external_id"])
        store.touch(source)
    elif label is None or label not in target.aliases:
        store.merge_into(source, target)
