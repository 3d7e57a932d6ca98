"""BrazeDestination: connection rules, capabilities, batching limits, estimates and data points."""

from __future__ import annotations

import json
from typing import Any

import pytest

import engine
from engine.destinations.base import Batch
from engine.destinations.braze import datapoints
from engine.destinations.braze.destination import USER_AGENT, BrazeDestination, make_destination
from engine.destinations.braze.endpoints import channel_info
from engine.errors import DestinationError, ProjectError
from engine.project import ConnectionConfig
from engine.sandbox import datapoints as sandbox_datapoints
from engine.specs import DestinationSpec, EventSpec, Identifier, SyncSpec

USERS = SyncSpec("s", "m", ("id",), DestinationSpec("braze", "users", identifier=Identifier("external_id", "id")))


def make(conn: ConnectionConfig, sync: SyncSpec = USERS, api_key: str | None = None) -> BrazeDestination:
    return make_destination(conn, api_key, sync)


# -- instances and URLs -------------------------------------------------------------------------

@pytest.mark.parametrize(("instance", "url"), [
    ("iad-01", "https://rest.iad-01.braze.com"), ("iad-08", "https://rest.iad-08.braze.com"),
    ("us-10", "https://rest.us-10.braze.com"), ("fra-01", "https://rest.fra-01.braze.eu"),
    ("fra-02", "https://rest.fra-02.braze.eu"), ("au-01", "https://rest.au-01.braze.com"),
    ("US-03", "https://rest.iad-03.braze.com"), ("EU-01", "https://rest.fra-01.braze.eu"),
])
def test_instance_mapping(instance: str, url: str) -> None:
    assert make(ConnectionConfig("braze", instance=instance)).base_url == url


def test_unknown_instance_lists_known_ones() -> None:
    """A dashboard name Braze does not have is refused (a well-formed cluster name like iad-09 is assumed
    to follow Braze's naming, with a warning: tests/unit/test_braze_endpoints.py)."""
    with pytest.raises(ProjectError) as err:
        make(ConnectionConfig("braze", instance="US-09"))
    assert "'US-09' is not a Braze instance" in str(err.value)
    assert "iad-01" in str(err.value) and "fra-02" in str(err.value) and "au-01" in str(err.value)


@pytest.mark.parametrize(("endpoint", "url"), [
    ("https://rest.iad-05.braze.com/", "https://rest.iad-05.braze.com"),
    ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
    ("http://localhost:9000/braze/", "http://localhost:9000/braze"),
    ("http://[::1]:8000", "http://[::1]:8000"),
])
def test_endpoint_urls(endpoint: str, url: str) -> None:
    assert make(ConnectionConfig("braze", endpoint=endpoint)).base_url == url


def test_plain_http_to_a_remote_host_is_refused_unless_allowed() -> None:
    with pytest.raises(ProjectError, match="plain http.*allow_http: true"):
        make(ConnectionConfig("braze", endpoint="http://braze.internal.example.com"))
    allowed = make(ConnectionConfig("braze", endpoint="http://braze.internal.example.com", allow_http=True))
    assert allowed.base_url == "http://braze.internal.example.com"


@pytest.mark.parametrize("conn", [
    ConnectionConfig("braze"),
    ConnectionConfig("braze", endpoint="https://rest.iad-01.braze.com", instance="iad-01"),
    ConnectionConfig("braze", endpoint="ftp://rest.iad-01.braze.com"),
    ConnectionConfig("braze", endpoint="https://user:pw@rest.iad-01.braze.com"),
])
def test_bad_connection_settings(conn: ConnectionConfig) -> None:
    with pytest.raises(ProjectError, match="connection 'braze'"):
        make(conn)


def test_user_agent_follows_the_partner_rule() -> None:
    assert USER_AGENT == f"partner-Reflow-Reflow/{engine.__version__}"


def test_send_without_key_is_an_actionable_error() -> None:
    dest = make(ConnectionConfig("braze", instance="iad-01"))
    with pytest.raises(DestinationError, match="api_key is empty; set BRAZE_API_KEY"):
        dest.send(Batch("POST /users/track attributes", ("k",), ('{"external_id":"k"}',)))


# -- capabilities -----------------------------------------------------------------------------

