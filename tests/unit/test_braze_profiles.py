"""Profiles before objects (profiles.py) against a scripted Braze: which users are asked about, what
goes out, what waits, and that only Braze's parsed answer to /users/export/ids lets a row go."""

from __future__ import annotations

import json
from typing import Any

import pytest
from scripted_http import Call, ScriptedServer, reply
from test_braze_client import OPENED, FakeClock, destination, outcomes

from engine.destinations.base import ACKNOWLEDGED, NOT_ATTEMPTED, REJECTED, WAITING, Batch
from engine.errors import DestinationError
from engine.specs import EventSpec, Identifier

CHECK = "POST /users/track attributes check:external_id"
CREATE = "POST /users/track events create:user_alias"
ALIAS = Identifier("user_alias", "cid", "crm")
EVENT = EventSpec(name="order_placed", time="at")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class Braze:
    """Answers /users/track with success and /users/export/ids from `known` (or with `export`)."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.export: dict[str, Any] | None = None
        self.server = ScriptedServer([self.answer])

    def answer(self, call: Call) -> dict[str, Any]:
        body = call.json()
        if call.path == "/users/export/ids":
            if self.export is not None:
                return self.export
            users = [{"external_id": x} for x in body.get("external_ids", []) if x in self.known]
            users += [{"user_aliases": [a]} for a in body.get("user_aliases", []) if a["alias_name"] in self.known]
            return reply(200, {"message": "success", "users": users})
        for obj in body.get("attributes", []):
            if "user_alias" in obj and obj.get("_update_existing_only") is False:
                self.known.add(obj["user_alias"]["alias_name"])
        (array, objs), = body.items()
        return reply(201, {"message": "success", f"{array}_processed": len(objs)})

    def calls(self, path: str) -> list[Any]:
        return [c.json() for c in self.server.calls if c.path == path]


@pytest.fixture
def braze() -> Any:
    fake = Braze()
    yield fake
    for dest in OPENED:
        dest.close()
    OPENED.clear()
    fake.server.close()


def users_batch(*ids: str) -> Batch:
    return Batch(CHECK, ids, tuple(json.dumps({"external_id": i, "_update_existing_only": True, "tier": "gold"})
                                   for i in ids))


def test_only_rows_of_users_braze_has_are_sent(clock: FakeClock, braze: Braze) -> None:
    braze.known = {"a", "c"}
    dest = destination(clock, server=braze.server, mode="update")
    results = outcomes(dest.send(users_batch("a", "b", "c")))
    assert [(k, o) for k, o, _ in results] == [("a", ACKNOWLEDGED), ("b", WAITING), ("c", ACKNOWLEDGED)]
    assert "waiting for profile" in results[1][2]
    [asked] = braze.calls("/users/export/ids")
    assert asked == {"external_ids": ["a", "b", "c"], "fields_to_export": ["external_id"]}
    [sent] = braze.calls("/users/track")
    assert [o["external_id"] for o in sent["attributes"]] == ["a", "c"]


def test_users_are_asked_about_once_an_apply(clock: FakeClock, braze: Braze) -> None:
    braze.known = {"a"}
    dest = destination(clock, server=braze.server, mode="update")
    dest.send(users_batch("a", "b"))
    second = outcomes(dest.send(users_batch("a", "b", "c")))
    asked = [c["external_ids"] for c in braze.calls("/users/export/ids")]
    assert asked == [["a", "b"], ["c"]]          # "a" is known to exist, "b" known not to (until the next run)
    assert [o for _, o, _ in second] == [ACKNOWLEDGED, WAITING, WAITING]


def test_lookups_take_fifty_ids_a_request(clock: FakeClock, braze: Braze) -> None:
    ids = [f"u{i:03d}" for i in range(120)]
    braze.known = set(ids)
    dest = destination(clock, server=braze.server, mode="update")
    for start in range(0, 120, 75):
        assert all(o == ACKNOWLEDGED for _, o, _ in outcomes(dest.send(users_batch(*ids[start:start + 75]))))
    assert [len(c["external_ids"]) for c in braze.calls("/users/export/ids")] == [50, 25, 45]


@pytest.mark.parametrize("answer", [
    {"status": 200, "body": "<html>Sign in to the hotel wifi</html>", "headers": {"Content-Type": "text/html"}},
    reply(200, {"ok": True}),
    reply(200, {"message": "success", "users": "nobody"}),
])
def test_an_answer_that_is_not_brazes_sends_nothing(clock: FakeClock, braze: Braze, answer: dict[str, Any]) -> None:
    braze.export = answer
    dest = destination(clock, server=braze.server, mode="update", max_retries=0)
    results = outcomes(dest.send(users_batch("a", "b")))
    # Braze was not asked, so nothing is known of these users: undelivered (exit 3), not waiting
    assert all(o == NOT_ATTEMPTED and "looking up the user's profile failed: unexpected answer" in r
               for _, o, r in results), results
    assert braze.calls("/users/track") == []


def test_a_key_without_users_export_ids_is_named(clock: FakeClock, braze: Braze) -> None:
    braze.export = reply(403, {"message": "Access Denied"})
    dest = destination(clock, server=braze.server, mode="update")
    with pytest.raises(DestinationError) as raised:
        dest.send(users_batch("a"))
    assert "users.export.ids" in raised.value.message and "missing_users: skip" in raised.value.message


def test_alias_events_without_users_export_ids_are_not_told_to_skip(clock: FakeClock, braze: Braze) -> None:
    braze.export = reply(403, {"message": "Access Denied"})
    dest = destination(clock, "events", server=braze.server, identifier=ALIAS, event=EVENT)
    with pytest.raises(DestinationError) as raised:
        dest.send(alias_batch("x"))
    assert "users.export.ids" in raised.value.message and "missing_users" not in raised.value.message


def test_a_profile_braze_refuses_to_create_rejects_its_rows(clock: FakeClock, braze: Braze) -> None:
    dest = destination(clock, "events", server=braze.server, identifier=ALIAS, event=EVENT)
    inner = braze.answer

    def refuse_y(call: Call) -> dict[str, Any]:
        body = call.json()
        attrs = body.get("attributes") or []
        bad = [i for i, o in enumerate(attrs) if o["user_alias"]["alias_name"] == "y"]
        if bad:
            inner(call)
            return reply(201, {"message": "success", "attributes_processed": len(attrs) - 1, "errors": [
                {"type": "alias_name is blacklisted", "input_array": "attributes", "index": bad[0]}]})
        return inner(call)

    braze.server.script = [refuse_y]
    results = outcomes(dest.send(alias_batch("x", "y")))
    assert results[0][1] == ACKNOWLEDGED
    assert results[1][1] == REJECTED and "alias_name is blacklisted" in results[1][2]


def alias_batch(*names: str) -> Batch:
    return Batch(CREATE, names, tuple(json.dumps({"user_alias": {"alias_name": n, "alias_label": "crm"},
                                                  "name": "order_placed", "time": "2026-01-01T00:00:00Z"})
                                      for n in names))


def test_alias_events_create_the_profile_then_wait_until_braze_shows_it(clock: FakeClock, braze: Braze) -> None:
    dest = destination(clock, "events", server=braze.server, identifier=ALIAS, event=EVENT)
    lookups = {"n": 0}
    inner = braze.answer

    def slow_visibility(call: Call) -> dict[str, Any]:     # the profile shows on the third look
        if call.path == "/users/export/ids":
            lookups["n"] += 1
            if lookups["n"] < 3:
                return reply(200, {"message": "success", "users": []})
        return inner(call)

    braze.server.script = [slow_visibility]
    results = outcomes(dest.send(alias_batch("x", "y", "x")))
    assert [o for _, o, _ in results] == [ACKNOWLEDGED] * 3
    paths = [c.path for c in braze.server.calls]
    assert paths == ["/users/track", "/users/export/ids", "/users/export/ids", "/users/export/ids", "/users/track"]
    created = braze.server.calls[0].json()["attributes"]
    assert created == [{"user_alias": {"alias_label": "crm", "alias_name": "x"}, "_update_existing_only": False},
                       {"user_alias": {"alias_label": "crm", "alias_name": "y"}, "_update_existing_only": False}]
    assert len(braze.server.calls[-1].json()["events"]) == 3


def test_a_created_profile_braze_never_shows_waits_for_the_next_run(clock: FakeClock, braze: Braze) -> None:
    dest = destination(clock, "events", server=braze.server, identifier=ALIAS, event=EVENT)
    inner = braze.answer
    braze.server.script = [lambda call: reply(200, {"message": "success", "users": []})
                           if call.path == "/users/export/ids" else inner(call)]
    results = outcomes(dest.send(alias_batch("x")))
    assert results[0][1] == WAITING and "not visible in Braze yet" in results[0][2]
    assert sum(clock.sleeps) <= dest.connection.profile_wait + 5
    assert [c.path for c in braze.server.calls].count("/users/track") == 1     # the creation only


def test_a_run_stopping_while_it_waits_for_profiles_sends_nothing_more(clock: FakeClock, braze: Braze) -> None:
    """Ctrl-C while Braze does not show a just-created profile yet: the rows are not sent (not waiting:
    nothing was learnt of their users), and the wait ends at once."""
    import threading

    from engine.destinations.braze.destination import BrazeDestination
    from engine.project import ConnectionConfig
    from engine.specs import DestinationSpec, SyncSpec

    stop = threading.Event()
    inner = braze.answer

    def stop_on_lookup(call: Call) -> dict[str, Any]:
        if call.path == "/users/export/ids":
            stop.set()
            return reply(200, {"message": "success", "users": []})
        return inner(call)

    braze.server.script = [stop_on_lookup]
    conn = ConnectionConfig("braze", endpoint=braze.server.url, max_retries=0, timeout=0.5)
    sync = SyncSpec("s", "m", ("id",), DestinationSpec("braze", "events", identifier=ALIAS, event=EVENT))
    dest = BrazeDestination(conn, "sk-test", sync, client_options={
        "stop": stop, "sleep": clock.sleep, "monotonic": clock.monotonic, "clock": clock.time})
    OPENED.append(dest)
    results = outcomes(dest.send(alias_batch("x")))
    assert results == [("x", NOT_ATTEMPTED, "stopped before sending")]
    assert [c.path for c in braze.server.calls] == ["/users/track", "/users/export/ids"]
