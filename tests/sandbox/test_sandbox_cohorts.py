"""The sandbox's partner cohort import (braze-api.md §7): body auth, the documented 400/401/423 texts,
membership per cohort (never creating users) and /_sandbox/cohorts inspection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from engine.sandbox import cohorts
from engine.sandbox.testing import SandboxHandle, running_sandbox

AUTH = {"partner_api_key": "pk", "client_secret": "sk"}


@pytest.fixture
def braze() -> Iterator[SandboxHandle]:
    with running_sandbox(partner_api_key="pk", data_import_key="sk", cohort_partners="acme") as sandbox:
        r = requests.post(f"{sandbox.url}/users/track", headers=sandbox.headers, timeout=10, json={"attributes": [
            {"external_id": "u1", "first_name": "A"}, {"external_id": "u2", "first_name": "B"},
            {"user_alias": {"alias_name": "a3", "alias_label": "crm"}, "_update_existing_only": False, "x": 1}]})
        assert r.status_code == 201, r.text
        yield sandbox


def post(braze: SandboxHandle, path: str, body: dict[str, Any], partner: str = "acme") -> requests.Response:
    return requests.post(f"{braze.url}/partners/{partner}{path}", json=body, timeout=10)


def members(braze: SandboxHandle, cohort: str) -> list[str | None]:
    found = requests.get(f"{braze.url}/_sandbox/cohorts/{cohort}", timeout=10).json()["members"]
    return sorted(m["external_id"] or m["user_aliases"][0]["alias_name"] for m in found)


def test_create_then_members_enter_and_leave(braze: SandboxHandle) -> None:
    r = post(braze, "/cohorts", {**AUTH, "cohort_id": "vip", "name": "VIP", "created_at": "2026-01-01T00:00:00Z"})
    assert (r.status_code, r.json()) == (201, {"message": "success"})
    r = post(braze, "/cohorts/users", {**AUTH, "cohort_id": "vip", "cohort_changes": [
        {"user_ids": ["u1", "u2", "nobody"]}, {"aliases": [{"alias_name": "a3", "alias_label": "crm"}]}]})
    assert r.status_code == 201, r.text
    assert members(braze, "vip") == ["a3", "u1", "u2"]          # "nobody" has no profile: not created
    assert braze.user("nobody") is None
    r = post(braze, "/cohorts/users", {**AUTH, "cohort_id": "vip",
                                       "cohort_changes": [{"user_ids": ["u2"], "should_remove": True}]})
    assert r.status_code == 201 and members(braze, "vip") == ["a3", "u1"]
    listed = requests.get(f"{braze.url}/_sandbox/cohorts", timeout=10).json()["cohorts"]
    assert listed == [{"cohort_id": "vip", "partner": "acme", "name": "VIP", "members": 2}]


@pytest.mark.parametrize(("path", "body", "status", "text"), [
    ("/cohorts", {"partner_api_key": "no", "client_secret": "sk", "cohort_id": "c", "name": "n",
                  "created_at": "2026-01-01T00:00:00Z"}, 401, "Invalid Partner API key"),
    ("/cohorts", {"partner_api_key": "pk", "client_secret": "no", "cohort_id": "c", "name": "n",
                  "created_at": "2026-01-01T00:00:00Z"}, 401, "Invalid client secret"),
    ("/cohorts", {**AUTH, "cohort_id": 7, "name": "n", "created_at": "2026-01-01T00:00:00Z"}, 400,
     cohorts.BAD_COHORT_ID),
    ("/cohorts", {**AUTH, "cohort_id": "c", "name": " ", "created_at": "2026-01-01T00:00:00Z"}, 400, cohorts.BAD_NAME),
    ("/cohorts", {**AUTH, "cohort_id": "c", "name": "n", "created_at": "yesterday"}, 400, cohorts.BAD_CREATED_AT),
    ("/cohorts/users", {**AUTH, "cohort_id": "c", "cohort_changes": [{"user_ids": "u1"}]}, 400, cohorts.BAD_CHANGES),
    ("/cohorts/users", {**AUTH, "cohort_id": "c", "cohort_changes": [{"nope": ["u1"]}]}, 400, cohorts.BAD_CHANGES),
    ("/cohorts/users", {**AUTH, "cohort_id": "c", "cohort_changes": [{"user_ids": [f"u{i}" for i in range(1001)]}]},
     400, cohorts.TOO_MANY),
])
def test_documented_errors(braze: SandboxHandle, path: str, body: dict[str, Any], status: int, text: str) -> None:
    r = post(braze, path, body)
    assert (r.status_code, r.json()["message"]) == (status, text)


def test_a_partner_not_enabled_and_no_header_auth(braze: SandboxHandle) -> None:
    r = post(braze, "/cohorts", {**AUTH, "cohort_id": "c", "name": "n", "created_at": "2026-01-01T00:00:00Z"},
             partner="other")
    assert r.status_code == 401 and r.json()["message"].startswith("Partner not enabled for client")
    # the REST API key in a header does not authenticate a partner request
    r = requests.post(f"{braze.url}/partners/acme/cohorts", headers=braze.headers, timeout=10,
                      json={"cohort_id": "c", "name": "n", "created_at": "2026-01-01T00:00:00Z"})
    assert r.status_code == 401


def test_423_on_demand(braze: SandboxHandle) -> None:
    requests.post(f"{braze.url}/_sandbox/cohorts/lock?count=1", timeout=10)
    body = {**AUTH, "cohort_id": "c", "cohort_changes": [{"user_ids": ["u1"]}]}
    first, second = post(braze, "/cohorts/users", body), post(braze, "/cohorts/users", body)
    assert (first.status_code, first.json()["message"]) == (423, "Resource locked")
    assert second.status_code == 201 and members(braze, "c") == ["u1"]


def test_array_attribute_add_and_remove_as_braze_applies_them(braze: SandboxHandle) -> None:
    def track(op: dict[str, Any]) -> None:
        r = requests.post(f"{braze.url}/users/track", headers=braze.headers, timeout=10,
                          json={"attributes": [{"external_id": "u1", "_update_existing_only": True, "c": op}]})
        assert r.status_code == 201, r.text

    track({"add": ["a", "b"]})
    track({"add": ["a"]})                   # an existing value moves to the end
    track({"remove": ["b"], "add": ["c"]})
    assert braze.user("u1")["custom_attributes"]["c"] == ["a", "c"]
    r = requests.post(f"{braze.url}/users/track", headers=braze.headers, timeout=10,
                      json={"attributes": [{"external_id": "u1", "c": {"add": "a"}}]})
    assert r.status_code == 400 or r.json().get("errors"), r.text


def test_each_partner_has_its_own_cohorts() -> None:
    """As under Braze's /partners/{partner}/: one cohort id under two partners is two cohorts."""
    with running_sandbox(partner_api_key="pk", data_import_key="sk", cohort_partners="acme,other") as braze:
        r = requests.post(f"{braze.url}/users/track", headers=braze.headers, timeout=10,
                          json={"attributes": [{"external_id": "u1", "first_name": "A"}]})
        assert r.status_code == 201, r.text
        for partner in ("acme", "other"):
            r = post(braze, "/cohorts", {**AUTH, "cohort_id": "vip", "name": partner.upper(),
                                         "created_at": "2026-01-01T00:00:00Z"}, partner=partner)
            assert r.status_code == 201, r.text
        r = post(braze, "/cohorts/users", {**AUTH, "cohort_id": "vip", "cohort_changes": [{"user_ids": ["u1"]}]})
        assert r.status_code == 201, r.text
        listed = requests.get(f"{braze.url}/_sandbox/cohorts", timeout=10).json()["cohorts"]
        assert [(c["partner"], c["name"], c["members"]) for c in listed] == [("acme", "ACME", 1), ("other", "OTHER", 0)]
        r = requests.get(f"{braze.url}/_sandbox/cohorts/vip", timeout=10)
        assert r.status_code == 400 and "pass ?partner=" in r.text
        r = requests.get(f"{braze.url}/_sandbox/cohorts/vip?partner=other", timeout=10)
        assert r.json()["name"] == "OTHER" and r.json()["members"] == []
