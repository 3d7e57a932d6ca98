"""POST /users/track: limits, per-object validation, identifier resolution, applying, billing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any

from .attributes import apply_attributes
from .datapoints import attributes_cost, event_cost, purchase_cost
from .options import SandboxOptions
from .responses import MAX_INPUT_LENGTH, VALID_DATA_REQUIRED, Response, message
from .store import Store, User
from .times import iso_utc, now_utc, parse_time
from .validate import Invalid, check_attributes, check_event, check_purchase, lookup

if TYPE_CHECKING:
    from .app import Request, Sandbox

Checker = Callable[[Mapping[str, Any], SandboxOptions], None]
ARRAYS: tuple[tuple[str, Checker, Callable[[Mapping[str, Any]], int]], ...] = (
    ("attributes", check_attributes, attributes_cost),
    ("events", check_event, event_cost),
    ("purchases", check_purchase, purchase_cost),
)
MAX_PROPERTIES = 256


def users_track(app: Sandbox, request: Request) -> Response:
    body = request.body
    options = app.options
    arrays: dict[str, list[Any]] = {}
    for name, _, _ in ARRAYS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, list):
            return message(400, VALID_DATA_REQUIRED)
        arrays[name] = value
    sizes = [len(v) for v in arrays.values()]
    too_many = max(sizes, default=0) > options.max_objects if options.legacy_limits else sum(sizes) > options.max_objects
    if too_many:
        return message(400, MAX_INPUT_LENGTH)
    app.stats.track_objects(sum(sizes))
    if not sum(sizes):
        return message(400, VALID_DATA_REQUIRED)

    errors: list[dict[str, Any]] = []
    accepted: dict[str, list[Mapping[str, Any]]] = {}
    for name, check, _ in ARRAYS:
        if name not in arrays:
            continue
        accepted[name] = []
        for index, obj in enumerate(arrays[name]):
            try:
                if not isinstance(obj, dict):
                    raise Invalid("INVALID_OBJECT", f"Each element of '{name}' must be an object")
                check(obj, options)
            except Invalid as problem:
                errors.append({"type": problem.code if options.error_codes else problem.text,
                               "input_array": name, "index": index})
                continue
            accepted[name].append(obj)
    if not any(accepted.values()):
        return message(400, VALID_DATA_REQUIRED, errors=errors)

    store = app.store
    with store.lock:
        for name, _, cost in ARRAYS:
            for obj in accepted.get(name, ()):
                store.data_points += cost(obj)
                user = resolve(store, obj)
                if user is None:
                    continue
                if name == "attributes":
                    apply_attributes(store, user, obj, options)
                elif name == "events":
                    store.events.append(_event_row(user, obj))
                else:
                    store.purchases.append(_purchase_row(user, obj))

    result: dict[str, Any] = {"message": "success"}
    for name in arrays:
        result[f"{name}_processed"] = len(accepted[name])
    if errors:
        result["errors"] = errors
    return Response(201, result)


def resolve(store: Store, obj: Mapping[str, Any]) -> User | None:
    """The profile an object applies to, created when Braze would create it; None = silent no-op.

    `_update_existing_only` defaults to false for external_id/email/phone and to true for
    user_alias; braze_id never creates a profile.
    """
    kind, value = lookup(obj)
    update_only = obj.get("_update_existing_only", kind == "user_alias")
    user: User | None
    if kind == "external_id":
        user = store.by_external(value)
        if user is None and not update_only:
            user = store.create_user(external_id=value)
    elif kind == "user_alias":
        user = store.by_alias_pair(value["alias_name"], value["alias_label"])
        if user is None and not update_only:
            user = store.create_user()
            store.add_alias(user, value["alias_name"], value["alias_label"])
    elif kind == "braze_id":
        user = store.users.get(value)
    else:
        user = store.lookup_secondary(kind, value)
        if user is None and not update_only:
            user = store.create_user()
            store.set_contact(user, kind, value)
    return user


def _occurred_at(obj: Mapping[str, Any]) -> str:
    moment = parse_time(obj["time"])
    now = now_utc()
    return iso_utc(now if moment is None or moment > now else moment)   # future times clamp to now


def _properties(obj: Mapping[str, Any]) -> dict[str, Any]:
    properties = obj.get("properties") or {}
    return dict(islice(properties.items(), MAX_PROPERTIES))             # extras are silently dropped


def _event_row(user: User, obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "braze_id": user.braze_id,
        "external_id": user.external_id,
        "name": obj["name"],
        "time": _occurred_at(obj),
        "properties": _properties(obj),
        "app_id": obj.get("app_id"),
    }


def _purchase_row(user: User, obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "braze_id": user.braze_id,
        "external_id": user.external_id,
        "product_id": obj["product_id"],
        "currency": obj["currency"],
        "price": obj["price"],
        "quantity": obj.get("quantity", 1),
        "time": _occurred_at(obj),
        "properties": _properties(obj),
        "app_id": obj.get("app_id"),
    }
