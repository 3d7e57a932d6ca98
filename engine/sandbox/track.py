"""POST /users/track: limits, per-object validation, identifier resolution, applying, billing.

Objects that find no profile and may not create one are silent no-ops: 201, no per-object error
(braze-api.md §2.4). That covers `_update_existing_only: true` for a missing user, `braze_id`
for a missing user, and every event or purchase identified by `user_alias` whose alias profile
does not exist: for those Braze treats `_update_existing_only` as always true (event and purchase
object pages), so `false` does not create the profile. With `visibility_delay_ms`, a profile an
earlier request created is still missing for update-only objects until the delay passes (upserts
find it). Such no-ops cost their data points and count in `*_processed` unless
`processed_counts="applied"` (braze-api.md §13.5 leaves the count unconfirmed).
"""

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
    applied = dict.fromkeys(accepted, 0)
    created: dict[str, User] = {}
    with store.lock:
        for name, _, cost in ARRAYS:
            for obj in accepted.get(name, ()):
                store.data_points += cost(obj)
                user = resolve(store, obj, name, created)
                if user is None:
                    continue
                applied[name] += 1
                if name == "attributes":
                    apply_attributes(store, user, obj, options)
                elif name == "events":
                    store.events.append(_event_row(user, obj))
                else:
                    store.purchases.append(_purchase_row(user, obj))
        for user in created.values():
            store.hide(user, options.visibility_delay_ms / 1000)

    counts = applied if options.processed_counts == "applied" else {k: len(v) for k, v in accepted.items()}
    result: dict[str, Any] = {"message": "success"}
    for name in arrays:
        result[f"{name}_processed"] = counts[name]
    if errors:
        result["errors"] = errors
    return Response(201, result)


def resolve(store: Store, obj: Mapping[str, Any], array: str = "attributes",
            created: dict[str, User] | None = None) -> User | None:
    """The profile an object of `array` applies to, created when Braze would create it; None = silent no-op.

    `_update_existing_only` defaults to false for external_id/email/phone and to true for
    user_alias, and is always true for alias-identified events and purchases; braze_id never
    creates a profile. An update-only object does not see a profile that is still hidden
    (`visibility_delay_ms`) unless this request (`created`) made it.
    """
    created = {} if created is None else created
    kind, value = lookup(obj)
    update_only = obj.get("_update_existing_only", kind == "user_alias")
    if kind == "user_alias" and array != "attributes":
        update_only = True
    user: User | None
    if kind == "external_id":
        user = store.by_external(value)
    elif kind == "user_alias":
        user = store.by_alias_pair(value["alias_name"], value["alias_label"])
    elif kind == "braze_id":
        user = store.users.get(value)
        update_only = True
    else:
        user = store.lookup_secondary(kind, value)
    if user is not None:
        if update_only and user.braze_id not in created and not store.visible(user):
            return None
        return user
    if update_only:
        return None
    user = store.create_user(external_id=value if kind == "external_id" else None)
    if kind == "user_alias":
        store.add_alias(user, value["alias_name"], value["alias_label"])
    elif kind in ("email", "phone"):
        store.set_contact(user, kind, value)
    created[user.braze_id] = user
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
