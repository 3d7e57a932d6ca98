"""Profiles before objects: a batch on a channel with a profile rule (endpoints.py) goes out only for
the users Braze has.

Braze answers success to an update-only object whose user it does not have, and keeps nothing
(braze-api.md §0.1, §2.4): every object of a sync in `mode: update`, every braze_id object, and every
alias-identified event or purchase (Braze never lets those create the profile). So:

    check:<kind>        ask /users/export/ids which of the batch's users exist; send their rows;
                        hold the others back (WAITING, "waiting for profile": pending, planned again,
                        until the profile exists or the sync's missing_users_max_wait passes)
    create:user_alias   create the batch's alias profiles first (an attributes object with
                        `_update_existing_only: false`, acknowledged), then, since Braze creates
                        profiles asynchronously, ask /users/export/ids until they show (up to the
                        connection's `profile_wait` seconds) and send; rows whose profile does not
                        show in time wait for the next run

Only Braze's parsed answer decides: a lookup or a creation that got no usable answer sends nothing and
leaves the rows NOT_ATTEMPTED with the reason (undelivered: exit 3, the wait clock does not start); a
creation Braze refuses rejects the rows with Braze's reason.

Users found are remembered for the rest of the apply (one destination), never across runs: a profile
can be deleted. Users Braze said it does not have are not asked about again in the same apply (check). /users/export/ids takes 50 external ids or aliases per request, one email, phone or
braze_id; it has its own, low rate limit (connection `export_rate_limit`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.destinations.base import (
    ACKNOWLEDGED,
    NOT_ATTEMPTED,
    REJECTED,
    WAITING,
    AllAcknowledged,
    RowResult,
)
from engine.destinations.braze.endpoints import ChannelInfo, channel_info, export_info
from engine.errors import DestinationError

if TYPE_CHECKING:
    from engine.destinations.braze.client import BrazeClient

WAITING_REASON = "waiting for profile: Braze has no profile for this user yet (missing_users: wait)"
CREATING_REASON = "waiting for profile: the profile Reflow created is not visible in Braze yet"
_CREATE_CHANNEL = channel_info("POST /users/track attributes")
_POLL_FIRST = 0.2           # seconds before the first look for just-created profiles; doubles each time


def user_of(kind: str, item: str) -> str:
    """The user an object addresses, as the JSON identifier /users/export/ids takes for `kind`."""
    obj = json.loads(item)
    value = obj[kind] if kind != "user_alias" else {"alias_name": obj["user_alias"]["alias_name"],
                                                    "alias_label": obj["user_alias"]["alias_label"]}
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def found_users(kind: str, asked: Sequence[str], users: Sequence[Mapping[str, Any]]) -> set[str]:
    """Which of the identifiers `asked` (as user_of gives them) Braze's export answer holds."""
    if kind in ("email", "phone", "braze_id"):
        return set(asked) if users else set()           # one per request: any user found is it
    found: set[str] = set()
    for user in users:
        if kind == "user_alias":
            for alias in user.get("user_aliases") or ():
                if isinstance(alias, dict):
                    found.add(json.dumps({"alias_label": alias.get("alias_label"),
                                          "alias_name": alias.get("alias_name")}, ensure_ascii=False,
                                         separators=(",", ":"), sort_keys=True))
        elif user.get(kind) is not None:
            found.add(json.dumps(user[kind], ensure_ascii=False))
    return found & set(asked)


