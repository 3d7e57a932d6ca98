"""Catalog answers as Braze gives them: a 400 naming items rejects exactly those, a missing catalog is named."""

from __future__ import annotations

import json

import pytest
import requests

from engine.destinations.base import ACKNOWLEDGED, REJECTED, Batch
from engine.destinations.braze.destination import make_destination
from engine.errors import DestinationError
from engine.project import ConnectionConfig
from engine.sandbox.testing import running_sandbox
from engine.specs import DestinationSpec, SyncSpec

pytestmark = pytest.mark.e2e

CATALOG = {"catalogs": [{"name": "gear", "description": "test", "fields": [
    {"name": "id", "type": "string"}, {"name": "price", "type": "number"}]}]}


def destination(url: str, key: str, catalog: str = "gear"):  # type: ignore[no-untyped-def]
    spec = SyncSpec("gear", "gear", ("id",), DestinationSpec("braze", "catalog_items", catalog=catalog, item_id="id"),
                    path="syncs/gear.yml")
    return make_destination(ConnectionConfig("braze", endpoint=url, max_retries=0), key, spec)


def test_one_bad_item_of_fifty_is_rejected_alone_in_two_requests():
    with running_sandbox() as sandbox:
        requests.post(f"{sandbox.url}/catalogs", json=CATALOG, headers=sandbox.headers, timeout=10)
        items = [json.dumps({"id": f"g{i}", "price": "cheap" if i == 17 else i}) for i in range(50)]
        dest = destination(sandbox.url, sandbox.api_key)
        before = sandbox.stats()["requests_total"]
        results = list(dest.send(Batch("PUT /catalogs/gear/items", tuple(f"g{i}" for i in range(50)), tuple(items))))
        dest.close()
        assert sandbox.stats()["requests_total"] - before == 2          # not 13 bisecting requests
        assert [r.key for r in results if r.outcome == REJECTED] == ["g17"]
        assert "unable-to-coerce-value" in (results[17].reason or "")
        assert all(r.outcome == ACKNOWLEDGED for i, r in enumerate(results) if i != 17)
        assert len(sandbox.catalog_items("gear") or []) == 49


def test_a_missing_catalog_is_named():
    with running_sandbox() as sandbox:
        dest = destination(sandbox.url, sandbox.api_key, catalog="nope")
        with pytest.raises(DestinationError, match="Braze has no catalog 'nope' \\(catalog-not-found\\)"):
            dest.send(Batch("PUT /catalogs/nope/items", ("a",), ('{"id":"a"}',)))
        dest.close()
