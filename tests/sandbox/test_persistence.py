"""--state: the store persists as JSON, loads on start, saves on shutdown and on POST /_sandbox/save."""

from __future__ import annotations

import json

import pytest
import requests

from engine.sandbox.app import StateFileError
from engine.sandbox.testing import running_sandbox

T = "2024-01-01T00:00:00Z"


def fill(handle):
    s = requests.Session()
    s.headers.update(handle.headers)
    s.post(handle.url + "/users/track", json={
        "attributes": [{"external_id": "u1", "email": "a@x.com", "plan": "pro"},
                       {"user_alias": {"alias_name": "n", "alias_label": "l"}, "_update_existing_only": False}],
        "events": [{"external_id": "u1", "name": "e", "time": T}]}, timeout=5)
    s.post(handle.url + "/catalogs", json={"catalogs": [{"name": "c", "fields": [{"name": "id", "type": "string"}]}]},
           timeout=5)
    s.post(handle.url + "/catalogs/c/items", json={"items": [{"id": "i1"}]}, timeout=5)


def test_state_survives_a_restart(tmp_path):
    state = tmp_path / "sandbox.json"
    with running_sandbox(state=str(state)) as handle:
        fill(handle)
        before = handle.users()
    assert json.loads(state.read_text())["version"] == 1
    with running_sandbox(state=str(state)) as handle:
        assert handle.users() == before
        assert handle.user(email="a@x.com")["external_id"] == "u1"
        assert handle.user(alias_name="n", alias_label="l") is not None
        assert handle.catalog_items("c") == [{"id": "i1"}]
        assert handle.stats()["data_points"] == 3
        handle.store.create_user("u2")          # new ids keep being unique after a load
        assert len({u["braze_id"] for u in handle.users()}) == 3


def test_save_endpoint_writes_the_file(tmp_path):
    state = tmp_path / "s.json"
    with running_sandbox(state=str(state)) as handle:
        fill(handle)
        r = requests.post(handle.url + "/_sandbox/save", timeout=5)
        assert r.json() == {"message": "success", "state": str(state)}
        assert len(json.loads(state.read_text())["users"]) == 2


def test_missing_state_file_starts_empty(tmp_path):
    with running_sandbox(state=str(tmp_path / "new.json")) as handle:
        assert handle.users() == []


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    state = tmp_path / "bad.json"
    state.write_text("{not json")
    with pytest.raises(StateFileError, match="cannot read sandbox state file"):
        with running_sandbox(state=str(state)):
            pass
