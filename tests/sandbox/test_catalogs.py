"""Catalog management and bulk item endpoints (braze-api.md §5)."""

from __future__ import annotations

import re

import pytest
import requests

FIELDS = [{"name": "id", "type": "string"}, {"name": "Name", "type": "string"}, {"name": "Rating", "type": "number"},
          {"name": "Open", "type": "boolean"}, {"name": "Location", "type": "geo"}, {"name": "Meta", "type": "object"},
          {"name": "Dishes", "type": "array"}, {"name": "Since", "type": "time"}]


def create(client, name="restaurants", fields=FIELDS):
    return client.post("/catalogs", {"catalogs": [{"name": name, "description": "My Restaurants", "fields": fields}]})


def items(client, method, body, name="restaurants"):
    return client.call(method, f"/catalogs/{name}/items", body)


def error(error_id, message, values, parameters=("id",)):
    return {"errors": [{"id": error_id, "message": message, "parameters": list(parameters),
                        "parameter_values": values}], "message": "Invalid Request"}


# ---- management ----------------------------------------------------------------------------------


def test_create_catalog_echoes_it(client):
    r = create(client)
    assert r.status_code == 201
    body = r.json()
    assert body["message"] == "success"
    (catalog,) = body["catalogs"]
    assert catalog["name"] == "restaurants" and catalog["num_items"] == 0 and catalog["fields"] == FIELDS
    assert catalog["description"] == "My Restaurants" and catalog["updated_at"]


def test_list_catalogs(client):
    create(client)
    r = client.call("GET", "/catalogs")
    assert r.status_code == 200 and [c["name"] for c in r.json()["catalogs"]] == ["restaurants"]


def test_duplicate_catalog_name_is_400(client):
    create(client)
    r = create(client)
    assert (r.status_code, r.json()) == (400, error("catalog-name-already-exists",
                                                    "Catalog with that name already exists", ["restaurants"], ["name"]))


@pytest.mark.parametrize(("fields", "error_id"), [
    ([{"name": "Name", "type": "string"}, {"name": "id", "type": "string"}], "id-not-first-column"),
    ([{"name": "id", "type": "string"}, {"name": "bad name", "type": "string"}], "invalid-field-names"),
    ([{"name": "id", "type": "string"}, {"name": "x" * 251, "type": "string"}], "field-names-too-large"),
    ([{"name": "id", "type": "string"}, {"name": "a", "type": "string"}, {"name": "a", "type": "number"}],
     "field-names-not-unique"),
    ([{"name": "id", "type": "string"}, {"name": "a", "type": "date"}], "invalid-field-types"),
    ([{"name": "id"}], "invalid-fields"),
])
def test_field_rules(client, fields, error_id):
    r = create(client, fields=fields)
    assert r.status_code == 400
    assert [e["id"] for e in r.json()["errors"]] == [error_id]


def test_catalog_name_rules(client):
    assert create(client, name="bad name").json()["errors"][0]["id"] == "invalid-catalog-name"
    assert create(client, name="x" * 251).json()["errors"][0]["id"] == "catalog-name-too-large"
    r = client.post("/catalogs", {"catalogs": []})
    assert r.json()["errors"][0]["id"] == "catalog-array-invalid"


def test_delete_catalog(client, sandbox):
    create(client)
    assert client.call("DELETE", "/catalogs/restaurants").status_code == 200
    assert sandbox.catalog_items("restaurants") is None


# ---- items ---------------------------------------------------------------------------------------


ITEM = {"id": "r1", "Name": "Rest 1", "Rating": 5, "Open": True, "Location": [-73.98, 40.77],
        "Meta": {"k": "v"}, "Dishes": ["Burger"], "Since": "2020-01-01T00:00:00Z"}


def test_post_items_creates(client, sandbox):
    create(client)
    r = items(client, "POST", {"items": [ITEM, {"id": "r2", "Name": "Two"}]})
    assert (r.status_code, r.json()) == (202, {"message": "success"})
    stored = sandbox.catalog_items("restaurants")
    assert stored[0] == ITEM
    assert stored[1]["Name"] == "Two" and stored[1]["Rating"] is None


def test_patch_updates_existing_and_ignores_unknown(client, sandbox):
    create(client)
    items(client, "POST", {"items": [ITEM]})
    r = items(client, "PATCH", {"items": [{"id": "r1", "Rating": 3, "Dishes": {"$add": ["Fries"], "$remove": ["Burger"]}},
                                          {"id": "ghost", "Rating": 1}]})
    assert r.status_code == 202
    stored = sandbox.catalog_items("restaurants")
    assert len(stored) == 1
    assert stored[0]["Rating"] == 3 and stored[0]["Dishes"] == ["Fries"] and stored[0]["Name"] == "Rest 1"


def test_put_replaces_or_creates(client, sandbox):
    create(client)
    items(client, "POST", {"items": [ITEM]})
    items(client, "PUT", {"items": [{"id": "r1", "Name": "New"}, {"id": "r3", "Name": "Three"}]})
    stored = {i["id"]: i for i in sandbox.catalog_items("restaurants")}
    assert stored["r1"]["Name"] == "New" and stored["r1"]["Rating"] is None
    assert stored["r3"]["Name"] == "Three"