def test_capabilities_from_connection() -> None:
    dest = make(ConnectionConfig("braze", instance="iad-01", rate_limit=200, concurrency=8))
    caps = dest.capabilities
    assert caps.default_concurrency == 8
    assert (caps.append_only, caps.sends_removed, caps.apply_rank, caps.object_word) == (False, False, 1, "Braze user")
    track = "POST /users/track attributes"
    assert dest.batch_limits(track)[0] == 75 and 3_999_900 < dest.batch_limits(track)[1] < 4_000_000
    assert dest.estimate({track: (200 * 75, 0)}).seconds == pytest.approx(1.0)      # 200 requests at 200/s
    default = make(ConnectionConfig("braze", instance="iad-01"))
    assert default.capabilities.default_concurrency == 32
    assert default.estimate({track: (1000 * 75, 0)}).seconds == pytest.approx(1.0)   # 1,000 requests at 1,000/s


def test_user_deletes_go_last_and_catalog_items_are_named_as_such() -> None:
    deletes = SyncSpec("d", "m", ("id",), DestinationSpec("braze", "user_deletes",
                                                          identifier=Identifier("external_id", "id")))
    assert make(ConnectionConfig("braze", instance="iad-01"), deletes).capabilities.apply_rank == 3
    items = SyncSpec("c", "m", ("id",), DestinationSpec("braze", "catalog_items", catalog="products", item_id="id"))
    caps = make(ConnectionConfig("braze", instance="iad-01"), items).capabilities
    assert (caps.apply_rank, caps.object_word) == (1, "catalog item")
    assert "catalog" in caps.place and "endpoint" in caps.place


def test_events_capabilities_are_append_only() -> None:
    sync = SyncSpec("s", "m", ("id",), DestinationSpec("braze", "events", identifier=Identifier("external_id", "u"),
                                                        event=EventSpec(time="t", name="e")))
    assert make(ConnectionConfig("braze", instance="iad-01"), sync).capabilities.append_only


# -- batching ---------------------------------------------------------------------------------

def rows(n: int, size: int = 20) -> list[tuple[str, str]]:
    return [(f"k{i}", json.dumps({"external_id": f"k{i}", "x": "y" * size})) for i in range(n)]


@pytest.mark.parametrize("legacy", [False, True])
def test_users_track_batches_hold_75(legacy: bool) -> None:
    dest = make(ConnectionConfig("braze", instance="iad-01", legacy_limits=legacy))
    sizes = [len(b.keys) for b in dest.batches("POST /users/track attributes", rows(160))]
    assert sizes == [75, 75, 10]


@pytest.mark.parametrize("channel", [
    "POST /users/delete external_ids", "POST /catalogs/products/items", "DELETE /catalogs/products/items",
    "PUT /catalogs/products/items",
])
def test_other_endpoints_batch_50(channel: str) -> None:
    dest = make(ConnectionConfig("braze", instance="iad-01"))
    assert [len(b.keys) for b in dest.batches(channel, rows(101))] == [50, 50, 1]


def test_batches_split_before_4mb_bodies() -> None:
    dest = make(ConnectionConfig("braze", instance="iad-01"))
    big = rows(75, size=100_000)                      # ~7.5 MB in total
    batches = list(dest.batches("POST /users/track attributes", big))
    assert len(batches) == 2
    info = channel_info("POST /users/track attributes")
    for batch in batches:
        body = info.prefix + ",".join(batch.items) + info.suffix
        assert len(body.encode()) < 4_000_000
        assert json.loads(body)["attributes"][0]["external_id"] == batch.keys[0]
    assert sum(len(b.keys) for b in batches) == 75
    assert [k for b in batches for k in b.keys] == [k for k, _ in big]


def test_request_bodies_are_the_items_joined() -> None:
    info = channel_info("PUT /catalogs/products/items")
    body = info.prefix + ",".join(['{"id":"a"}', '{"id":"b"}']) + info.suffix
    assert json.loads(body) == {"items": [{"id": "a"}, {"id": "b"}]}
    delete = channel_info("POST /users/delete user_aliases")
    assert delete.prefix + '{"alias_name":"a","alias_label":"l"}' + delete.suffix == (
        '{"user_aliases":[{"alias_name":"a","alias_label":"l"}]}')


# -- estimates --------------------------------------------------------------------------------

