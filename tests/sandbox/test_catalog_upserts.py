"""Catalog item writes: PUT is an upsert; POST of an existing item follows `catalog_post_existing`;
a 400 lists the offending ids in `parameter_values` (braze-api.md §0.1, §5.2)."""

from __future__ import annotations

import pytest

from engine.sandbox.options import OptionError, SandboxOptions

FIELDS = [{"name": "id", "type": "string"}, {"name": "Name", "type": "string"}, {"name": "Rating", "type": "number"}]


def create(client):
    assert client.post("/catalogs", {"catalogs": [{"name": "c", "fields": FIELDS}]}).status_code == 201


def write(client, method, *items):
    return client.call(method, "/catalogs/c/items", {"items": list(items)})


def stored(client):
    return {i["id"]: i for i in client.handle.catalog_items("c")}


def test_put_creates_items_that_do_not_exist(client):
    create(client)
    r = write(client, "PUT", {"id": "a", "Name": "A"}, {"id": "b", "Rating": 2})
    assert (r.status_code, r.json()) == (202, {"message": "success"})
    assert stored(client) == {"a": {"id": "a", "Name": "A", "Rating": None},
                              "b": {"id": "b", "Name": None, "Rating": 2}}


def test_put_replaces_the_whole_item(client):
    create(client)
    write(client, "POST", {"id": "a", "Name": "A", "Rating": 5})
    write(client, "PUT", {"id": "a", "Rating": 1})
    assert stored(client)["a"] == {"id": "a", "Name": None, "Rating": 1}


def test_post_existing_overwrites_by_default(client):
    create(client)
    write(client, "POST", {"id": "a", "Name": "A", "Rating": 5})
    assert write(client, "POST", {"id": "a", "Name": "B"}).status_code == 202
    assert stored(client)["a"] == {"id": "a", "Name": "B", "Rating": None}


def test_post_existing_ignore_keeps_the_stored_item(make_client):
    client = make_client(catalog_post_existing="ignore")
    create(client)
    write(client, "POST", {"id": "a", "Name": "A"})
    r = write(client, "POST", {"id": "a", "Name": "B"}, {"id": "n", "Name": "New"})
    assert (r.status_code, r.json()) == (202, {"message": "success"})
    assert stored(client) == {"a": {"id": "a", "Name": "A", "Rating": None},
                              "n": {"id": "n", "Name": "New", "Rating": None}}


def test_post_existing_error_rejects_the_request_listing_the_existing_ids(make_client):
    client = make_client(catalog_post_existing="error")
    create(client)
    write(client, "POST", {"id": "a", "Name": "A"}, {"id": "b", "Name": "B"})
    r = write(client, "POST", {"id": "b", "Name": "x"}, {"id": "n"}, {"id": "a", "Name": "y"})
    assert (r.status_code, r.json()) == (400, {
        "errors": [{"id": "item-already-exists", "message": "The item already exists in the catalog",
                    "parameters": ["id"], "parameter_values": ["b", "a"]}],
        "message": "Invalid Request"})
    assert stored(client) == {"a": {"id": "a", "Name": "A", "Rating": None},
                              "b": {"id": "b", "Name": "B", "Rating": None}}       # nothing of it applied


def test_post_existing_error_is_reported_with_the_other_problems(make_client):
    client = make_client(catalog_post_existing="error")
    create(client)
    write(client, "POST", {"id": "a"})
    r = write(client, "POST", {"id": "a"}, {"id": "b", "Colour": "red"}, {"id": "c d"})
    assert [(e["id"], e["parameter_values"]) for e in r.json()["errors"]] == [
        ("invalid-ids", ["c d"]), ("item-already-exists", ["a"]), ("invalid-fields", ["b"])]


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_post_existing_error_leaves_put_and_patch_alone(make_client, method):
    client = make_client(catalog_post_existing="error")
    create(client)
    write(client, "POST", {"id": "a"})
    assert write(client, method, {"id": "a", "Name": "x"}).status_code == 202
    assert stored(client)["a"]["Name"] == "x"


def test_parameter_values_list_every_offending_id_once_in_request_order(client):
    create(client)
    r = write(client, "POST", {"id": "z", "Colour": 1}, {"id": "a", "Colour": 1, "Size": 2}, {"id": "ok"})
    assert r.json() == {"errors": [{"id": "invalid-fields",
                                    "message": "Some of the fields given do not exist in the catalog",
                                    "parameters": ["id"], "parameter_values": ["z", "a"]}],
                        "message": "Invalid Request"}
    assert client.handle.catalog_items("c") == []


def test_bad_catalog_post_existing_is_refused():
    with pytest.raises(OptionError):
        SandboxOptions.build(catalog_post_existing="merge")
