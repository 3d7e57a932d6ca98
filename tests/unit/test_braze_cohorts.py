"""Cohort payloads (both methods), their channels and the partner cohort import's answers, without a network."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from engine.destinations.base import (
    ACKNOWLEDGED,
    ADDED,
    CHANGED,
    NOT_ATTEMPTED,
    REMOVED,
    Batch,
    Invalid,
    Item,
    PlanRow,
    RowResult,
    Skip,
)
from engine.destinations.braze.client import FATAL, OK, RETRY, ROW_ERRORS, SPLIT, sort_response
from engine.destinations.braze.destination import make_destination
from engine.destinations.braze.endpoints import COHORT_GROUP, COHORT_LIMIT, channel_info
from engine.destinations.braze.payloads import build_payloads
from engine.errors import SpecError
from engine.project import CohortImport, ConnectionConfig
from engine.specs import CohortSpec, DestinationSpec, Identifier, MissingUsers, SyncSpec

JSON = {"content-type": "application/json"}


def cohort_sync(method: str = "attribute", ident: Identifier | None = None, **cohort: Any) -> SyncSpec:
    cohort.setdefault("id", None if "id_column" in cohort else "vip")
    if method == "attribute":
        cohort.setdefault("attribute", "warehouse_cohorts")
    ident = ident or Identifier("external_id", "external_id")
    key = (ident.column, *([cohort["id_column"]] if cohort.get("id_column") else []))
    return SyncSpec("s", "m", key, DestinationSpec("braze", "cohorts", identifier=ident,
                                                   cohort=CohortSpec(method, **cohort)))


def payloads(sync: SyncSpec, partner: str = "acme") -> Any:
    built = build_payloads(sync)
    built.partner = partner
    return built


def test_attribute_method_adds_and_removes_the_cohort_id_update_only() -> None:
    p = payloads(cohort_sync())
    entered = p.prepare(PlanRow("1", ADDED, {"external_id": "u1"}))
    left = p.prepare(PlanRow("2", REMOVED, {"external_id": "u2"}))
    # entering members wait for their user's profile (missing_users: wait, the default): Braze drops an
    # update-only object of a user it lacks while answering success; leaving needs no check
    assert entered == Item("POST /users/track attributes check:external_id",
                           '{"external_id":"u1","_update_existing_only":true,"warehouse_cohorts":{"add":["vip"]}}', 1)
    assert isinstance(left, Item) and json.loads(left.item_json)["warehouse_cohorts"] == {"remove": ["vip"]}
    assert left.data_points == 1 and left.channel == "POST /users/track attributes"
    base = cohort_sync()
    skip = SyncSpec("s", "m", base.primary_key, dataclasses.replace(base.destination, missing_users=MissingUsers.SKIP))
    assert payloads(skip).prepare(PlanRow("1", ADDED, {"external_id": "u1"})).channel == "POST /users/track attributes"
    assert isinstance(p.prepare(PlanRow("3", CHANGED, {"external_id": "u3"}, changed=())), Skip)


def test_partner_method_channels_carry_the_cohort_and_its_name() -> None:
    p = payloads(cohort_sync("partner", ident=Identifier("user_alias", "external_id", "crm"), name="V I P"))
    entered = p.prepare(PlanRow("1", ADDED, {"external_id": "a1", "cohort_name": "V I P"}))
    left = p.prepare(PlanRow("2", REMOVED, {"external_id": "a2", "cohort_name": "V I P"}))
    assert isinstance(entered, Item) and isinstance(left, Item)
    assert entered.channel == "POST /partners/acme/cohorts/users vip aliases add V%20I%20P"
    assert json.loads(entered.item_json) == {"alias_name": "a1", "alias_label": "crm"} and entered.data_points == 1
    info = channel_info(entered.channel)
    assert (info.limit, info.group, info.body_auth, info.cohort, info.cohort_name) == (
        COHORT_LIMIT, COHORT_GROUP, True, "vip", "V I P")
    body = info.prefix + entered.item_json + info.suffix
    assert json.loads(body) == {"cohort_id": "vip", "cohort_changes": [{"aliases": [{"alias_name": "a1",
                                                                                      "alias_label": "crm"}]}]}
    out = channel_info(left.channel)
    assert json.loads(out.prefix + '"x"' + out.suffix)["cohort_changes"] == [{"aliases": ["x"], "should_remove": True}]


def test_every_member_row_of_a_renamed_partner_cohort_waits_on_its_rename() -> None:
    """Each row whose recorded name is another goes on its cohort's rename channel: none records the new
    name before Braze has it (one rename request per apply serves them all: the destination's test)."""
    p = payloads(cohort_sync("partner", id=None, id_column="tier", name_column="tier_name"))
    rows = [PlanRow(str(i), CHANGED, {"external_id": f"u{i}", "cohort_id": tier, "cohort_name": f"{tier}!"},
                    changed=("cohort_name",)) for i, tier in enumerate(["gold", "gold", "silver"])]
    results = [p.prepare(r) for r in rows]
    assert all(isinstance(r, Item) for r in results)
    assert [r.channel for r in results] == ["POST /partners/acme/cohorts gold"] * 2 + [
        "POST /partners/acme/cohorts silver"]
    assert [json.loads(r.item_json) for r in results] == [{"cohort_id": "gold", "name": "gold!"}] * 2 + [
        {"cohort_id": "silver", "name": "silver!"}]
    assert channel_info(results[0].channel).limit == COHORT_LIMIT


def test_bad_cohort_ids_and_identifiers_are_invalid_rows() -> None:
    p = payloads(cohort_sync("partner", id=None, id_column="tier"))
    assert isinstance(p.prepare(PlanRow("1", ADDED, {"external_id": "u", "cohort_id": "has space"})), Invalid)
    assert isinstance(p.prepare(PlanRow("2", ADDED, {"external_id": None, "cohort_id": "ok"})), Invalid)


@pytest.mark.parametrize(("sync", "path"), [
    (cohort_sync(attribute="external_id"), "destination.attribute"),
    (cohort_sync(attribute="$bad"), "destination.attribute"),
    (cohort_sync(id="no spaces please"), "destination.cohort.id"),
    (cohort_sync(ident=Identifier("email", "e")), "destination.identifier"),
])
def test_spec_problems_are_located(sync: SyncSpec, path: str) -> None:
    with pytest.raises(SpecError) as found:
        build_payloads(sync)
    assert [p.path for p in found.value.problems] == [path]


INFO = channel_info("POST /partners/acme/cohorts/users vip user_ids add vip")


@pytest.mark.parametrize(("status", "body", "kind"), [
    (201, {"message": "success"}, OK),
    (400, {"message": "Only 1,000 user_ids, device_ids, and aliases are allowed per request"}, SPLIT),
    (400, {"message": "cohort_id must be a valid string"}, ROW_ERRORS),
    (401, {"message": "Invalid Partner API key"}, FATAL),
    (401, {"message": "Invalid client secret"}, FATAL),
    (423, {"message": "Resource locked"}, RETRY),
    (429, {"message": "Rate limited"}, "rate_limited"),
    (503, {"message": "Service Unavailable"}, RETRY),
])
def test_partner_answers_are_sorted(status: int, body: dict[str, Any], kind: str) -> None:
    verdict = sort_response(status, JSON, json.dumps(body).encode(), INFO, sent=3, connection="braze",
                            base_url="https://rest.iad-01.braze.com", now=0.0)
    assert verdict.kind == kind
    if kind == ROW_ERRORS:
        assert [e.index for e in verdict.errors] == [0, 1, 2]       # about the request: every row refused
    if status == 423:
        assert verdict.uncertain is None                            # locked: never applied
    if status == 401:
        assert "cohort_import.partner_api_key" in verdict.message and "partner 'acme'" in verdict.message



def test_a_member_column_named_otherwise_than_its_identifier_is_planned() -> None:
    """A member column `customer_id` (the field `external_id` in the projected spec the payload rules read)
    is planned and sent (the member-in-key rule is the spec's: tests/unit/test_specs.py)."""
    sync = SyncSpec("s", "m", ("customer_id", "tier"), DestinationSpec(
        "braze", "cohorts", identifier=Identifier("external_id", "customer_id"),
        cohort=CohortSpec("attribute", id=None, id_column="tier", attribute="warehouse_cohorts")))
    dest = make_destination(ConnectionConfig(name="braze", endpoint="http://127.0.0.1:9"), None, sync)
    found = dest.project(["customer_id", "tier"])
    assert found.identity == ("external_id", "cohort_id")
    result = dest.prepare(PlanRow("1", ADDED, {"external_id": "u1", "cohort_id": "gold"}))
    assert isinstance(result, Item) and json.loads(result.item_json)["warehouse_cohorts"] == {"add": ["gold"]}


@pytest.mark.parametrize("attribute", ["external_id", "email", "country", "dob", "push_subscribe", "first_name",
                                       "subscription_groups"])
def test_a_cohort_attribute_must_be_a_custom_attribute(attribute: str) -> None:
    """Braze's standard fields have their own values: {"add": [...]} to `email` is refused row by row."""
    with pytest.raises(SpecError) as err:
        build_payloads(cohort_sync(attribute=attribute))
    assert any(p.path == "destination.attribute" and "custom attribute" in p.message for p in err.value.problems)


def test_another_partner_name_is_another_destination() -> None:
    """Partner cohorts live under /partners/{partner}/: a new partner name starts the sync again."""
    sync = cohort_sync("partner", name="VIP")

    def identity(partner: str) -> dict[str, str]:
        conn = ConnectionConfig(name="braze", endpoint="http://127.0.0.1:9",
                                cohort_import=CohortImport(partner=partner))
        return dict(make_destination(conn, None, sync).identity())

    assert identity("acme")["cohort partner"] == "acme"
    assert identity("acme") != identity("other")


class FakeClient:
    """Answers each request with the next outcome (ACKNOWLEDGED or a RowResult-like failure), and records it."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, list[str]]] = []

    def send(self, info: Any, keys: list[str], items: list[str]) -> list[RowResult]:
        self.sent.append((info.path, [json.loads(i)["name"] for i in items]))
        answer = self.answers.pop(0)
        return [RowResult(k, ACKNOWLEDGED) if answer == "ok" else RowResult(k, NOT_ATTEMPTED, answer) for k in keys]


def partner_destination(client: FakeClient) -> Any:
    conn = ConnectionConfig(name="braze", endpoint="http://127.0.0.1:9", cohort_import=CohortImport(partner="acme"))
    dest = make_destination(conn, None, cohort_sync("partner", id=None, id_column="tier", name_column="tier_name"))
    dest.project(["external_id", "tier", "tier_name"])
    dest._client = client
    return dest


def test_a_rename_batch_is_one_request_and_its_answer_is_every_row_s() -> None:
    """The rename channel's rows (every member whose recorded name is another) share one request per apply:
    acknowledged together, refused together (none records a name Braze does not hold)."""
    rows = [(str(i), json.dumps({"cohort_id": "gold", "name": "Gold!"})) for i in range(2500)]
    dest = partner_destination(FakeClient("Braze answered 423", "ok"))
    channel = "POST /partners/acme/cohorts gold"
    batches = list(dest.batches(channel, rows))
    assert len(batches) == 3
    first = dest.send(batches[0])
    assert {r.outcome for r in first} == {NOT_ATTEMPTED} and len(first) == 1000
    assert {r.reason for r in first} == {"Braze answered 423"}
    assert all(r.outcome == ACKNOWLEDGED for b in batches[1:] for r in dest.send(b))
    assert dest._client.sent == [("/partners/acme/cohorts", ["Gold!"])] * 2     # one try, then one success
    assert dest.estimate({channel: (2500, 0), "POST /partners/acme/cohorts/users gold user_ids add Gold%21": (
        10, 10)}).requests == {"POST /partners/acme/cohorts": 1, "POST /partners/acme/cohorts/users": 1}


def test_rows_naming_their_cohort_otherwise_in_one_batch_are_answered_by_their_own_name() -> None:
    dest = partner_destination(FakeClient("ok", "Braze answered 400 (name)"))
    items = [json.dumps({"cohort_id": "gold", "name": n}) for n in ("Gold", "Gold", "")]
    results = dest.send(Batch("POST /partners/acme/cohorts gold", ("a", "b", "c"), tuple(items)))
    assert [r.outcome for r in results] == [ACKNOWLEDGED, ACKNOWLEDGED, NOT_ATTEMPTED]


def test_a_constant_cohort_turned_cohort_column_is_not_advised_to_be_emptied() -> None:
    """The old cohort may be one of the new ones: emptying it would empty what the new spec fills."""
    old = {"object": "cohorts", "cohort": "high_value", "cohort method": "partner", "cohort partner": "acme"}
    conn = ConnectionConfig(name="braze", endpoint="http://127.0.0.1:9", cohort_import=CohortImport(partner="acme"))
    column = make_destination(conn, None, cohort_sync("partner", id=None, id_column="tier"))
    note = column.left_behind(old, 59) or ""
    assert "59 membership(s)" in note and "if tier gives the id high_value too" in note and "do not empty it" in note
    constant = make_destination(conn, None, cohort_sync("partner", id="other", name="Other"))
    assert "do not empty it" not in (constant.left_behind(old, 59) or "")
