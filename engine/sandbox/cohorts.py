"""Partner cohort import (braze-api.md §7): POST /partners/{partner}/cohorts (create or rename) and
POST /partners/{partner}/cohorts/users (members enter, or leave with `should_remove`).

Auth is in the body, never a header: `partner_api_key` (the partner's key) and `client_secret` (the
workspace's data import key for that partner); 401 with Braze's texts otherwise. A partner the workspace
has not enabled (`cohort_partners`) gets 401 "Partner not enabled ...". `fail_423_first` (or
POST /_sandbox/cohorts/lock) answers 423 `Resource locked` to the next partner requests.

Cohort import never creates users: identifiers with no (visible) profile are ignored. Each member who
enters or leaves costs a data point (cohort assignments are billable, §2.10). A cohort that was never
created still takes members (Braze does not document that case); it has no name until created.
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING, Any

from .responses import Response, message
from .store import Store, User

if TYPE_CHECKING:
    from .app import Request, Sandbox

MAX_IDS = 1_000
BAD_COHORT_ID = "cohort_id must be a valid string"
BAD_CHANGES = ("cohort_changes must be an array of objects each with key user_ids and/or device_ids mapping to an "
               "array of strings, or an aliases object")
TOO_MANY = "Only 1,000 user_ids, device_ids, and aliases are allowed per request"
BAD_NAME = "name must be a non-empty string"
BAD_CREATED_AT = "created_at must be a valid time as an ISO-8601 string"
LOCKED = "Resource locked"
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")


def authenticate(app: Sandbox, request: Request) -> Response | None:
    """401 with Braze's text when the body's credentials are not this workspace's (None: they are)."""
    body, options = request.body, app.options
    key, secret = body.get("partner_api_key"), body.get("client_secret")
    if not isinstance(key, str) or not hmac.compare_digest(key.encode(), options.partner_api_key.encode()):
        return message(401, "Invalid Partner API key")
    if not isinstance(secret, str) or not hmac.compare_digest(secret.encode(), options.data_import_key.encode()):
        return message(401, "Invalid client secret")
    partner = request.params.get("partner", "")
    if options.cohort_partners is not None and partner not in options.cohort_partners:
        return message(401, f"Partner not enabled for client with client secret: {secret}")
    return None


def _cohort_id(body: dict[str, Any]) -> str | None:
    value = body.get("cohort_id")
    return value if isinstance(value, str) and value else None


def create_cohort(app: Sandbox, request: Request) -> Response:
    body = request.body
    cohort_id = _cohort_id(body)
    if cohort_id is None:
        return message(400, BAD_COHORT_ID)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        return message(400, BAD_NAME)
    created_at = body.get("created_at")
    if not isinstance(created_at, str) or not _ISO.match(created_at):
        return message(400, BAD_CREATED_AT)
    cohort = app.store.cohort(cohort_id, request.params.get("partner", ""))
    cohort["name"] = name
    cohort.setdefault("created_at", created_at)
    return message(201, "success")


def _changes(body: dict[str, Any]) -> list[tuple[list[tuple[str, Any]], bool]] | str:
    """[(identifiers as (kind, value), should_remove)] or the 400 text."""
    changes = body.get("cohort_changes")
    if not isinstance(changes, list) or not changes:
        return BAD_CHANGES
    out: list[tuple[list[tuple[str, Any]], bool]] = []
    total = 0
    for change in changes:
        if not isinstance(change, dict) or not ({"user_ids", "device_ids", "aliases"} & set(change)):
            return BAD_CHANGES
        if set(change) - {"user_ids", "device_ids", "aliases", "should_remove"}:
            return BAD_CHANGES
        remove = change.get("should_remove", False)
        if not isinstance(remove, bool):
            return BAD_CHANGES
        ids: list[tuple[str, Any]] = []
        for kind in ("user_ids", "device_ids"):
            values = change.get(kind, [])
            if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                return BAD_CHANGES
            ids += [(kind, v) for v in values]
        aliases = change.get("aliases", [])
        if not isinstance(aliases, list) or not all(
                isinstance(a, dict) and set(a) == {"alias_name", "alias_label"}
                and all(isinstance(v, str) and v for v in a.values()) for a in aliases):
            return BAD_CHANGES
        ids += [("aliases", (a["alias_name"], a["alias_label"])) for a in aliases]
        total += len(ids)
        out.append((ids, remove))
    if total > MAX_IDS:
        return TOO_MANY
    return out


def _user(store: Store, kind: str, value: Any) -> User | None:
    if kind == "user_ids":
        user = store.by_external(value)
    elif kind == "aliases":
        user = store.by_alias_pair(*value)
    else:
        return None            # device ids match anonymous users only; the sandbox keeps no devices
    return store.seen(user)


def cohort_users(app: Sandbox, request: Request) -> Response:
    body = request.body
    cohort_id = _cohort_id(body)
    if cohort_id is None:
        return message(400, BAD_COHORT_ID)
    changes = _changes(body)
    if isinstance(changes, str):
        return message(400, changes)
    store = app.store
    cohort = store.cohort(cohort_id, request.params.get("partner", ""))
    members: dict[str, bool] = cohort["members"]
    for ids, remove in changes:
        for kind, value in ids:
            user = _user(store, kind, value)
            if user is None:
                continue                    # cohort import never creates users
            if remove:
                members.pop(user.braze_id, None)
            else:
                members[user.braze_id] = True
            store.data_points += 1
    return message(201, "success")


def inspect(store: Store, cohort_id: str, partner: str | None = None) -> dict[str, Any] | str | None:
    """One cohort and its members (identifiers of each), for /_sandbox/cohorts/{cohort_id}[?partner=P];
    without `partner`, the one cohort of that id (a message when several partners have one)."""
    found = [c for c in store.cohorts.values()
             if c.get("cohort_id") == cohort_id and (partner is None or c["partner"] == partner)]
    if len(found) > 1:
        return f"cohort {cohort_id} exists for partners {', '.join(sorted(c['partner'] for c in found))}: pass ?partner="
    if not found:
        return None
    cohort = found[0]
    members = []
    for braze_id in cohort["members"]:
        user = store.users.get(braze_id)
        if user is not None:
            members.append({"braze_id": braze_id, "external_id": user.external_id,
                            "user_aliases": [{"alias_name": n, "alias_label": label} for label, n in user.aliases.items()]})
    return {"cohort_id": cohort_id, "partner": cohort["partner"], "name": cohort.get("name"),
            "created_at": cohort.get("created_at"), "members": members}
