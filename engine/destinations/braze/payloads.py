"""Plan row → the one Braze object it contributes, per destination object.

    users               POST /users/track attributes  (on_removed: delete → POST /users/delete <ids>)
    events              POST /users/track events      (append-only)
    purchases           POST /users/track purchases   (append-only)
    catalog_items       PUT|PATCH|DELETE /catalogs/<catalog>/items   (PUT: added, or sent in full again)
    subscription_groups POST /users/track attributes   ({<id>, "subscription_groups": [{group, state}]})
    user_deletes        POST /users/delete <ids>
    cohorts             method attribute: POST /users/track attributes ({<id>, "_update_existing_only": true,
                        "<attribute>": {"add"|"remove": [<cohort id>]}}); method partner:
                        POST /partners/<partner>/cohorts/users (the identifier: enters, or leaves with
                        should_remove), POST /partners/<partner>/cohorts (a renamed cohort, once)

Identifiers and `_update_existing_only`: mode `update` always sends `true`; mode `upsert` omits it,
except for `user_alias`, which Braze treats as update-only unless `false` is sent. `braze_id` cannot
create users: in upsert mode Braze updates existing profiles only.

Update-only objects for a user Braze does not have are dropped with a success answer, so such rows go
on a channel with a profile rule (`ProfileRule`, sent by profiles.py): `check` (missing_users: wait)
or `create` (alias-identified events and purchases in upsert mode, which Braze never lets create a
profile).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from engine.destinations.base import ADDED, CHANGED, REMOVED, Invalid, Item, PlanRow, Reason, Skip
from engine.destinations.braze import datapoints, validate
from engine.destinations.braze.endpoints import MAX_BODY_BYTES
from engine.errors import Problem, SpecError
from engine.specs import IDENTIFIER_KINDS, SyncSpec

Result = Item | Invalid | Skip

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

# Keys of a /users/track attributes object that are not attributes: a field must not use them.
RESERVED_ATTRIBUTE_KEYS = frozenset({
    "external_id", "user_alias", "braze_id", "_update_existing_only", "_merge_objects", "push_token_import",
    "alias_name", "alias_label", "app_id",
})
DELETE_ARRAYS = {"external_id": "external_ids", "user_alias": "user_aliases", "braze_id": "braze_ids",
                 "email": "email_addresses", "phone": "phone_numbers"}
DELETE_PRIORITIZATION = ["identified", "most_recently_updated"]
MAX_UNKNOWN_SENDS = 3        # default: an event or purchase sent this often without an answer is not sent again
SAFE_TOKEN = r"[A-Za-z0-9_-]{1,250}"           # catalog names, cohort ids (sql_cohorts.py: in SQL)
_SAFE_TOKEN = re.compile(f"^{SAFE_TOKEN}$")
_ITEM_LIMIT = MAX_BODY_BYTES - 1_000   # one object must fit in a request with its envelope


def render(obj: Any) -> str | Invalid:
    try:
        return _encode(obj)
    except ValueError as exc:          # NaN / Infinity
        return Invalid(f"value cannot be sent as JSON: {exc}")


def _item(channel: str, obj: Any, data_points: int) -> Result:
    text = render(obj)
    if isinstance(text, Invalid):
        return text
    if len(text) > _ITEM_LIMIT // 4 and len(text.encode("utf-8")) > _ITEM_LIMIT:
        return Invalid(f"the payload object is larger than Braze's {MAX_BODY_BYTES:,}-byte request limit")
    return Item(channel, text, data_points)


def _as_id(value: Any) -> Any:
    """Integer ids are sent as strings (Braze identifiers are strings)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def profile_rule(sync: SyncSpec) -> str | None:
    """What the profiles of a sync's rows need before their objects go out (endpoints.py, profiles.py):
    "create" for alias-identified events and purchases in upsert mode (Braze never lets them create
    the profile), "check" for update-only objects (mode: update, braze_id) with missing_users: wait,
    None when Braze creates the profile or the sync chose to skip missing users."""
    dest = sync.destination
    if dest.object == "cohorts" and dest.identifier is not None:
        # method attribute: update-only objects; a member Braze has no profile for would be dropped while
        # the snapshot recorded it as entered (the partner method's answer does not say either way)
        attribute = dest.cohort is not None and dest.cohort.method == "attribute"
        return "check" if attribute and dest.missing_users == "wait" else None
    if dest.object not in ("users", "events", "purchases") or dest.identifier is None:
        return None
    kind = dest.identifier.kind
    if dest.object != "users" and kind == "user_alias" and dest.mode == "upsert":
        return "create"
    if (dest.mode == "update" or kind == "braze_id") and dest.missing_users == "wait":
        return "check"
    return None


