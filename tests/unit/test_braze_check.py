"""`reflow check`'s pieces without a network: what each object needs, and how probe answers are read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.destinations.braze.check import (
    MISSING,
    NOT_CHECKED,
    NOT_NEEDED,
    OK,
    Need,
    needs,
    probe_connection,
    project_needs,
)
from engine.destinations.braze.transport import Answer, TransportBroken
from engine.specs import CohortSpec, DestinationSpec, Identifier, SubscriptionSpec, SyncSpec

ID = Identifier("external_id", "id")


def sync(obj: str, name: str = "s", raw: dict[str, Any] | None = None, **dest: Any) -> SyncSpec:
    if obj != "catalog_items":
        dest.setdefault("identifier", ID)
    return SyncSpec(name, "m", ("id",), DestinationSpec("braze", obj, **dest), raw=raw or {})


@pytest.mark.parametrize(("spec", "permissions"), [
    (sync("users"), ["users.track"]),
    (sync("users", on_removed="unset"), ["users.track"]),
    (sync("users", on_removed="delete"), ["users.track", "users.delete"]),
    (sync("events"), ["users.track"]),
    (sync("purchases"), ["users.track"]),
    (sync("catalog_items", catalog="products", item_id="id"), ["catalogs.replace_items", "catalogs.update_items"]),
    (sync("catalog_items", catalog="products", item_id="id", on_removed="delete"),
     ["catalogs.replace_items", "catalogs.update_items", "catalogs.delete_items"]),
    (sync("subscription_groups", subscription=SubscriptionSpec("s", group_id="g")), ["users.track"]),
    (sync("user_deletes"), ["users.delete"]),
    # entering members wait for their user (missing_users: wait): Braze is asked which users exist
    (sync("cohorts", cohort=CohortSpec("attribute", id="vip", attribute="cohorts")), ["users.track", "users.export.ids"]),
    (sync("cohorts", cohort=CohortSpec("partner", id="vip")), []),     # body auth: no API key permission
    # update-only rows are looked up first (missing_users: wait, the default); alias events create profiles
    (sync("users", mode="update"), ["users.track", "users.export.ids"]),
    (sync("events", mode="update"), ["users.track", "users.export.ids"]),
    (sync("purchases", identifier=Identifier("braze_id", "bid")), ["users.track", "users.export.ids"]),
    (sync("events", identifier=Identifier("user_alias", "a", "crm")), ["users.track", "users.export.ids"]),
    (sync("users", mode="update", missing_users="skip"), ["users.track"]),
    (sync("users", identifier=Identifier("user_alias", "a", "crm")), ["users.track"]),
])
def test_what_each_object_needs(spec: SyncSpec, permissions: list[str]) -> None:
    assert [p for p, _ in needs(spec)] == permissions


def test_needs_are_merged_per_connection() -> None:
    syncs = [sync("users", "people"), sync("events", "orders"), sync("user_deletes", "gdpr"),
             sync("catalog_items", "a", catalog="shops", item_id="id"),
             sync("catalog_items", "b", catalog="products", item_id="id"),
             SyncSpec("other", "m", ("id",), DestinationSpec("eu", "users", identifier=ID))]
    assert [(n.permission, n.endpoint, n.syncs) for n in project_needs(syncs, "braze")] == [
        ("users.track", "POST /users/track", ("people", "orders")),
        ("users.delete", "POST /users/delete", ("gdpr",)),
        ("catalogs.replace_items", "PUT /catalogs/products/items", ("b",)),
        ("catalogs.replace_items", "PUT /catalogs/shops/items", ("a",)),
        ("catalogs.update_items", "PATCH /catalogs/products/items", ("b",)),
        ("catalogs.update_items", "PATCH /catalogs/shops/items", ("a",)),
    ]


class Headers(dict[str, str]):
    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


def answer(status: int, body: Any, content_type: str = "application/json") -> Answer:
    text = body if isinstance(body, str) else json.dumps(body)
    return Answer(status, Headers({"content-type": content_type}), text.encode())


TRACK = Need("users.track", "POST", "/users/track", ("people",))
DELETE = Need("users.delete", "POST", "/users/delete", ("gdpr",))
PUT = Need("catalogs.replace_items", "PUT", "/catalogs/products/items", ("catalog",), catalog="products")


def checked(answers: dict[str, Any], wanted: list[Need]) -> Any:
    sent: list[tuple[str, str, bytes | None]] = []

    def probe(method: str, path: str, body: bytes | None) -> Answer:
        sent.append((method, path, body))
        found = answers[f"{method} {path}"]
        if isinstance(found, Exception):
            raise found
        return found  # type: ignore[no-any-return]

    result = probe_connection("braze", "https://rest.iad-01.braze.com", wanted, probe)
    assert all(body == b"{}" for _, _, body in sent)           # every probe is an empty object
    return result, [f"{m} {p}" for m, p, _ in sent]


def results(check: Any) -> dict[str, str]:
    return {p.permission: p.result for p in check.permissions}


def test_granted_missing_and_not_needed() -> None:
    check, sent = checked({"POST /users/track": answer(400, {"message": "Valid data must be provided"}),
                           "POST /users/delete": answer(403, {"message": "Access Denied"})}, [TRACK, DELETE])
    assert sent == ["POST /users/track", "POST /users/delete"]
    assert check.key == "accepted" and not check.ok
    assert results(check) == {"users.track": OK, "users.delete": MISSING, "catalogs.replace_items": NOT_NEEDED, "catalogs.update_items": NOT_NEEDED,
                              "catalogs.delete_items": NOT_NEEDED, "users.export.ids": NOT_NEEDED}


def test_the_key_is_probed_even_when_no_sync_needs_users_track() -> None:
    check, sent = checked({"POST /users/track": answer(403, {"message": "Access Denied"}),
                           "POST /users/delete": answer(201, {"deleted": 0, "message": "success"})}, [DELETE])
    assert sent == ["POST /users/track", "POST /users/delete"]
    assert check.key == "accepted" and check.ok
    assert results(check)["users.track"] == NOT_NEEDED


def test_401_everywhere_is_a_refused_key_but_401_beside_accepted_probes_is_a_missing_permission() -> None:
    refused, _ = checked({"POST /users/track": answer(401, {"message": "Invalid API key"}),
                          "POST /users/delete": answer(401, {"message": "Invalid API key"})}, [TRACK, DELETE])
    assert refused.key == "refused (401)"
    assert {p.result for p in refused.permissions if p.endpoint} == {NOT_CHECKED}
    mixed, _ = checked({"POST /users/track": answer(400, {"message": "x"}),
                        "POST /users/delete": answer(401, {"message": "Unauthorized"})}, [TRACK, DELETE])
    assert mixed.key == "accepted" and results(mixed)["users.delete"] == MISSING


def test_a_missing_catalog_is_a_problem_not_a_missing_permission() -> None:
    check, _ = checked({"POST /users/track": answer(400, {"message": "x"}),
                        "PUT /catalogs/products/items": answer(404, {"message": "Invalid Request", "errors": [
                            {"id": "catalog-not-found", "message": "Could not find catalog"}]})}, [PUT])
    assert results(check)["catalogs.replace_items"] == OK
    assert check.problems == ("catalog 'products' does not exist in this workspace; create it in Braze before "
                              "syncing catalog",)


def test_answers_that_are_not_braze_s_prove_nothing() -> None:
    check, _ = checked({"POST /users/track": answer(200, "<html><title>Log in</title></html>", "text/html")},
                       [TRACK])
    assert check.key == "not checked" and not check.ok
    assert check.problems == ("unexpected answer from rest.iad-01.braze.com: 200 text/html, not Braze's",)


def test_no_answer_stops_the_probes_and_names_the_host() -> None:
    down = TransportBroken("cannot connect to rest.iad-01.braze.com:443: connection refused", sent=False)
    check, sent = checked({"POST /users/track": down}, [TRACK, DELETE])
    assert sent == ["POST /users/track"]                        # one attempt: no waiting on every probe
    assert check.key == "not checked"
    assert check.problems == ("cannot connect to rest.iad-01.braze.com:443: connection refused",)


def test_rate_limited_and_5xx_probes_are_not_checked() -> None:
    check, _ = checked({"POST /users/track": answer(400, {"message": "x"}),
                        "POST /users/delete": answer(429, {"message": "Rate limit exceeded"}),
                        "PUT /catalogs/products/items": answer(503, {"message": "Service Unavailable"})},
                       [TRACK, DELETE, PUT])
    found = {p.permission: (p.result, p.detail) for p in check.permissions}
    assert found["users.delete"] == (NOT_CHECKED, "rate limited (429): run reflow check again in a minute")
    assert found["catalogs.replace_items"] == (NOT_CHECKED, "Braze answered 503: Service Unavailable")
    assert not check.ok
