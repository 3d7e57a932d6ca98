"""The inspection API under /_sandbox/ (outside Braze's namespace).

    GET  /_sandbox/users[?external_id=|email=|phone=|braze_id=|alias_name=&alias_label=]
    GET  /_sandbox/events[?external_id=]      GET /_sandbox/purchases[?external_id=]
    GET  /_sandbox/stats                      GET /_sandbox/catalogs
    GET  /_sandbox/catalogs/{name}/items      POST /_sandbox/reset      POST /_sandbox/save
    GET  /_sandbox/applied_then_failed        (requests applied, then answered 500/504 or dropped)
    GET  /_sandbox/cohorts                    GET /_sandbox/cohorts/{cohort_id}   (a partner cohort's members)
    POST /_sandbox/cohorts/lock?count=N       (the next N partner cohort requests answer 423)

It serves every profile. Without `admin_token` it needs no auth (bind to loopback only); with it,
every path needs `Authorization: Bearer <admin_token>` and answers 401 otherwise.
"""

from __future__ import annotations

import copy
import hmac
from typing import TYPE_CHECKING, Any

from . import cohorts
from .responses import Response, message
from .store import Store, User

if TYPE_CHECKING:
    from .app import Request, Sandbox


def profile(store: Store, user: User) -> dict[str, Any]:
    """One user's full profile: identifiers, standard fields, custom attributes, subscriptions, history."""
    return copy.deepcopy({
        "braze_id": user.braze_id,
        "external_id": user.external_id,
        "user_aliases": [{"alias_name": n, "alias_label": label} for label, n in user.aliases.items()],
        **user.attributes,
        "custom_attributes": user.custom_attributes,
        "subscription_groups": user.subscription_groups,
        "events": [e for e in store.events if e["braze_id"] == user.braze_id],
        "purchases": [p for p in store.purchases if p["braze_id"] == user.braze_id],
    })


def find_user(store: Store, query: dict[str, str]) -> User | None:
    if "external_id" in query:
        return store.by_external(query["external_id"])
    if "braze_id" in query:
        return store.users.get(query["braze_id"])
    if "alias_name" in query and "alias_label" in query:
        return store.by_alias_pair(query["alias_name"], query["alias_label"])
    if "email" in query:
        return store.lookup_secondary("email", query["email"])
    if "phone" in query:
        return store.lookup_secondary("phone", query["phone"])
    return None


def stats(app: Sandbox) -> dict[str, Any]:
    result = app.stats.snapshot()
    with app.store.lock:
        result.update({
            "data_points": app.store.data_points,
            "users": len(app.store.users),
            "events": len(app.store.events),
            "purchases": len(app.store.purchases),
            "catalogs": {name: len(c.items) for name, c in app.store.catalogs.items()},
        })
    return result


def rows(store: Store, kind: str, external_id: str | None = None) -> list[dict[str, Any]]:
    source = store.events if kind == "events" else store.purchases
    return copy.deepcopy([r for r in source if external_id is None or r["external_id"] == external_id])


def catalog_items(store: Store, name: str) -> list[dict[str, Any]] | None:
    catalog = store.catalogs.get(name)
    return None if catalog is None else copy.deepcopy(list(catalog.items.values()))


def authorized(app: Sandbox, request: Request) -> bool:
    token = app.options.admin_token
    if token is None:
        return True
    sent = request.headers.get("Authorization") or request.headers.get("authorization") or ""
    return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


def handle(app: Sandbox, request: Request, body: bytes | None) -> Response:
    if not authorized(app, request):
        return message(401, "the sandbox inspection API needs 'Authorization: Bearer <admin token>'")
    method, parts = request.method, request.path.strip("/").split("/")[1:]
    query = {k: v[0] for k, v in request.query.items() if v}
    store = app.store
    if method == "POST" and parts == ["reset"]:
        app.reset()
        return Response(200, {"message": "success"})
    if method == "POST" and parts == ["save"]:
        path = app.save_state()
        if path is None:
            return message(400, "the sandbox was started without --state")
        return Response(200, {"message": "success", "state": path})
    if method == "POST" and parts == ["cohorts", "lock"]:
        try:
            count = int(query.get("count", "1"))
        except ValueError:
            return message(400, "count must be an integer")
        app.faults.lock(count)
        return Response(200, {"message": "success", "locked": count})
    if method != "GET":
        return message(404, "Not Found")
    with store.lock:
        if parts == ["users"]:
            if not query:
                return Response(200, {"users": [profile(store, u) for u in store.users.values()]})
            user = find_user(store, query)
            return message(404, "user not found") if user is None else Response(200, profile(store, user))
        if parts in (["events"], ["purchases"]):
            return Response(200, {parts[0]: rows(store, parts[0], query.get("external_id"))})
        if parts == ["catalogs"]:
            return Response(200, {"catalogs": sorted(store.catalogs)})
        if parts == ["cohorts"]:
            return Response(200, {"cohorts": [
                {"cohort_id": c.get("cohort_id", k), "partner": c["partner"], "name": c.get("name"),
                 "members": len(c["members"])} for k, c in sorted(store.cohorts.items())]})
        if len(parts) == 2 and parts[0] == "cohorts":
            found = cohorts.inspect(store, parts[1], query.get("partner"))
            if isinstance(found, str):
                return message(400, found)
            return message(404, "cohort not found") if found is None else Response(200, found)
        if len(parts) == 3 and parts[0] == "catalogs" and parts[2] == "items":
            items = catalog_items(store, parts[1])
            return message(404, "catalog not found") if items is None else Response(200, {"items": items})
    if parts == ["stats"]:
        return Response(200, stats(app))
    if parts == ["applied_then_failed"]:
        return Response(200, {"requests": stats(app)["applied_then_failed"]})
    return message(404, "Not Found")