def test_estimate_requests_data_points_and_seconds() -> None:
    dest = make(ConnectionConfig("braze", instance="iad-01", rate_limit=10))
    est = dest.estimate({
        "POST /users/track attributes": (151, 900),
        "POST /users/track events": (75, 75),
        "POST /users/delete external_ids": (120, 0),
    })
    assert est.requests == {"POST /users/track": 4, "POST /users/delete": 3}
    assert est.data_points == 975
    # track: 4 requests at 10/s = 0.4 s; deletes: 3 requests at 20,000/min = 0.009 s
    assert est.seconds == pytest.approx(0.4)


def test_estimate_is_bound_by_the_slowest_rate_group() -> None:
    dest = make(ConnectionConfig("braze", instance="iad-01"))
    est = dest.estimate({"PUT /catalogs/products/items": (50_000, 0),
                         "POST /users/track attributes": (75, 10)})
    assert est.requests == {"PUT /catalogs/products/items": 1000, "POST /users/track": 1}
    assert est.seconds == pytest.approx(1000 / (16_000 / 60))
    assert dest.estimate({}).seconds == 0


# -- data points ------------------------------------------------------------------------------

@pytest.mark.parametrize(("obj", "points"), [
    ({"external_id": "u", "a": 1}, 1),
    ({"external_id": "u", "x": {"a": {"b": 1, "c": 2}}}, 3),
    ({"external_id": "u", "a": {"b": {"c": {"d": 1}}}}, 3),
    ({"external_id": "u", "a": {"b": [{"c": 1}, {"d": 1}]}}, 1),
    ({"external_id": "u", "a": {}}, 0),
    ({"external_id": "u", "tags": ["x", "y", "z"]}, 1),
    ({"external_id": "u", "pets": [{"n": "a", "t": {"k": 1}}, {"n": "b"}]}, 4),
    ({"external_id": "u", "pets": [1, {}]}, 1),
    ({"external_id": "u", "tags": {"add": ["a", "b"], "remove": ["c"]}}, 3),
    ({"external_id": "u", "visits": {"inc": 5}}, 1),
    ({"external_id": "u", "gone": None}, 1),
    ({"external_id": "u", "_update_existing_only": True, "_merge_objects": True, "push_token_import": False,
      "email_subscribe": "opted_in", "push_subscribe": "subscribed", "subscription_groups": [{"a": 1}],
      "push_tokens": [{"app_id": "a", "token": "t"}]}, 0),
    ({"user_alias": {"alias_name": "a", "alias_label": "l"}, "email": "a@b.io", "phone": "+1555"}, 2),
    ({"braze_id": "b", "email": "a@b.io"}, 1),
    ({"email": "a@b.io", "first_name": "A"}, 1),
    ({"phone": "+1555", "email": "a@b.io", "first_name": "A"}, 1),
])
def test_attribute_data_points(obj: dict[str, Any], points: int) -> None:
    assert datapoints.attributes_object(obj) == points
    assert sandbox_datapoints.attributes_cost(obj) == points      # the sandbox bills the same


def test_data_points_agree_with_the_sandbox_on_generated_objects() -> None:
    values: list[Any] = [None, 1, "s", True, [], ["a"], [{"a": 1}], [{"a": {"b": [1]}}, 2], {"inc": 2},
                         {"add": ["a", "b"]}, {"remove": []}, {"add": [1], "remove": [2, 3]}, {"x": {"y": {"z": 1}}},
                         {"a": [{"b": 1}]}, {}]
    identifiers: list[dict[str, Any]] = [{"external_id": "u"}, {"email": "a@b.io"}, {"phone": "+1"},
                                         {"user_alias": {"alias_name": "a", "alias_label": "l"}}, {"braze_id": None}]
    for ident in identifiers:
        for i, value in enumerate(values):
            obj = {**ident, "email": "e@x.io", "attr": value, f"other{i}": values[-1 - i]}
            assert datapoints.attributes_object(obj) == sandbox_datapoints.attributes_cost(obj), obj
    purchase = {"external_id": "u", "properties": {"a": {"b": 1}, "c": [1]}}
    assert datapoints.purchase_object(purchase) == sandbox_datapoints.purchase_cost(purchase) == 3


def test_event_and_purchase_data_points() -> None:
    assert datapoints.event_object({"external_id": "u", "name": "e", "properties": {"a": 1, "b": 2}}) == 1
    assert datapoints.purchase_object({"external_id": "u", "properties": {"a": {"x": 1}, "b": 2}}) == 3
    assert datapoints.purchase_object({"external_id": "u"}) == 1
