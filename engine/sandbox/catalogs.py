"""Catalog endpoints (braze-api.md §5): management and the asynchronous bulk item endpoints.

Item requests are validated as a whole; every failed rule is reported at once in Braze's envelope
{"errors":[{"id","message","parameters","parameter_values"}],"message":"Invalid Request"}, with
`parameters: ["id"]` and the offending item ids in `parameter_values` (each once, in request order),
as Braze's example shows. PUT replaces an item and creates it when it does not exist (an upsert);
fields it leaves out become null.

Choices where Braze is silent: PATCH of unknown item ids and DELETE of unknown ids are no-ops;
missing fields are null; POST of an existing id follows `catalog_post_existing`: "overwrite" (the
default), "ignore" (202, the stored item stays), or "error" (400 `item-already-exists`, the id that
Braze's synchronous create endpoint documents, listing the existing ids).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .responses import Response, catalog_error, catalog_errors
from .store import Catalog
from .times import iso_utc, now_utc, parse_time
from .validate import is_number

if TYPE_CHECKING:
    from .app import Request, Sandbox

MAX_ITEMS = 50
PAGE_SIZE = 50
MAX_NAME = 250
MAX_FIELDS = 500
MAX_VALUE_CHARS = 5000
MAX_DEPTH = 50
FIELD_TYPES = frozenset({"string", "number", "boolean", "time", "geo", "object", "array"})
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _catalog_view(catalog: Catalog) -> dict[str, Any]:
    return {"description": catalog.description, "fields": catalog.fields, "name": catalog.name,
            "num_items": len(catalog.items), "updated_at": catalog.updated_at}


def _not_found(name: str) -> Response:
    return catalog_errors(404, [catalog_error("catalog-not-found", "Could not find catalog", ["catalog_name"], [name])])


# ---- management ----------------------------------------------------------------------------


def create_catalog(app: Sandbox, request: Request) -> Response:
    catalogs = request.body.get("catalogs")
    if not isinstance(catalogs, list) or len(catalogs) != 1 or not isinstance(catalogs[0], dict):
        return catalog_errors(400, [catalog_error("catalog-array-invalid",
                                                  "'catalogs' must be an array holding exactly one catalog object")])
    spec = catalogs[0]
    name: Any = spec.get("name")
    description: Any = spec.get("description", "")
    fields: Any = spec.get("fields")
    errors = []
    if not isinstance(name, str) or not _NAME.match(name):
        errors.append(catalog_error("invalid-catalog-name", "Catalog name can only include letters, numbers, "
                                    "hyphens, and underscores", ["name"], [name]))
    elif len(name) > MAX_NAME:
        errors.append(catalog_error("catalog-name-too-large", "Catalog name can't be more than 250 characters",
                                    ["name"], [name]))
    elif name in app.store.catalogs:
        errors.append(catalog_error("catalog-name-already-exists", "Catalog with that name already exists",
                                    ["name"], [name]))
    if description is not None and (not isinstance(description, str) or len(description) > MAX_NAME):
        errors.append(catalog_error("description-too-long", "Description can't be more than 250 characters",
                                    ["description"], []))
    errors.extend(_field_errors(fields))
    if errors:
        return catalog_errors(400, errors)
    with app.store.lock:
        if name in app.store.catalogs:
            return catalog_errors(400, [catalog_error("catalog-name-already-exists",
                                                      "Catalog with that name already exists", ["name"], [name])])
        catalog = Catalog(name=name, description=description or "",
                          fields=[{"name": f["name"], "type": f["type"]} for f in fields],
                          updated_at=iso_utc(now_utc()))
        app.store.catalogs[name] = catalog
        view = _catalog_view(catalog)
    return Response(201, {"catalogs": [view], "message": "success"})


def _field_errors(fields: Any) -> list[dict[str, Any]]:
    if not isinstance(fields, list) or not fields or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("type"), str) for f in fields
    ):
        return [catalog_error("invalid-fields", "'fields' must be an array of objects with 'name' and 'type'",
                              ["fields"], [])]
    errors = []
    names = [f["name"] for f in fields]
    if len(fields) > MAX_FIELDS:
        errors.append(catalog_error("too-many-fields", "Catalogs can have at most 500 fields", ["fields"], []))
    if fields[0] != {"name": "id", "type": "string"} and (fields[0]["name"], fields[0]["type"]) != ("id", "string"):
        errors.append(catalog_error("id-not-first-column", "The first field must be 'id' of type string",
                                    ["fields"], [fields[0]["name"]]))
    bad_names = [n for n in names if not _NAME.match(n)]
    if bad_names:
        errors.append(catalog_error("invalid-field-names", "Field names can only include letters, numbers, "
                                    "hyphens, and underscores", ["fields"], bad_names))
    long_names = [n for n in names if len(n) > MAX_NAME]
    if long_names:
        errors.append(catalog_error("field-names-too-large", "Field names can't be more than 250 characters",
                                    ["fields"], long_names))
    if len(set(names)) != len(names):
        errors.append(catalog_error("field-names-not-unique", "Field names must be unique", ["fields"],
                                    sorted({n for n in names if names.count(n) > 1})))
    bad_types = [f["type"] for f in fields if f["type"] not in FIELD_TYPES]
    if bad_types:
        errors.append(catalog_error("invalid-field-types", "Field types must be one of string, number, boolean, "
                                    "time, geo, object, array", ["fields"], bad_types))
    return errors


def list_catalogs(app: Sandbox, request: Request) -> Response:
    with app.store.lock:
        views = [_catalog_view(c) for c in app.store.catalogs.values()]
    return Response(200, {"catalogs": views, "message": "success"})


def delete_catalog(app: Sandbox, request: Request) -> Response:
    name = request.params["catalog_name"]
    with app.store.lock:
        if app.store.catalogs.pop(name, None) is None:
            return _not_found(name)
    return Response(200, {"message": "success"})


# ---- bulk items ----------------------------------------------------------------------------


def add_items(app: Sandbox, request: Request) -> Response:
    return _write_items(app, request, "POST")


def replace_items(app: Sandbox, request: Request) -> Response:
    return _write_items(app, request, "PUT")


def update_items(app: Sandbox, request: Request) -> Response:
    return _write_items(app, request, "PATCH")


def delete_items(app: Sandbox, request: Request) -> Response:
    return _write_items(app, request, "DELETE")


def _write_items(app: Sandbox, request: Request, mode: str) -> Response:
    name = request.params["catalog_name"]
    store = app.store
    with store.lock:
        catalog = store.catalogs.get(name)
        if catalog is None:
            return _not_found(name)
        items = request.body.get("items")
        post_existing = app.options.catalog_post_existing
        errors = item_errors(items, catalog, mode, existing_is_error=post_existing == "error")
        if errors:
            return catalog_errors(400, errors)
        for item in items:
            item_id = item["id"]
            if mode == "DELETE":
                catalog.items.pop(item_id, None)
            elif mode == "PATCH":
                if item_id in catalog.items:
                    _patch(catalog.items[item_id], item)
            elif mode == "POST" and post_existing == "ignore" and item_id in catalog.items:
                continue
            else:
                catalog.items[item_id] = {"id": item_id, **{f["name"]: item.get(f["name"])
                                                          for f in catalog.fields if f["name"] != "id"}}
        catalog.updated_at = iso_utc(now_utc())
    return Response(202, {"message": "success"})


def _patch(stored: dict[str, Any], item: Mapping[str, Any]) -> None:
    for key, value in item.items():
        if key == "id":
            continue
        if isinstance(value, dict) and value and set(value) <= {"$add", "$remove"}:
            current = list(stored.get(key) or [])
            removed = value.get("$remove", [])
            current = [v for v in current if v not in removed] + list(value.get("$add", []))
            stored[key] = current
        else:
            stored[key] = value


def item_errors(items: Any, catalog: Catalog, mode: str, existing_is_error: bool = False) -> list[dict[str, Any]]:
    """Every rule of braze-api.md §5.2 that the request breaks (and, for a POST with
    `existing_is_error`, ids already in the catalog)."""
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return [catalog_error("item-array-invalid", "'items' must be a non-empty array of objects", ["items"], [])]
    if len(items) > MAX_ITEMS:
        return [catalog_error("request-includes-too-many-items", "Your request includes too many items. "
                              "The maximum is 50.", ["items"], [])]
    found: dict[str, list[Any]] = {}

    def flag(error_id: str, item_id: Any) -> None:
        values = found.setdefault(error_id, [])
        if item_id not in values:
            values.append(item_id)

    missing = sum(1 for i in items if "id" not in i)
    ids = [i["id"] for i in items if "id" in i]
    for item_id in ids:
        if not isinstance(item_id, str):
            flag("ids-not-strings", item_id)
        elif len(item_id) > MAX_NAME:
            flag("ids-too-large", item_id)
        elif not _NAME.match(item_id):
            flag("invalid-ids", item_id)
    for item_id in ids:
        if isinstance(item_id, str) and ids.count(item_id) > 1:
            flag("ids-not-unique", item_id)
    if mode == "POST" and existing_is_error:
        for item_id in ids:
            if isinstance(item_id, str) and item_id in catalog.items:
                flag("item-already-exists", item_id)
    if mode != "DELETE":
        types = catalog.field_types()
        for item in items:
            for key, value in item.items():
                if key != "id":
                    problem = _value_problem(key, value, types, mode)
                    if problem:
                        flag(problem, item.get("id"))
    errors = []
    if missing:
        errors.append(catalog_error("items-missing-ids", f"There are {missing} item(s) that do not have ids",
                                    ["id"], []))
    for error_id, values in found.items():
        errors.append(catalog_error(error_id, ITEM_MESSAGES[error_id], ["id"], values))
    return errors


ITEM_MESSAGES = {
    "ids-not-strings": "Item IDs must be strings",
    "ids-too-large": "Item IDs can't be more than 250 characters",
    "invalid-ids": "Item IDs can only include letters, numbers, hyphens, and underscores",
    "ids-not-unique": "Item IDs must be unique in the request",
    "item-already-exists": "The item already exists in the catalog",
    "invalid-fields": "Some of the fields given do not exist in the catalog",
    "invalid-keys-in-value-object": "Item object keys can't include '.' or '$'",
    "items-too-large": "Item values can't be longer than 5,000 characters",
    "too-deep-nesting-in-value-object": "Item objects can't have more than 50 levels of nesting",
    "unable-to-coerce-value": "Item types can't be converted to the catalog field types",
}


def _value_problem(key: str, value: Any, types: dict[str, str], mode: str) -> str | None:
    if key not in types:
        return "invalid-fields"
    if value is None:
        return None
    field_type = types[key]
    if isinstance(value, dict) and value and set(value) <= {"$add", "$remove"}:
        ok = mode == "PATCH" and field_type == "array" and all(isinstance(v, list) for v in value.values())
        return None if ok else "unable-to-coerce-value"
    if isinstance(value, Mapping | list):
        if _bad_keys(value):
            return "invalid-keys-in-value-object"
        if _depth(value) > MAX_DEPTH:
            return "too-deep-nesting-in-value-object"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if len(text) > MAX_VALUE_CHARS:
        return "items-too-large"
    return None if _coercible(value, field_type) else "unable-to-coerce-value"


def _coercible(value: Any, field_type: str) -> bool:
    if field_type == "string":
        return isinstance(value, str)
    if field_type == "number":
        return is_number(value)
    if field_type == "boolean":
        return isinstance(value, bool)
    if field_type == "time":
        return parse_time(value) is not None
    if field_type == "geo":
        if isinstance(value, dict):
            return set(value) == {"latitude", "longitude"} and all(is_number(v) for v in value.values())
        return isinstance(value, list) and len(value) == 2 and all(is_number(v) for v in value)
    if field_type == "object":
        return isinstance(value, dict)
    return isinstance(value, list)


def _bad_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return any("." in k or "$" in k or _bad_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_bad_keys(v) for v in value)
    return False


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def get_items(app: Sandbox, request: Request) -> Response:
    name = request.params["catalog_name"]
    cursor = request.query_value("cursor")
    offset = 0
    if cursor is not None:
        try:
            offset = int(base64.urlsafe_b64decode(cursor.encode()).decode())
        except (ValueError, binascii.Error):
            offset = -1
        if offset < 0:
            return catalog_errors(400, [catalog_error("invalid-cursor", "Invalid cursor", ["cursor"], [cursor])])
    with app.store.lock:
        catalog = app.store.catalogs.get(name)
        if catalog is None:
            return _not_found(name)
        all_items = list(catalog.items.values())
        page = json.loads(json.dumps(all_items[offset:offset + PAGE_SIZE]))
    links = []
    base = f"{request.base_url}/catalogs/{quote(name)}/items"
    if offset > 0:
        links.append(f'<{base}?cursor={_cursor(max(0, offset - PAGE_SIZE))}>; rel="prev"')
    if offset + PAGE_SIZE < len(all_items):
        links.append(f'<{base}?cursor={_cursor(offset + PAGE_SIZE)}>; rel="next"')
    response = Response(200, {"items": page, "message": "success"})
    if links:
        response.headers["link"] = ", ".join(links)
    return response


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()
