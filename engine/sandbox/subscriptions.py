"""POST /subscription/status/set (braze-api.md §6.1). Costs no data points.

An external_id with no profile gets 201 success and nothing is kept (braze-api.md §0.1, §6): a
profile created for it later has no state for the group. An email or phone with no profile keeps
an "orphaned" state that a profile created later with that email/phone inherits (Braze keeps it
30 days; the sandbox keeps it until reset). A profile /users/track created less than
`visibility_delay_ms` ago counts as no profile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .responses import MAX_IDS, Response, message
from .validate import GROUP_STATES, subscription_group_known

if TYPE_CHECKING:
    from .app import Request, Sandbox

MAX_PER_LIST = 50
BOTH_CONTACTS = "Either an email address or a phone number should be provided, but not both."


def _as_list(value: Any) -> list[Any] | None:
    """Braze takes a string or an array of strings; None when neither."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return value
    return None


def status_set(app: Sandbox, request: Request) -> Response:
    body = request.body
    group_id = body.get("subscription_group_id")
    if group_id is None:
        return message(400, "'subscription_group_id' is required")
    if not subscription_group_known(group_id, app.options):
        return message(400, "'subscription_group_id' is not a valid subscription group id")
    state = body.get("subscription_state")
    if state not in GROUP_STATES:
        return message(400, "'subscription_state' must be 'subscribed' or 'unsubscribed'")
    if body.get("email") is not None and body.get("phone") is not None:
        return message(400, BOTH_CONTACTS)
    lists: dict[str, list[str]] = {}
    for key in ("external_id", "email", "phone"):
        if body.get(key) is None:
            continue
        values = _as_list(body[key])
        if values is None:
            return message(400, f"'{key}' must be a string or an array of strings")
        if len(values) > MAX_PER_LIST:
            return message(400, MAX_IDS)
        lists[key] = values
    if not lists:
        return message(400, "One of 'external_id', 'email' or 'phone' is required")
    if "use_double_opt_in_logic" in body and not isinstance(body["use_double_opt_in_logic"], bool):
        return message(400, "'use_double_opt_in_logic' must be a boolean")

    store = app.store
    with store.lock:
        for external_id in lists.get("external_id", []):
            user = store.seen(store.by_external(external_id))
            if user is not None:
                user.subscription_groups[group_id] = state
                store.touch(user)
        for kind in ("email", "phone"):
            for value in lists.get(kind, []):
                users = store.only_visible(store.users_with_email(value) if kind == "email"
                                           else store.users_with_phone(value))
                for user in users:
                    user.subscription_groups[group_id] = state
                    store.touch(user)
                if not users:
                    key = f"{kind}:{value.strip().lower() if kind == 'email' else value.strip()}"
                    store.orphan_subscriptions.setdefault(key, {})[group_id] = state
    return Response(201, {"message": "success"})
