"""The profile store: users, events, purchases, catalogs, subscription states.

Not thread-safe by itself: the server holds `store.lock` around every handler call.
Everything is plain JSON-ready data so that `to_json` / `from_json` round-trip for `--state`.

Asynchronous visibility (`visibility_delay_ms`): a profile /users/track just created is `hidden`
until a moment passes; endpoints that look profiles up for someone else's request ask `visible`
(or filter with `seen` / `only_visible`). Hidden moments are not persisted: a loaded store shows all.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

PRIORITY_IDENTIFIED = "identified"
PRIORITY_UNIDENTIFIED = "unidentified"
PRIORITY_RECENT = "most_recently_updated"
PRIORITY_LEAST_RECENT = "least_recently_updated"


@dataclass
class User:
    braze_id: str
    external_id: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)          # alias_label -> alias_name
    attributes: dict[str, Any] = field(default_factory=dict)       # standard profile fields
    custom_attributes: dict[str, Any] = field(default_factory=dict)
    subscription_groups: dict[str, str] = field(default_factory=dict)  # group id -> state
    created_at: float = 0.0
    updated_seq: int = 0                                             # higher = more recently updated

    @property
    def email(self) -> str | None:
        value = self.attributes.get("email")
        return value if isinstance(value, str) else None

    @property
    def phone(self) -> str | None:
        value = self.attributes.get("phone")
        return value if isinstance(value, str) else None


@dataclass
class Catalog:
    name: str
    description: str
    fields: list[dict[str, str]]
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    updated_at: str = ""

    def field_types(self) -> dict[str, str]:
        return {f["name"]: f["type"] for f in self.fields}


def _normal_email(email: str) -> str:
    return email.strip().lower()


class Store:
    """All sandbox data. Lookups by external_id, alias and email/phone go through indexes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        self.users: dict[str, User] = {}
        self.by_external_id: dict[str, str] = {}
        self.by_alias: dict[tuple[str, str], str] = {}               # (label, name) -> braze_id
        self.by_email: dict[str, set[str]] = {}
        self.by_phone: dict[str, set[str]] = {}
        self.events: list[dict[str, Any]] = []
        self.purchases: list[dict[str, Any]] = []
        self.catalogs: dict[str, Catalog] = {}
        self.orphan_subscriptions: dict[str, dict[str, str]] = {}    # "email:x"/"phone:x" -> states
        # partner cohorts: cohort_id -> {"partner", "name"?, "created_at"?, "members": {braze_id: True}}
        self.cohorts: dict[str, dict[str, Any]] = {}
        self.data_points = 0
        self.hidden_until: dict[str, float] = {}                     # braze_id -> time.monotonic()
        self._seq = itertools.count(1)
        self._ids = itertools.count(1)

    # ---- identity -------------------------------------------------------------------------

    def new_braze_id(self) -> str:
        """24 hex digits, ObjectId-like: 8 of epoch seconds, 16 of a counter."""
        while True:
            candidate = f"{int(time.time()):08x}{next(self._ids):016x}"
            if candidate not in self.users:
                return candidate

    def create_user(self, external_id: str | None = None) -> User:
        user = User(braze_id=self.new_braze_id(), external_id=external_id, created_at=time.time())
        self.users[user.braze_id] = user
        if external_id is not None:
            self.by_external_id[external_id] = user.braze_id
        self.touch(user)
        return user

    def touch(self, user: User) -> None:
        user.updated_seq = next(self._seq)

    def by_external(self, external_id: str) -> User | None:
        braze_id = self.by_external_id.get(external_id)
        return self.users.get(braze_id) if braze_id else None

    def by_alias_pair(self, name: str, label: str) -> User | None:
        braze_id = self.by_alias.get((label, name))
        return self.users.get(braze_id) if braze_id else None

    def users_with_email(self, email: str) -> list[User]:
        return [self.users[b] for b in self.by_email.get(_normal_email(email), ())]

    def users_with_phone(self, phone: str) -> list[User]:
        return [self.users[b] for b in self.by_phone.get(phone.strip(), ())]

    def lookup_secondary(self, kind: str, value: str) -> User | None:
        """/users/track lookup by email or phone: most recently updated, preferring identified users."""
        matches = self.users_with_email(value) if kind == "email" else self.users_with_phone(value)
        if not matches:
            return None
        return max(matches, key=lambda u: (u.external_id is not None, u.updated_seq))

    def prioritized(self, matches: list[User], prioritization: list[str]) -> User | None:
        """The one user Braze's ordered `prioritization` picks; None when none or several still match.

        Rules apply in order while more than one user matches: `identified` / `unidentified` prefer
        the users with / without an external_id (when there are any), `most_recently_updated` /
        `least_recently_updated` keep the latest / earliest updated one. A single match is the one.
        """
        candidates = list(matches)
        for rule in prioritization:
            if len(candidates) <= 1:
                break
            if rule == PRIORITY_IDENTIFIED:
                candidates = [u for u in candidates if u.external_id is not None] or candidates
            elif rule == PRIORITY_UNIDENTIFIED:
                candidates = [u for u in candidates if u.external_id is None] or candidates
            elif rule == PRIORITY_RECENT:
                candidates = [max(candidates, key=lambda u: u.updated_seq)]
            elif rule == PRIORITY_LEAST_RECENT:
                candidates = [min(candidates, key=lambda u: u.updated_seq)]
        return candidates[0] if len(candidates) == 1 else None

    def hide(self, user: User, seconds: float) -> None:
        """Keep `user` unknown to other endpoints for `seconds` (asynchronous processing)."""
        if seconds > 0:
            self.hidden_until[user.braze_id] = time.monotonic() + seconds

    def visible(self, user: User) -> bool:
        until = self.hidden_until.get(user.braze_id)
        if until is None:
            return True
        if time.monotonic() < until:
            return False
        del self.hidden_until[user.braze_id]
        return True

    def seen(self, user: User | None) -> User | None:
        """`user` if other endpoints can see it yet, else None."""
        return user if user is not None and self.visible(user) else None

    def only_visible(self, users: list[User]) -> list[User]:
        return [u for u in users if self.visible(u)]

    def set_external_id(self, user: User, external_id: str) -> None:
        user.external_id = external_id
        self.by_external_id[external_id] = user.braze_id

    def add_alias(self, user: User, name: str, label: str) -> bool:
        """Give `user` the alias; False when the label is taken on this user or the alias elsewhere."""
        if label in user.aliases or (label, name) in self.by_alias:
            return False
        user.aliases[label] = name
        self.by_alias[(label, name)] = user.braze_id
        return True

    def set_contact(self, user: User, kind: str, value: str | None) -> None:
        """Set email or phone, keeping the lookup index right and applying orphaned subscriptions."""
        index = self.by_email if kind == "email" else self.by_phone
        normal = _normal_email if kind == "email" else str.strip
        old = user.attributes.get(kind)
        if isinstance(old, str):
            index.get(normal(old), set()).discard(user.braze_id)
        if value is None:
            user.attributes.pop(kind, None)
            return
        user.attributes[kind] = value
        index.setdefault(normal(value), set()).add(user.braze_id)
        orphan = self.orphan_subscriptions.get(f"{kind}:{normal(value)}")
        if orphan:
            for group, state in orphan.items():
                user.subscription_groups.setdefault(group, state)

    def cohort(self, cohort_id: str, partner: str) -> dict[str, Any]:
        """Partner `partner`'s cohort `cohort_id` (each partner's cohorts are its own, as under Braze's
        /partners/{partner}/), made (nameless, empty) if it does not exist."""
        return self.cohorts.setdefault(f"{partner}/{cohort_id}",
                                       {"partner": partner, "cohort_id": cohort_id, "members": {}})

    def delete_user(self, user: User) -> None:
        self.users.pop(user.braze_id, None)
        for cohort in self.cohorts.values():
            cohort["members"].pop(user.braze_id, None)
        self.hidden_until.pop(user.braze_id, None)
        if user.external_id is not None:
            self.by_external_id.pop(user.external_id, None)
        for label, name in user.aliases.items():
            self.by_alias.pop((label, name), None)
        for kind in ("email", "phone"):
            self.set_contact(user, kind, None)
        self.events = [e for e in self.events if e["braze_id"] != user.braze_id]
        self.purchases = [p for p in self.purchases if p["braze_id"] != user.braze_id]

    def merge_into(self, source: User, target: User) -> None:
        """Fold an unidentified profile into an identified one (/users/identify), then drop it."""
        for key, value in source.attributes.items():
            if key not in target.attributes:
                if key in ("email", "phone"):
                    self.set_contact(target, key, value)
                else:
                    target.attributes[key] = value
        for key, value in source.custom_attributes.items():
            target.custom_attributes.setdefault(key, value)
        for group, state in source.subscription_groups.items():
            target.subscription_groups.setdefault(group, state)
        aliases = dict(source.aliases)
        for rows in (self.events, self.purchases):
            for row in rows:
                if row["braze_id"] == source.braze_id:
                    row["braze_id"] = target.braze_id
                    row["external_id"] = target.external_id
        self.delete_user(source)
        for label, name in aliases.items():
            self.add_alias(target, name, label)
        self.touch(target)

    # ---- persistence ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "users": [asdict(u) for u in self.users.values()],
            "events": self.events,
            "purchases": self.purchases,
            "catalogs": [asdict(c) for c in self.catalogs.values()],
            "orphan_subscriptions": self.orphan_subscriptions,
            "cohorts": self.cohorts,
            "data_points": self.data_points,
        }

    def load_json(self, data: dict[str, Any]) -> None:
        """Replace the contents with a `to_json` document (raises KeyError/TypeError when malformed)."""
        self.reset()
        for raw in data["users"]:
            user = User(**raw)
            self.users[user.braze_id] = user
            if user.external_id is not None:
                self.by_external_id[user.external_id] = user.braze_id
            for label, name in user.aliases.items():
                self.by_alias[(label, name)] = user.braze_id
            for kind, index in (("email", self.by_email), ("phone", self.by_phone)):
                value = user.attributes.get(kind)
                if isinstance(value, str):
                    key = _normal_email(value) if kind == "email" else value.strip()
                    index.setdefault(key, set()).add(user.braze_id)
        self.events = list(data["events"])
        self.purchases = list(data["purchases"])
        self.catalogs = {c["name"]: Catalog(**c) for c in data["catalogs"]}
        self.orphan_subscriptions = dict(data.get("orphan_subscriptions", {}))
        self.cohorts = {k: dict(v) for k, v in data.get("cohorts", {}).items()}
        self.data_points = int(data.get("data_points", 0))
        top = max((u.updated_seq for u in self.users.values()), default=0)
        self._seq = itertools.count(top + 1)
        self._ids = itertools.count(len(self.users) + 1)