class ProfileRule:
    """The channel of a sync's objects: `base`, or `base` with the sync's profile rule, until a row has
    waited `missing_users_max_wait` for its user's profile: it then goes out unchecked, with a note."""

    def __init__(self, sync: SyncSpec, base: str) -> None:
        self.rule = profile_rule(sync)
        self.base = base
        ident = sync.destination.identifier
        self.channel = f"{base} {self.rule}:{ident.kind}" if self.rule and ident else base
        self.max_wait = sync.destination.missing_users_max_wait

    def place(self, row: PlanRow, item: Result) -> Result:
        if not isinstance(item, Item) or self.rule is None or row.op == REMOVED:
            return item
        if row.waiting_since is not None:
            waited = (datetime.now(UTC).replace(tzinfo=None) - row.waiting_since).total_seconds()
            if waited > self.max_wait:
                return dataclasses.replace(item, channel=self.base, note=(
                    f"waited {_duration(waited)} for the user's profile (missing_users_max_wait "
                    f"{_duration(self.max_wait)}): sent without checking; Braze keeps nothing for a user it "
                    "does not have"))
        return dataclasses.replace(item, channel=self.channel)


def profile_notes(sync: SyncSpec, sent: int) -> list[str]:
    """What a plan says about rows whose user Braze may not have, `sent` of them being sent."""
    dest = sync.destination
    rule = profile_rule(sync)
    if not sent or dest.object not in ("users", "events", "purchases", "cohorts") or dest.identifier is None:
        return []
    if dest.object == "cohorts":
        if rule == "check":
            return [f"missing_users: wait: a member enters once Braze has the user: Reflow asks Braze which users "
                    f"exist (/users/export/ids) and holds the others back, pending as 'waiting for profile' (at most "
                    f"{_duration(dest.missing_users_max_wait)}, then they are sent unchecked)"]
        if dest.cohort is not None and dest.cohort.method == "attribute":
            return [f"missing_users: skip: Braze keeps nothing for a member it has no profile for (and answers "
                    f"success), so of the {sent} row(s) sent only those of existing users land; all are recorded"]
        return ["cohort import never creates users and its answer does not say which members Braze lacks: "
                "members who are not Braze users yet are recorded as entered; method attribute can wait for them"]
    if rule == "create":
        return ["alias-identified rows: Braze never lets them create a profile, so each alias profile is created "
                "first and the rows go out once Braze shows it (/users/export/ids)"]
    if rule == "check":
        return [f"missing_users: wait: Reflow asks Braze which users exist (/users/export/ids) and holds the rows of "
                f"the others back, pending as 'waiting for profile', until their profile exists (at most "
                f"{_duration(dest.missing_users_max_wait)}, then they are sent unchecked)"]
    if dest.mode == "update" or dest.identifier.kind == "braze_id":
        return [f"missing_users: skip: Braze keeps nothing for a user it does not have (and answers success), so of "
                f"the {sent} row(s) sent only those of existing users land; all are recorded as sent"]
    return []


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.0f}s"