def test_delete_items(client, sandbox):
    create(client)
    items(client, "POST", {"items": [ITEM, {"id": "r2"}]})
    r = items(client, "DELETE", {"items": [{"id": "r1"}, {"id": "ghost"}]})
    assert (r.status_code, r.json()) == (202, {"message": "success"})
    assert [i["id"] for i in sandbox.catalog_items("restaurants")] == ["r2"]


def test_unknown_catalog_is_404(client):
    r = items(client, "POST", {"items": [ITEM]}, name="nope")
    assert (r.status_code, r.json()) == (404, error("catalog-not-found", "Could not find catalog", ["nope"],
                                                    ["catalog_name"]))


@pytest.mark.parametrize(("payload", "expected"), [
    ([{"id": "r1", "Colour": "red"}],
     error("invalid-fields", "Some of the fields given do not exist in the catalog", ["r1"])),
    ([{"id": 5}], error("ids-not-strings", "Item IDs must be strings", [5])),
    ([{"id": "x" * 251}], error("ids-too-large", "Item IDs can't be more than 250 characters", ["x" * 251])),
    ([{"id": "r 1"}], error("invalid-ids", "Item IDs can only include letters, numbers, hyphens, and underscores",
                            ["r 1"])),
    ([{"id": "r1"}, {"id": "r1"}], error("ids-not-unique", "Item IDs must be unique in the request", ["r1"])),
    ([{"Name": "x"}], error("items-missing-ids", "There are 1 item(s) that do not have ids", [])),
    ([{"id": "r1", "Name": "x" * 5001}],
     error("items-too-large", "Item values can't be longer than 5,000 characters", ["r1"])),
    ([{"id": "r1", "Meta": {"a.b": 1}}],
     error("invalid-keys-in-value-object", "Item object keys can't include '.' or '$'", ["r1"])),
    ([{"id": "r1", "Rating": "five"}],
     error("unable-to-coerce-value", "Item types can't be converted to the catalog field types", ["r1"])),
    ([{"id": "r1", "Dishes": {"$add": ["x"]}}],
     error("unable-to-coerce-value", "Item types can't be converted to the catalog field types", ["r1"])),
])
def test_item_rules(client, payload, expected):
    create(client)
    r = items(client, "POST", {"items": payload})
    assert (r.status_code, r.json()) == (400, expected)


def test_too_deep_nesting(client):
    create(client)
    deep: dict = {}
    cursor = deep
    for _ in range(52):
        cursor["a"] = {}
        cursor = cursor["a"]
    r = items(client, "POST", {"items": [{"id": "r1", "Meta": deep}]})
    assert r.json()["errors"][0]["id"] == "too-deep-nesting-in-value-object"


def test_more_than_50_items(client):
    create(client)
    r = items(client, "POST", {"items": [{"id": f"r{i}"} for i in range(51)]})
    assert (r.status_code, r.json()) == (400, error("request-includes-too-many-items",
                                                    "Your request includes too many items. The maximum is 50.", [],
                                                    ["items"]))


def test_items_not_an_array(client):
    create(client)
    r = items(client, "POST", {"items": {"id": "r1"}})
    assert r.json()["errors"][0]["id"] == "item-array-invalid"


def test_all_errors_are_reported_at_once(client):
    create(client)
    r = items(client, "POST", {"items": [{"id": "r 1"}, {"id": "r2", "Colour": 1}]})
    assert [e["id"] for e in r.json()["errors"]] == ["invalid-ids", "invalid-fields"]


def test_get_items_pages_of_50_with_link_header(client):
    create(client)
    for start in range(0, 120, 50):
        items(client, "POST", {"items": [{"id": f"r{i:03d}"} for i in range(start, min(start + 50, 120))]})
    r = items(client, "GET", None)
    assert r.status_code == 200 and len(r.json()["items"]) == 50
    next_url = re.search(r'<([^>]+)>; rel="next"', r.headers["link"]).group(1)
    second = requests.get(next_url, headers=client.handle.headers, timeout=5)
    assert [i["id"] for i in second.json()["items"]][:1] == ["r050"]
    assert 'rel="prev"' in second.headers["link"]
    third_url = re.search(r'<([^>]+)>; rel="next"', second.headers["link"]).group(1)
    third = requests.get(third_url, headers=client.handle.headers, timeout=5)
    assert len(third.json()["items"]) == 20 and 'rel="next"' not in third.headers["link"]


def test_get_items_bad_cursor(client):
    create(client)
    r = client.call("GET", "/catalogs/restaurants/items?cursor=%%%")
    assert r.status_code == 400 and r.json()["errors"][0]["id"] == "invalid-cursor"


def test_item_endpoints_need_their_permissions(make_client):
    client = make_client(permissions="catalogs.create,catalogs.add_items")
    create(client)
    assert items(client, "POST", {"items": [ITEM]}).status_code == 202
    assert items(client, "PATCH", {"items": [ITEM]}).json() == {"message": "Access Denied"}
    assert items(client, "PUT", {"items": [ITEM]}).status_code == 403
    assert items(client, "DELETE", {"items": [{"id": "r1"}]}).status_code == 403
    assert items(client, "GET", None).status_code == 403
