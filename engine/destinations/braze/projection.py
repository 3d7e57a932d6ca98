"""What a Braze sync's snapshot holds: each row's Braze fields, under Braze's names.

    users                <identifier>, then each attribute            identity: <identifier>
    events               <identifier>, name?, time, properties.<p>    (append-only: no identity)
    purchases            <identifier>, product_id, currency, price, quantity?, time, properties.<p>
    catalog_items        id, then each catalog field                  identity: id
    subscription_groups  <identifier>, subscription_group_id?, subscription_state
                                                                      identity: <identifier>, group
    user_deletes         <identifier>                                 identity: <identifier>
    cohorts              <identifier>, cohort_id?, cohort_name?        identity: <identifier>, cohort_id?

<identifier> is the identifier kind (`external_id`, `user_alias` holding the alias name, `braze_id`,
`email`, `phone`); `name?` and `subscription_group_id?` appear when they come from a column, `quantity?`
when mapped. Constants (an event name, a group id, an alias label, the catalog) are not per row: they
are part of the sync's identity or of its spec. One exception: a partner cohort's constant name is a
constant field (`Projection.constants`), so that renaming the cohort in the spec is a change the diff
sees (the cohort is renamed in Braze) and not a new destination.

`projected_spec` rewrites a sync so that every column it names is the field's own name: the payload
rules (payloads.py, sql_users.py) then read projected rows as they read model rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from engine.destinations.base import Projection
from engine.destinations.braze import validate
from engine.destinations.braze.payloads import (
    COHORT_ID_FIELD,
    COHORT_NAME_FIELD,
    RESERVED_ATTRIBUTE_KEYS,
    SpecProblems,
)
from engine.specs import CohortSpec, EventSpec, Identifier, PurchaseSpec, SubscriptionSpec, SyncSpec

PROPERTY_PREFIX = "properties."
GROUP_FIELD = "subscription_group_id"
STATE_FIELD = "subscription_state"
ITEM_ID_FIELD = "id"


def identifier_field(sync: SyncSpec) -> str | None:
    ident = sync.destination.identifier
    return ident.kind if ident is not None else None


def project(sync: SyncSpec, columns: Sequence[str]) -> tuple[Projection, SyncSpec]:
    """The projection of `sync` over a model returning `columns`, and the spec rewritten onto it.
    Raises SpecError (located in the sync file) when automatically mapped columns cannot be fields."""
    problems = SpecProblems(sync)
    d = sync.destination
    ident = identifier_field(sync)
    pairs: list[tuple[str, str]] = []
    if ident is not None and d.identifier is not None:
        pairs.append((ident, d.identifier.column))
    identity: tuple[str, ...] = ()
    constants: tuple[tuple[str, str], ...] = ()
    obj = d.object
    if obj == "users":
        attributes = _mapped(sync, columns, {d.identifier.column} if d.identifier else set(),
                             RESERVED_ATTRIBUTE_KEYS, "attribute", problems)
        for name, column in attributes:
            if name == ident:
                if column != pairs[0][1]:
                    problems.add(f"destination.fields.{name}", f"{name} is the identifier (column "
                                 f"{pairs[0][1]!r}); it cannot also be mapped to column {column!r}")
                continue
            pairs.append((name, column))
        identity = (ident,) if ident else ()
    elif obj in ("events", "purchases"):
        pairs += _track_fields(sync)
    elif obj == "catalog_items":
        pairs = [(ITEM_ID_FIELD, d.item_id or "")]
        pairs += _mapped(sync, columns, {d.item_id or ""}, frozenset({ITEM_ID_FIELD}), "catalog field", problems)
        identity = (ITEM_ID_FIELD,)
    elif obj == "subscription_groups" and d.subscription is not None:
        if d.subscription.group_id_column:
            pairs.append((GROUP_FIELD, d.subscription.group_id_column))
        pairs.append((STATE_FIELD, d.subscription.state))
        identity = tuple(f for f in (ident, GROUP_FIELD if d.subscription.group_id_column else None) if f)
    elif obj == "user_deletes":
        identity = (ident,) if ident else ()
    elif obj == "cohorts" and d.cohort is not None:
        c = d.cohort
        if c.id_column:
            pairs.append((COHORT_ID_FIELD, c.id_column))
        # a partner cohort's name is always a field: without a name, the cohort is named by its id, so
        # dropping name_column renames the cohorts to their ids in the plan, not behind it (an entering
        # member's request names the cohort as its row does)
        if c.method == "partner" and (c.name_column or c.id_column):
            pairs.append((COHORT_NAME_FIELD, c.name_column or c.id_column or ""))
        elif c.method == "partner" and c.id is not None:
            constants = ((COHORT_NAME_FIELD, c.name or c.id),)
        identity = tuple(f for f in (ident, COHORT_ID_FIELD if c.id_column else None) if f)
    problems.raise_if_any()
    projection = Projection(fields=tuple(pairs), identity=identity, constants=constants)
    return projection, projected_spec(sync, projection)


def _mapped(sync: SyncSpec, columns: Sequence[str], exclude: set[str], reserved: frozenset[str], what: str,
            problems: SpecProblems) -> list[tuple[str, str]]:
    """Explicit `fields`, or every model column but the keys and identifier (checked as field names)."""
    if sync.destination.fields is not None:
        return list(sync.destination.fields.items())
    skip = set(sync.primary_key) | exclude
    found = []
    for column in columns:
        if column in skip:
            continue
        problem = f"{column!r} is reserved by Braze" if column in reserved else validate.name(what, column)
        if problem:
            problems.add("destination", f"model column {column!r} would be sent as {what} {column!r}: {problem}; "
                         "list destination.fields explicitly to rename it or leave it out")
            continue
        found.append((column, column))
    return found


def _track_fields(sync: SyncSpec) -> list[tuple[str, str]]:
    d = sync.destination
    if d.event is not None:
        e = d.event
        out = [("name", e.name_column)] if e.name_column else []
        out.append(("time", e.time))
        return out + [(PROPERTY_PREFIX + p, c) for p, c in e.properties.items()]
    if d.purchase is not None:
        p = d.purchase
        out = [("product_id", p.product_id), ("currency", p.currency), ("price", p.price)]
        if p.quantity:
            out.append(("quantity", p.quantity))
        out.append(("time", p.time))
        return out + [(PROPERTY_PREFIX + k, c) for k, c in p.properties.items()]
    return []


def projected_spec(sync: SyncSpec, projection: Projection) -> SyncSpec:
    """`sync` with every column it names replaced by the field that reads it."""
    d = sync.destination
    field_of = {f: f for f, _ in projection.fields}
    changes: dict[str, object] = {}
    if d.identifier is not None:
        changes["identifier"] = Identifier(d.identifier.kind, d.identifier.kind, d.identifier.alias_label)
    if d.object == "users":
        ident = d.identifier.kind if d.identifier is not None else None
        names = [f for f in field_of if f != ident]
        if ident is not None and d.fields and ident in d.fields:
            names.append(ident)                    # an email/phone identifier also mapped as the attribute
        changes["fields"] = {f: f for f in names}
    if d.object == "catalog_items":
        changes["fields"] = {f: f for f in field_of if f != ITEM_ID_FIELD}
    if d.object == "catalog_items":
        changes["item_id"] = ITEM_ID_FIELD
    if d.event is not None:
        e = d.event
        changes["event"] = EventSpec(time="time", name=e.name, name_column="name" if e.name_column else None,
                                     properties={p: PROPERTY_PREFIX + p for p in e.properties}, app_id=e.app_id)
    if d.purchase is not None:
        p = d.purchase
        changes["purchase"] = PurchaseSpec(
            product_id="product_id", currency="currency", price="price", time="time",
            quantity="quantity" if p.quantity else None,
            properties={k: PROPERTY_PREFIX + k for k in p.properties}, app_id=p.app_id)
    if d.cohort is not None:
        c = d.cohort
        changes["cohort"] = CohortSpec(method=c.method, id=c.id, name=c.name, attribute=c.attribute,
                                       id_column=COHORT_ID_FIELD if c.id_column else None,
                                       name_column=COHORT_NAME_FIELD if c.method == "partner" and (
                                           c.name_column or c.id_column) else None)
    if d.subscription is not None:
        s = d.subscription
        changes["subscription"] = SubscriptionSpec(
            state=STATE_FIELD, group_id=s.group_id, group_id_column=GROUP_FIELD if s.group_id_column else None)
    return dataclasses.replace(sync, destination=dataclasses.replace(d, **changes))  # type: ignore[arg-type]


def identity(sync: SyncSpec, base_url: str) -> Mapping[str, str]:
    """Where the rows go: the REST host, the object, and what names each row's Braze object."""
    d = sync.destination
    out = {"endpoint": urlsplit(base_url).netloc or base_url, "object": d.object}
    if d.identifier is not None:
        ident = f"{d.identifier.kind} from column {d.identifier.column}"
        if d.identifier.alias_label:
            ident += f" (alias label {d.identifier.alias_label})"
        out["identifier"] = ident
    if d.object == "catalog_items":
        out["catalog"] = d.catalog or ""
        out["identifier"] = f"item id from column {d.item_id}"
    if d.subscription is not None:
        out["subscription group"] = d.subscription.group_id or f"from column {d.subscription.group_id_column}"
    if d.cohort is not None:
        # the cohort's name is not here: a new name renames the cohort, it is not another destination
        c = d.cohort
        out["cohort method"] = c.method
        out["cohort"] = c.id or f"from column {c.id_column}"
        if c.method == "attribute":
            out["cohort attribute"] = c.attribute or ""
    return out