class SpecProblems:
    """Collects spec problems found while building payload rules; raises them all at once."""

    def __init__(self, sync: SyncSpec) -> None:
        self.sync = sync
        self.problems: list[Problem] = []

    def add(self, path: str, message: str) -> None:
        loc = self.sync.where(path)
        self.problems.append(Problem(loc.file, loc.line, loc.col, path, message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise SpecError(self.problems)


class IdentifierRule:
    """How a row's user is named in /users/track objects and in /users/delete."""

    def __init__(self, sync: SyncSpec, problems: SpecProblems, allowed: tuple[str, ...]) -> None:
        ident = sync.destination.identifier
        self.kind = ident.kind if ident else ""
        self.column = ident.column if ident else ""
        self.alias_label = (ident.alias_label or "") if ident else ""
        self.prioritization = list(sync.destination.prioritization or DELETE_PRIORITIZATION)
        if ident is None:
            problems.add("destination.identifier", f"{sync.destination.object} needs an identifier "
                         f"({' | '.join(allowed)})")
        elif ident.kind not in allowed:
            problems.add("destination.identifier",
                         f"identifier {ident.kind!r} is not supported for {sync.destination.object}; "
                         f"use one of {', '.join(allowed)}")
        elif ident.kind == "user_alias":
            if not self.alias_label:
                problems.add("destination.identifier.alias_label", "user_alias needs a non-empty alias_label")
            elif len(self.alias_label.encode("utf-8")) > validate.ALIAS_MAX_BYTES:
                problems.add("destination.identifier.alias_label",
                             f"alias_label is longer than {validate.ALIAS_MAX_BYTES} bytes")

    def value(self, values: Mapping[str, Any]) -> tuple[Any, str | None]:
        raw = _as_id(values.get(self.column))
        field = self.column if self.kind != "user_alias" else f"{self.column} (alias_name)"
        return raw, validate.identifier_value(self.kind, raw, field)

    def track(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The identifier part of a /users/track object."""
        raw, problem = self.value(values)
        if problem:
            return {}, problem
        if self.kind == "user_alias":
            return {"user_alias": {"alias_name": raw, "alias_label": self.alias_label}}, None
        return {self.kind: raw}, None

    def delete_channel(self) -> str:
        return f"POST /users/delete {DELETE_ARRAYS[self.kind]}"

    def delete_item(self, values: Mapping[str, Any]) -> Result:
        raw, problem = self.value(values)
        if problem:
            return Invalid(problem)
        obj: Any
        if self.kind == "user_alias":
            obj = {"alias_name": raw, "alias_label": self.alias_label}
        elif self.kind in ("email", "phone"):
            obj = {self.kind: raw, "prioritization": self.prioritization}
        else:
            obj = raw
        return _item(self.delete_channel(), obj, 0)

    def update_flag(self, mode: str) -> bool | None:
        """`_update_existing_only` to send, or None to omit it."""
        if mode == "update":
            return True
        return False if self.kind == "user_alias" else None


class FieldMap:
    """Destination field → model column; None in the spec means every column but keys and identifier."""

    def __init__(self, sync: SyncSpec, problems: SpecProblems, exclude: set[str], reserved: frozenset[str]) -> None:
        self.explicit = dict(sync.destination.fields) if sync.destination.fields is not None else None
        self.exclude = set(sync.primary_key) | exclude
        self.reserved = reserved
        self._auto: dict[tuple[str, ...], list[tuple[str, str]] | str] = {}
        for name in self.explicit or {}:
            problem = validate.name("field", name)
            if problem:
                problems.add(f"destination.fields.{name}", problem)
            elif name in reserved:
                problems.add(f"destination.fields.{name}", f"{name!r} is reserved by Braze and cannot be a field")

    def pairs(self, values: Mapping[str, Any]) -> list[tuple[str, str]] | str:
        """(field, column) pairs for a row, or a reason why the columns cannot be mapped."""
        if self.explicit is not None:
            return list(self.explicit.items())
        columns = tuple(values)
        found = self._auto.get(columns)
        if found is None:
            pairs = [(c, c) for c in columns if c not in self.exclude]
            found = pairs
            for column, _ in pairs:
                problem = (f"{column!r} is reserved by Braze" if column in self.reserved
                           else validate.name("attribute", column))
                if problem:
                    found = f"{problem} (a model column; list the fields explicitly to rename it)"
                    break
            self._auto[columns] = found
        return found


class UsersPayloads:
    array_max = validate.ARRAY_MAX_DEFAULT      # set from the connection by the destination

    def __init__(self, sync: SyncSpec, problems: SpecProblems) -> None:
        dest = sync.destination
        self.ident = IdentifierRule(sync, problems, IDENTIFIER_KINDS)
        self.fields = FieldMap(sync, problems, {self.ident.column}, RESERVED_ATTRIBUTE_KEYS)
        if self.ident.kind in ("email", "phone") and dest.fields and self.ident.column != dest.fields.get(
                self.ident.kind, self.ident.column):
            problems.add(f"destination.fields.{self.ident.kind}",
                         f"{self.ident.kind} is the identifier (column {self.ident.column!r}); "
                         "it cannot also be mapped to another column")
        self.flag = self.ident.update_flag(dest.mode)
        self.mode = dest.mode
        self.nulls = dest.nulls
        self.on_removed = dest.on_removed
        self.profiles = ProfileRule(sync, "POST /users/track attributes")
        self.channel = self.profiles.channel       # of added and changed rows (removals: profiles.base)

    def prepare(self, row: PlanRow) -> Result:
        if row.op == REMOVED and self.on_removed == "delete":
            return self.ident.delete_item(row.values)
        if row.op == REMOVED and self.on_removed != "unset":
            return Skip("removed from the model; on_removed is ignore")
        ident, problem = self.ident.track(row.values)
        if problem:
            return Invalid(problem)
        pairs = self.fields.pairs(row.values)
        if isinstance(pairs, str):
            return Invalid(pairs)
        values = row.values
        attrs: dict[str, Any] = {}
        kept: list[str] = []
        if row.op == ADDED or (row.op == CHANGED and self.ident.column in row.changed):
            # a user this row has not addressed before: every mapped field with a value; fields that a
            # removed row addressing the same user held, and this row leaves null, are unset
            for field, column in pairs:
                value = values.get(column)
                if value is not None:
                    attrs[field] = value
                elif self.nulls == "unset" and row.replaces and row.replaces.get(column) is not None:
                    attrs[field] = None         # the user holds a value from the row it replaces: unset it
            if not attrs and self.mode == "update":
                return Skip("no mapped field has a value")
        elif row.op == CHANGED:
            changed = set(row.changed)
            for field, column in pairs:
                if column in changed:
                    value = values.get(column)
                    if value is not None or self.nulls == "unset":
                        attrs[field] = value
                    else:
                        kept.append(field)          # nulls: skip: Braze keeps the old value
            for field in row.unmapped:              # on_unmapped: unset
                attrs[field] = None
            if not attrs:
                return Skip("no mapped field changed" if not kept else
                            f"nulls: skip: Braze keeps {', '.join(kept)}", kept=tuple(kept))
        else:  # removed, on_removed unset (and on_unmapped: unset, the fields no longer mapped)
            attrs = {field: None for field, _ in pairs} | dict.fromkeys(row.unmapped)
            if not attrs:
                return Skip("no mapped field to unset")
        # one value Braze would refuse drops that field, not the row: the others are sent
        dropped: list[Reason] = []
        for field, value in list(attrs.items()):
            if field == "country":
                attrs[field] = value = validate.country(value)
            problem = validate.attribute(field, value, time=field in row.times, array_max=self.array_max)
            if problem:
                dropped.append(problem if isinstance(problem, Reason) else Reason(problem, field))
                del attrs[field]
        if dropped and not attrs:
            return Invalid("; ".join(dropped), tuple(dropped))
        obj = ident
        # unsetting a removed row's attributes must never create a profile (e.g. one that a
        # user-deletes sync just deleted): removals are always update-only
        flag = True if row.op == REMOVED else self.flag
        if flag is not None:
            obj["_update_existing_only"] = flag
        obj.update(attrs)
        item = _item(self.profiles.base, obj, datapoints.attributes_object(obj))
        if (dropped or kept) and isinstance(item, Item):
            item = dataclasses.replace(item, dropped=tuple(dropped), kept=tuple(kept))
        return self.profiles.place(row, item)


class EventsPayloads:
    channel = "POST /users/track events"
    max_unknown_sends = MAX_UNKNOWN_SENDS       # set from the connection by the destination

    def __init__(self, sync: SyncSpec, problems: SpecProblems) -> None:
        self.ident = IdentifierRule(sync, problems, IDENTIFIER_KINDS)
        self.flag = self.ident.update_flag(sync.destination.mode)
        self.profiles = ProfileRule(sync, self.channel)
        spec = sync.destination.event
        if spec is None:
            problems.add("destination", "events need an event: section (name, time, properties)")
        elif not (spec.name or spec.name_column):
            problems.add("destination.event", "set event.name (a constant) or event.name_column")
        self.spec = spec
        if spec is not None:
            check_properties(spec.properties, problems, "destination.event.properties", event=True)

    def prepare(self, row: PlanRow) -> Result:
        assert self.spec is not None
        spec, values = self.spec, row.values
        obj = start_track_object(row, "event", self.ident, spec.app_id, self.max_unknown_sends)
        if not isinstance(obj, dict):
            return obj
        name = spec.name if spec.name else values.get(spec.name_column or "")
        problem = validate.required_string("name", name)
        if problem:
            return Invalid(problem)
        obj["name"] = name
        when = validate.event_time(values.get(spec.time))
        problem = validate.time("time", when)
        if problem:
            return Invalid(problem)
        obj["time"] = when
        problem = finish_track_object(obj, "event", spec.properties, values, self.flag, row.times)
        if problem:
            return Invalid(problem)
        return self.profiles.place(row, _item(self.channel, obj, datapoints.event_object(obj)))


class PurchasesPayloads:
    channel = "POST /users/track purchases"
    max_unknown_sends = MAX_UNKNOWN_SENDS       # set from the connection by the destination

    def __init__(self, sync: SyncSpec, problems: SpecProblems) -> None:
        self.ident = IdentifierRule(sync, problems, IDENTIFIER_KINDS)
        self.flag = self.ident.update_flag(sync.destination.mode)
        self.profiles = ProfileRule(sync, self.channel)
        self.spec = sync.destination.purchase
        if self.spec is None:
            problems.add("destination", "purchases need a purchase: section (product_id, currency, price, time)")
        else:
            check_properties(self.spec.properties, problems, "destination.purchase.properties", event=False)

    def prepare(self, row: PlanRow) -> Result:
        assert self.spec is not None
        spec, values = self.spec, row.values
        obj = start_track_object(row, "purchase", self.ident, spec.app_id, self.max_unknown_sends)
        if not isinstance(obj, dict):
            return obj
        product_id = _as_id(values.get(spec.product_id))
        quantity = values.get(spec.quantity) if spec.quantity else None
        quantity = 1 if quantity is None else quantity
        when = validate.event_time(values.get(spec.time))
        problem = (validate.required_string("product_id", product_id)
                   or validate.currency(values.get(spec.currency))
                   or validate.price(values.get(spec.price))
                   or validate.quantity(quantity)
                   or validate.time("time", when))
        if problem:
            return Invalid(problem)
        obj["product_id"] = product_id
        obj["currency"] = values[spec.currency]
        obj["price"] = values[spec.price]
        obj["quantity"] = quantity
        obj["time"] = when
        problem = finish_track_object(obj, "purchase", spec.properties, values, self.flag, row.times)
        if problem:
            return Invalid(problem)
        return self.profiles.place(row, _item(self.channel, obj, datapoints.purchase_object(obj)))


class CatalogPayloads:
    def __init__(self, sync: SyncSpec, problems: SpecProblems) -> None:
        dest = sync.destination
        self.item_id = dest.item_id or ""
        self.nulls = dest.nulls
        self.on_removed = dest.on_removed
        catalog = dest.catalog or ""
        if not _SAFE_TOKEN.match(catalog):
            problems.add("destination.catalog", f"catalog name {catalog!r} must be 1-250 letters, digits, '-' or '_'")
        if not dest.item_id:
            problems.add("destination.item_id", "catalog_items need item_id (the column holding the item id)")
        if dest.on_removed == "unset":
            problems.add("destination.on_removed", "catalog_items support on_removed: ignore or delete, not unset")
        self.fields = FieldMap(sync, problems, {self.item_id}, frozenset({"id"}))
        path = f"/catalogs/{catalog}/items"
        self.put, self.patch, self.delete = f"PUT {path}", f"PATCH {path}", f"DELETE {path}"

    def prepare(self, row: PlanRow) -> Result:
        values = row.values
        item_id = _as_id(values.get(self.item_id))
        problem = validate.catalog_item_id(self.item_id, item_id)
        if problem:
            return Invalid(problem)
        if row.op == REMOVED:
            if self.on_removed != "delete":
                return Skip("removed from the model; on_removed is ignore")
            return _item(self.delete, {"id": item_id}, 0)
        pairs = self.fields.pairs(values)
        if isinstance(pairs, str):
            return Invalid(pairs)
        obj: dict[str, Any] = {"id": item_id}
        if row.op == ADDED or row.uncertain or self.item_id in row.changed:
            # PUT creates the item or replaces it whole: right for a new item, for one whose earlier send
            # got no usable answer (it may or may not exist), and for a row now naming another item
            for field, column in pairs:
                obj[field] = values.get(column)
            channel = self.put
        else:
            changed = set(row.changed)
            for field, column in pairs:
                if column in changed:
                    value = values.get(column)
                    if value is not None or self.nulls == "unset":
                        obj[field] = value
            for field in row.unmapped:              # on_unmapped: unset
                obj[field] = None
            if len(obj) == 1:
                return Skip("no mapped field changed")
            channel = self.patch
        for field, value in obj.items():
            if field != "id":
                problem = validate.catalog_value(field, value, time=field in row.times)
                if problem:
                    return Invalid(problem)
        return _item(channel, obj, 0)


class SubscriptionPayloads:
    channel = "POST /users/track attributes"

    def __init__(self, sync: SyncSpec, problems: SpecProblems) -> None:
        self.ident = IdentifierRule(sync, problems, ("external_id", "email", "phone"))
        spec = sync.destination.subscription
        self.spec = spec
        if spec is None:
            problems.add("destination", "subscription_groups need a subscription: section (state, group_id)")
        elif not (spec.group_id or spec.group_id_column):
            problems.add("destination.subscription", "set subscription.group_id or subscription.group_id_column")
        elif spec.group_id:
            problem = validate.subscription_group_id("group_id", spec.group_id)
            if problem:
                problems.add("destination.subscription.group_id", problem)

    def prepare(self, row: PlanRow) -> Result:
        if row.op == REMOVED:
            return Skip("removed from the model; subscription states are not reverted")
        assert self.spec is not None
        spec, values = self.spec, row.values
        if row.op == CHANGED:
            watched = {spec.state, spec.group_id_column, self.ident.column}
            if not watched.intersection(row.changed):
                return Skip("subscription state unchanged")
        raw, problem = self.ident.value(values)
        if problem:
            return Invalid(problem)
        group = spec.group_id or values.get(spec.group_id_column or "")
        problem = validate.subscription_group_id(spec.group_id_column or "group_id", group)
        if problem:
            return Invalid(problem)
        state = values.get(spec.state)
        if state is True or state == "subscribed":
            text = "subscribed"
        elif state is False or state == "unsubscribed":
            text = "unsubscribed"
        else:
            return Invalid(f"{spec.state}: {validate.show(state)} is not true/false or 'subscribed'/'unsubscribed'")
        # inside a /users/track attributes object the state travels with the profile: Braze creates the
        # profile if it does not exist yet (or finds it, whichever request lands first), where
        # /subscription/status/set answers success for an unknown user and keeps nothing; and it costs
        # no data points
        obj, _ = self.ident.track(values)
        obj["subscription_groups"] = [{"subscription_group_id": group, "subscription_state": text}]
        return _item(self.channel, obj, datapoints.attributes_object(obj))


class UserDeletesPayloads:
    def __init__(self, sync: SyncSpec, problems: SpecProblems) -> None:
        self.ident = IdentifierRule(sync, problems, IDENTIFIER_KINDS)

    def prepare(self, row: PlanRow) -> Result:
        if row.op == CHANGED and not row.uncertain and self.ident.column not in row.changed:
            return Skip("user delete already sent")
        if row.op == REMOVED:
            return Skip("left the delete model; nothing to send")
        return self.ident.delete_item(row.values)


COHORT_ID_FIELD = "cohort_id"          # a cohort sync's projected fields (projection.py): the cohort id column,
COHORT_NAME_FIELD = "cohort_name"      # and the cohort's name (a column, or the constant name)
COHORT_ENTERED, COHORT_LEFT = "add", "remove"
ASSIGNMENT_POINTS = 1                  # a partner cohort assignment is a data point (braze-api.md §2.10)


def cohort_channels(partner: str, cohort_id: str, kind: str) -> tuple[str, str, str]:
    """The partner method's channels of one cohort: members entering (the cohort's name follows,
    percent-encoded, so that the request creating or renaming the cohort can go first), members leaving,
    and the rename. `kind`: the identifier kind (external_id → user_ids, user_alias → aliases)."""
    array = "aliases" if kind == "user_alias" else "user_ids"
    users = f"POST /partners/{partner}/cohorts/users {cohort_id} {array}"
    return f"{users} {COHORT_ENTERED}", f"{users} {COHORT_LEFT}", f"POST /partners/{partner}/cohorts {cohort_id}"


def entering_channel(channel: str, name: str) -> str:
    return f"{channel} {quote(name, safe='')}"


class CohortPayloads:
    """Membership: a row that enters the model enters its cohort, a row that leaves it leaves the cohort
    (whatever on_removed says: leaving is what a cohort is). Nothing else is sent, but a partner
    cohort's new name: every member row whose recorded name differs goes on the cohort's rename channel,
    where one request per apply renames the cohort and acknowledges them all, so the new name is recorded
    for no member before Braze has it (a rename that fails stays pending on every such row, not on one
    that may leave the model before the next run)."""

    partner = ""                  # set from the connection by the destination (method partner)
    attribute_channel = "POST /users/track attributes"         # method attribute

    def __init__(self, sync: SyncSpec, problems: SpecProblems) -> None:
        self.ident = IdentifierRule(sync, problems, ("external_id", "user_alias"))
        spec = sync.destination.cohort
        assert spec is not None
        self.spec = spec
        self.method = spec.method
        self.attribute = spec.attribute or ""
        self.profiles = ProfileRule(sync, self.attribute_channel)     # entering members whose user exists
        if spec.id is not None and not _SAFE_TOKEN.match(spec.id):
            problems.add("destination.cohort.id", f"cohort id {spec.id!r} must be 1-250 letters, digits, '-' or '_'")
        if spec.method == "attribute":
            problem = validate.name("attribute", self.attribute)
            if problem is None and (self.attribute in RESERVED_ATTRIBUTE_KEYS or self.attribute in validate.STANDARD_FIELDS
                                    or self.attribute in validate.STANDARD_ARRAYS):
                problem = f"{self.attribute!r} is reserved by Braze; a cohort attribute must be a custom attribute"
            if problem:
                problems.add("destination.attribute", problem)

    def cohort_of(self, values: Mapping[str, Any]) -> tuple[str, str | None]:
        """(cohort id, why it cannot be one)."""
        cohort = self.spec.id if self.spec.id is not None else _as_id(values.get(COHORT_ID_FIELD))
        if not isinstance(cohort, str) or not _SAFE_TOKEN.match(cohort):
            column = self.spec.id_column or "cohort.id"
            return "", f"{column}: {validate.show(cohort)} is not a cohort id (1-250 letters, digits, '-' or '_')"
        return cohort, None

    def name_of(self, values: Mapping[str, Any], cohort: str) -> str:
        name = values.get(COHORT_NAME_FIELD)
        return name if isinstance(name, str) and name.strip() else cohort

    def prepare(self, row: PlanRow) -> Result:
        values = row.values
        cohort, problem = self.cohort_of(values)
        if problem:
            return Invalid(problem)
        if row.op == CHANGED:
            # a member whose entering went unanswered has its identity UNKNOWN (Capabilities.membership):
            # it is "moved" and enters again; one whose rename went unanswered has only its name UNKNOWN
            moved = {self.ident.kind, COHORT_ID_FIELD}.intersection(row.changed)
            if not moved:
                if COHORT_NAME_FIELD in row.changed and self.method == "partner":
                    return self._rename(cohort, self.name_of(values, cohort))
                return Skip("still a member; nothing to send")
        leaving = row.op == REMOVED
        if self.method == "attribute":
            ident, problem = self.ident.track(values)
            if problem:
                return Invalid(problem)
            obj = {**ident, "_update_existing_only": True,
                   self.attribute: {COHORT_LEFT if leaving else COHORT_ENTERED: [cohort]}}
            return self.profiles.place(row, _item(self.attribute_channel, obj, datapoints.attributes_object(obj)))
        raw, problem = self.ident.value(values)
        if problem:
            return Invalid(problem)
        member = {"alias_name": raw, "alias_label": self.ident.alias_label} if self.ident.kind == "user_alias" else raw
        entered, left, _ = cohort_channels(self.partner, cohort, self.ident.kind)
        channel = left if leaving else entering_channel(entered, self.name_of(values, cohort))
        return _item(channel, member, ASSIGNMENT_POINTS)

    def _rename(self, cohort: str, name: str) -> Result:
        return _item(cohort_channels(self.partner, cohort, self.ident.kind)[2],
                     {"cohort_id": cohort, "name": name}, 0)


def start_track_object(row: PlanRow, what: str, ident: IdentifierRule, app_id: str | None,
                       max_unknown_sends: int = MAX_UNKNOWN_SENDS) -> dict[str, Any] | Result:
    """The identifier (and app_id) part of an append-only event or purchase; a Skip or Invalid instead."""
    if row.op == CHANGED:
        return Skip(f"{what} already sent; changes are not re-sent")
    if row.op == REMOVED:
        return Skip(f"{what}s are append-only; removed rows are not sent")
    if row.unknowns >= max_unknown_sends:
        # each send may have landed: stop adding copies; `reflow errors` lists it for a decision
        return Skip(f"sent {row.unknowns} times without a usable answer (each may have landed in Braze): "
                    f"not sent again automatically, so Braze holds it at most {row.unknowns} times; if it is "
                    "missing in Braze, send it again with a new key")
    obj, problem = ident.track(row.values)
    if problem:
        return Invalid(problem)
    if app_id:
        obj["app_id"] = app_id
    return obj


def finish_track_object(obj: dict[str, Any], what: str, mapping: Mapping[str, str], values: Mapping[str, Any],
                        flag: bool | None, times: frozenset[str] = frozenset()) -> str | None:
    """Add an event's or purchase's properties (validated) and `_update_existing_only`; a reason if invalid.
    `times`: the columns read from TIMESTAMP or DATE model columns."""
    props = collect_properties(mapping, values)
    if props:
        problem = validate.properties(what, props, event=what == "event",
                                      times=frozenset(p for p, column in mapping.items() if column in times))
        if problem:
            return problem
        obj["properties"] = props
    if flag is not None:
        obj["_update_existing_only"] = flag
    return None


def collect_properties(mapping: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """Property → value for non-null values (a null property carries nothing for an event)."""
    props: dict[str, Any] = {}
    for prop, column in mapping.items():
        value = values.get(column)
        if value is not None:
            props[prop] = value
    return props


def check_properties(mapping: Mapping[str, str], problems: SpecProblems, path: str, *, event: bool) -> None:
    for prop in mapping:
        problem = validate.name("property", prop)
        if problem is None and event and prop in validate.RESERVED_EVENT_PROPERTIES:
            problem = f"property name {prop!r} is reserved by Braze"
        if problem:
            problems.add(f"{path}.{prop}", problem)


Payloads = (UsersPayloads | EventsPayloads | PurchasesPayloads | CatalogPayloads | SubscriptionPayloads
            | UserDeletesPayloads | CohortPayloads)
BUILDERS: dict[str, Callable[[SyncSpec, SpecProblems], Payloads]] = {
    "users": UsersPayloads,
    "events": EventsPayloads,
    "purchases": PurchasesPayloads,
    "catalog_items": CatalogPayloads,
    "subscription_groups": SubscriptionPayloads,
    "user_deletes": UserDeletesPayloads,
    "cohorts": CohortPayloads,
}


def build_payloads(sync: SyncSpec) -> Payloads:
    """The payload rules of a sync; raises SpecError listing every problem of its destination section."""
    problems = SpecProblems(sync)
    builder = BUILDERS.get(sync.destination.object)
    if builder is None:
        problems.add("destination.object", f"unknown object {sync.destination.object!r}; "
                     f"expected one of {', '.join(BUILDERS)}")
        problems.raise_if_any()
        raise AssertionError("unreachable")
    payloads = builder(sync, problems)
    problems.raise_if_any()
    return payloads
