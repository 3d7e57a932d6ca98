"""Sync specs: frozen values, and loading `syncs/**/*.yml` with located, all-at-once errors.

The value classes below are the contract the rest of the engine reads. Loading
(`load_syncs`) validates every file against `schemas/sync.schema.json` and reports
every problem at once as `file:line:col: path: message`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

OBJECTS = ("users", "events", "purchases", "catalog_items", "subscription_groups", "user_deletes")
IDENTIFIER_KINDS = ("external_id", "user_alias", "braze_id", "email", "phone")


@dataclass(frozen=True)
class Location:
    file: str
    line: int | None = None
    col: int | None = None


@dataclass(frozen=True)
class Identifier:
    """How a row names its Braze user. `column` is the model column holding the id
    (for `user_alias`, the column holding `alias_name`; `alias_label` is a constant)."""

    kind: str
    column: str
    alias_label: str | None = None


@dataclass(frozen=True)
class EventSpec:
    time: str                                   # column
    name: str | None = None                     # constant event name ...
    name_column: str | None = None              # ... or a column holding it
    properties: Mapping[str, str] = field(default_factory=dict)   # property -> column
    app_id: str | None = None                   # constant


@dataclass(frozen=True)
class PurchaseSpec:
    product_id: str                             # column
    currency: str                               # column
    price: str                                  # column
    time: str                                   # column
    quantity: str | None = None                 # column
    properties: Mapping[str, str] = field(default_factory=dict)
    app_id: str | None = None


@dataclass(frozen=True)
class SubscriptionSpec:
    state: str                                  # column: boolean or 'subscribed'/'unsubscribed'
    group_id: str | None = None                 # constant UUID ...
    group_id_column: str | None = None          # ... or a column holding it


@dataclass(frozen=True)
class DestinationSpec:
    connection: str
    object: str                                 # one of OBJECTS
    mode: str = "upsert"                        # upsert | update
    identifier: Identifier | None = None        # required except for catalog_items
    fields: Mapping[str, str] | None = None     # Braze attribute -> model column; None: every non-key column
    on_removed: str = "ignore"                  # ignore | unset | delete
    nulls: str = "unset"                        # unset | skip
    event: EventSpec | None = None
    purchase: PurchaseSpec | None = None
    catalog: str | None = None
    item_id: str | None = None                  # column
    subscription: SubscriptionSpec | None = None


@dataclass(frozen=True)
class Guards:
    max_added: int | None = None
    max_changed: int | None = None
    max_removed: int | None = None
    max_changed_pct: float | None = None
    max_removed_pct: float | None = None
    max_data_points: int | None = None


@dataclass(frozen=True)
class SyncSpec:
    name: str
    model: str
    primary_key: tuple[str, ...]
    destination: DestinationSpec
    guards: Guards = field(default_factory=Guards)
    first_run: str = "send_all"                 # send_all | baseline
    tags: tuple[str, ...] = ()
    description: str | None = None
    path: str = ""                              # file it was declared in, relative to the project
    raw: Mapping[str, object] = field(default_factory=dict, compare=False)  # the parsed document
    locations: Mapping[str, Location] = field(default_factory=dict, compare=False)  # "destination.mode" -> where

    def where(self, path: str) -> Location:
        """Best location for a dotted field path, falling back to its parents, then the file."""
        parts = path.split(".")
        while parts:
            loc = self.locations.get(".".join(parts))
            if loc is not None:
                return loc
            parts.pop()
        return Location(self.path, 1, 1)