class ProfileGate:
    """Sends batches of channels with a profile rule through `client`, for one sync's apply."""

    def __init__(self, client: BrazeClient, *, profile_wait: float) -> None:
        self.client = client
        self.profile_wait = profile_wait
        self._sleep = client.wait
        self._monotonic = client.monotonic
        self._known: set[str] = set()       # users Braze showed during this apply
        self._absent: set[str] = set()      # users Braze said it does not have (check: not asked again)
        self._created: set[str] = set()     # alias profiles this apply created (acknowledged)
        self._lock = threading.Lock()

    def send(self, info: ChannelInfo, keys: Sequence[str], items: Sequence[str]) -> Sequence[RowResult]:
        kind = info.identifier
        assert info.profiles in ("check", "create") and kind is not None
        users = [user_of(kind, item) for item in items]
        results: dict[int, RowResult] = {}
        if info.profiles == "create":
            results.update(self._create(kind, keys, users))
        ready = self._wait_for(kind, [u for i, u in enumerate(users) if i not in results],
                               patient=info.profiles == "create")
        if isinstance(ready, str):          # no usable answer to the lookup: nothing was sent
            return [results.get(i) or RowResult(k, NOT_ATTEMPTED, f"looking up the user's profile failed: {ready}")
                    for i, k in enumerate(keys)]
        go = [i for i, u in enumerate(users) if i not in results and u in ready]
        stopped = self.client.stopped()     # the run is stopping: what was not confirmed is simply not sent
        for i, key in enumerate(keys):
            if i not in results and users[i] not in ready:
                results[i] = (RowResult(key, NOT_ATTEMPTED, "stopped before sending") if stopped else
                              RowResult(key, WAITING, CREATING_REASON if info.profiles == "create" else WAITING_REASON))
        if go:
            sent = self.client.send(info, [keys[i] for i in go], [items[i] for i in go])
            results.update(zip(go, sent, strict=True))
        if len(results) == len(keys) and all(r.outcome == ACKNOWLEDGED and not r.reason for r in results.values()):
            return AllAcknowledged(keys)
        return [results[i] for i in range(len(keys))]

    def _create(self, kind: str, keys: Sequence[str], users: Sequence[str]) -> dict[int, RowResult]:
        """Create the alias profiles not created yet; the results of the rows whose profile was not created."""
        with self._lock:
            todo = list(dict.fromkeys(u for u in users if u not in self._created and u not in self._known))
        if not todo:
            return {}
        items = [json.dumps({"user_alias": json.loads(u), "_update_existing_only": False},
                            ensure_ascii=False, separators=(",", ":")) for u in todo]
        answers = self.client.send(_CREATE_CHANNEL, todo, items)
        failed: dict[str, RowResult] = {}
        for user, answer in zip(todo, answers, strict=True):
            if answer.outcome == ACKNOWLEDGED:
                with self._lock:
                    self._created.add(user)
            else:
                failed[user] = answer
        out: dict[int, RowResult] = {}
        for i, user in enumerate(users):
            refused = failed.get(user)
            if refused is None:
                continue
            if refused.outcome == REJECTED:      # Braze refused the profile: the row cannot land as it is
                out[i] = RowResult(keys[i], REJECTED, f"Braze refused to create its profile: {refused.reason}")
            else:                                # no usable answer: the row itself was not sent
                out[i] = RowResult(keys[i], NOT_ATTEMPTED, f"creating the user's profile failed: {refused.reason}")
        return out

    def _wait_for(self, kind: str, users: Sequence[str], *, patient: bool) -> set[str] | str:
        """The users among `users` Braze shows, asking again until `profile_wait` passes when `patient`
        (profiles just created become visible asynchronously); or why the lookup failed."""
        with self._lock:
            ready = {u for u in users if u in self._known}
            absent = set() if patient else {u for u in users if u in self._absent}
        missing = list(dict.fromkeys(u for u in users if u not in ready and u not in absent))
        deadline = self._monotonic() + self.profile_wait
        delay = _POLL_FIRST
        if patient and missing:
            self._sleep(delay)
        while missing:
            found = self._lookup(kind, missing, patient=patient)
            if isinstance(found, str):
                return found
            with self._lock:
                self._known |= found
            ready |= found
            missing = [u for u in missing if u not in found]
            if not patient:
                with self._lock:
                    self._absent.update(missing)
            if not missing or not patient or self.client.stopped() or self._monotonic() + delay > deadline:
                break
            delay = min(delay * 2, 5.0)
            self._sleep(delay)
        return ready

    def _lookup(self, kind: str, users: Sequence[str], *, patient: bool = False) -> set[str] | str:
        info = export_info(kind)
        found: set[str] = set()
        for start in range(0, len(users), info.limit):
            asked = list(users[start:start + info.limit])
            try:
                answer = self.client.lookup(info, asked)
            except DestinationError as exc:
                why = ("alias-identified events and purchases are sent once Braze shows their profile, which "
                       "Reflow checks with /users/export/ids: give the key users.export.ids" if patient else
                       "missing_users: wait looks users up with /users/export/ids before sending update-only "
                       "rows: give the key users.export.ids, or set missing_users: skip")
                raise DestinationError(f"{exc.message}; {why}") from exc
            if isinstance(answer, str):
                return answer
            found |= found_users(kind, asked, answer)
        return found
