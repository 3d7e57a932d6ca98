"""Contract: what BrazeDestination prepares and sends is accepted by the local sandbox (127.0.0.1),
the sandbox bills exactly the data points prepare() estimated, and fatal answers become DestinationError."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from engine.destinations.base import ACKNOWLEDGED, REJECTED, Invalid, Item, PlanRow, RowResult
from engine.destinations.braze.destination import BrazeDestination
from engine.errors import DestinationError
from engine.project import ConnectionConfig
from engine.sandbox.testing import SandboxHandle, running_sandbox
from engine.specs import DestinationSpec, EventSpec, Identifier, PurchaseSpec, SubscriptionSpec, SyncSpec

GROUP = "8c4b1f6e-0a3b-4c5d-9e8f-112233445566"


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox() as handle:
        yield handle


def destination(sandbox: SandboxHandle, obj: str = "users", key: str | None = None, **dest: Any) -> BrazeDestination:
    dest.setdefault("identifier", Identifier("external_id", "id") if obj != "catalog_items" else None)
    sync = SyncSpec("s", "m", ("id",), DestinationSpec("sandbox", obj, **dest))
    conn = ConnectionConfig("sandbox", endpoint=sandbox.url, max_retries=2, timeout=10)
    return BrazeDestination(conn, key or sandbox.api_key, sync,
                            client_options={"sleep": lambda s: None, "backoff_base": 0.0})


def apply(dest: BrazeDestination, rows: list[PlanRow]) -> tuple[list[RowResult], int, list[str]]:
    """prepare → batches → send, as the runner does; returns results, data points, invalid reasons."""
    by_channel: dict[str, list[tuple[str, str]]] = {}
    points = 0
    invalid = []
    for row in rows:
        got = dest.prepare(row)
        if isinstance(got, Item):
            by_channel.setdefault(got.channel, []).append((row.key, got.item_json))
            points += got.data_points
        elif isinstance(got, Invalid):
            invalid.append(got.reason)
    results: list[RowResult] = []
    for channel, items in by_channel.items():
        for batch in dest.batches(channel, items):
            results.extend(dest.send(batch))
    return results, points, invalid


def test_users_upsert_change_unset_and_delete(sandbox: SandboxHandle) -> None:
    dest = destination(sandbox, on_removed="delete")
    rows = [PlanRow(f"c_{i}", "added", {"id": f"c_{i}", "first_name": "Ada", "country": "GB", "tier": i,
                                        "prefs": {"news": True, "topics": {"a": 1}}, "tags": ["x", "y"]})
            for i in range(80)]
    rows.append(PlanRow("bad", "added", {"id": "bad", "email": "nope"}))
    results, points, invalid = apply(dest, rows)
    assert invalid == ["email: 'nope' is not a valid email address"]
    assert [r.outcome for r in results] == [ACKNOWLEDGED] * 80
    assert sandbox.stats()["data_points"] == points == 80 * 7
    profile = sandbox.user("c_3")
    assert profile is not None and profile["first_name"] == "Ada"

    old = rows[3].values
    new = dict(old, first_name=None, tier=99)
    results, points, _ = apply(dest, [PlanRow("c_3", "changed", new, old, ("first_name", "tier"))])
    assert results[0].outcome == ACKNOWLEDGED
    profile = sandbox.user("c_3")
    assert profile is not None and "first_name" not in profile and profile["custom_attributes"]["tier"] == 99

    results, _, _ = apply(dest, [PlanRow("c_4", "removed", rows[4].values)])
    assert results[0].outcome == ACKNOWLEDGED
    assert sandbox.user("c_4") is None
    assert sandbox.stats()["requests_total"] == 4 and sandbox.connections_opened() == 1   # keep-alive


def test_alias_upsert_creates_an_alias_only_profile(sandbox: SandboxHandle) -> None:
    dest = destination(sandbox, identifier=Identifier("user_alias", "anon", alias_label="anon_id"))
    results, _, _ = apply(dest, [PlanRow("k", "added", {"id": 1, "anon": "a-1", "first_name": "Ada"})])
    assert results[0].outcome == ACKNOWLEDGED
    assert sandbox.user(alias_name="a-1", alias_label="anon_id") is not None


def test_events_and_purchases_are_billed_as_estimated(sandbox: SandboxHandle) -> None:
    events = destination(sandbox, "events", identifier=Identifier("external_id", "user"),
                         event=EventSpec(time="ts", name="ordered", properties={"amount": "amount"}))
    purchases = destination(sandbox, "purchases", identifier=Identifier("external_id", "user"),
                            purchase=PurchaseSpec(product_id="sku", currency="cur", price="price", time="ts",
                                                  properties={"color": "color"}))
    values = {"id": 1, "user": "u1", "ts": "2024-05-01T10:00:00.000Z", "amount": 3.5, "sku": "tent",
              "cur": "EUR", "price": 120.0, "color": "green"}
    r1, p1, _ = apply(events, [PlanRow(str(i), "added", dict(values, id=i)) for i in range(5)])
    r2, p2, _ = apply(purchases, [PlanRow(str(i), "added", dict(values, id=i)) for i in range(3)])
    assert {r.outcome for r in r1 + r2} == {ACKNOWLEDGED}
    assert sandbox.stats()["events"] == 5 and sandbox.stats()["purchases"] == 3
    assert sandbox.stats()["data_points"] == p1 + p2 == 5 + 3 * 2


def test_subscription_groups(sandbox: SandboxHandle) -> None:
    apply(destination(sandbox), [PlanRow("u1", "added", {"id": "u1", "email": "u1@example.com"})])
    dest = destination(sandbox, "subscription_groups", subscription=SubscriptionSpec(state="on", group_id=GROUP))
    results, points, _ = apply(dest, [PlanRow("u1", "added", {"id": "u1", "on": False})])
    assert results[0].outcome == ACKNOWLEDGED and points == 0


def test_catalog_items_post_patch_delete(sandbox: SandboxHandle) -> None:
    created = requests.post(f"{sandbox.url}/catalogs", headers=sandbox.headers, timeout=10, json={"catalogs": [
        {"name": "products", "fields": [{"name": "id", "type": "string"}, {"name": "name", "type": "string"},
                                        {"name": "price", "type": "number"}]}]})
    assert created.status_code == 201
    dest = destination(sandbox, "catalog_items", catalog="products", item_id="id", on_removed="delete")
    rows = [PlanRow(f"p{i}", "added", {"id": f"p{i}", "name": f"P{i}", "price": i}) for i in range(60)]
    results, _, _ = apply(dest, rows)
    assert [r.outcome for r in results] == [ACKNOWLEDGED] * 60
    assert sandbox.stats()["catalogs"]["products"] == 60
    old = rows[0].values
    results, _, _ = apply(dest, [PlanRow("p0", "changed", dict(old, price=7), old, ("price",)),
                                 PlanRow("p1", "removed", rows[1].values)])
    assert [r.outcome for r in results] == [ACKNOWLEDGED, ACKNOWLEDGED]
    items = {item["id"]: item for item in sandbox.catalog_items("products") or []}
    assert items["p0"]["price"] == 7 and "p1" not in items


def test_catalog_bad_field_is_isolated_and_rejected(sandbox: SandboxHandle) -> None:
    requests.post(f"{sandbox.url}/catalogs", headers=sandbox.headers, timeout=10, json={"catalogs": [
        {"name": "c", "fields": [{"name": "id", "type": "string"}, {"name": "name", "type": "string"}]}]})
    dest = destination(sandbox, "catalog_items", catalog="c", item_id="id", fields={"name": "name"})
    rows = [PlanRow(f"p{i}", "added", {"id": f"p{i}", "name": f"P{i}"}) for i in range(4)]
    odd = destination(sandbox, "catalog_items", catalog="c", item_id="id", fields={"name": "name", "nope": "x"})
    bad = odd.prepare(PlanRow("p9", "added", {"id": "p9", "name": "x", "x": 1}))
    assert isinstance(bad, Item)
    items = [(r.key, dest.prepare(r).item_json) for r in rows]  # type: ignore[union-attr]
    items.insert(2, ("p9", bad.item_json))
    results = [r for b in dest.batches("POST /catalogs/c/items", items) for r in dest.send(b)]
    outcome = {r.key: r.outcome for r in results}
    assert outcome.pop("p9") == REJECTED
    assert set(outcome.values()) == {ACKNOWLEDGED}


def test_rate_limited_then_accepted() -> None:
    with running_sandbox(fail_429_first=2) as limited:
        dest = destination(limited)
        results, _, _ = apply(dest, [PlanRow("u", "added", {"id": "u", "first_name": "A"})])
        assert results[0].outcome == ACKNOWLEDGED
        assert limited.stats()["requests"]["POST /users/track"] == {"429": 2, "201": 1}


def test_wrong_key_and_missing_permission_are_fatal(sandbox: SandboxHandle) -> None:
    wrong = "not-the-right-key-123"
    with pytest.raises(DestinationError, match=r"rejected the API key \(401\)") as err:
        apply(destination(sandbox, key=wrong), [PlanRow("u", "added", {"id": "u", "first_name": "A"})])
    assert wrong not in str(err.value)
    with running_sandbox(permissions="users.track") as limited:
        dest = destination(limited, "user_deletes")
        with pytest.raises(DestinationError, match="lacks users.delete"):
            apply(dest, [PlanRow("u", "added", {"id": "u"})])
