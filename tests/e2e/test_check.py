"""`reflow check`, the "test connection" of the example project, through the CLI against the sandbox:
each permission a sync needs is probed, a missing one is named, and nothing in Braze changes."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cli_runner import Cli

from engine.destinations.braze.check import (
    MISSING,
    NOT_CHECKED,
    OK,
    PERMISSIONS,
    Need,
    probe_connection,
)
from engine.destinations.braze.client import BrazeClient
from engine.destinations.braze.destination import USER_AGENT
from engine.project import Secret
from engine.sandbox.options import ALL_PERMISSIONS
from engine.sandbox.testing import SandboxHandle, running_sandbox

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# What the example project's syncs need (README, "Permissions each object needs").
NEEDED = {
    "users.track": ("POST /users/track", "braze_users, high_value_customers, newsletter_subscriptions, order_events, purchases"),
    "users.delete": ("POST /users/delete", "gdpr_deletes"),
    "catalogs.replace_items": ("PUT /catalogs/products/items", "catalog_products"),
    "catalogs.update_items": ("PATCH /catalogs/products/items", "catalog_products"),
    "catalogs.delete_items": ("DELETE /catalogs/products/items", "catalog_products"),
    # the cohort's entering members wait for their user (missing_users: wait)
    "users.export.ids": ("POST /users/export/ids", "high_value_customers"),
}


NEWSLETTER = "5b7b9a4e-1c43-4e7a-9f3b-2d5f0c8e1a11"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The example project's files (no warehouse: checking needs none)."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copy(ROOT / "reflow_project.yml", dest / "reflow_project.yml")
    shutil.copytree(ROOT / "models", dest / "models")
    shutil.copytree(ROOT / "syncs", dest / "syncs")
    return dest


@pytest.fixture
def check(project: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(project, capsys)


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sandbox state holding a profile, an event, a catalog item and a subscription state, so that a
    probe that wrote anything would show."""
    from engine.demo import PRODUCTS_CATALOG

    path = tmp_path_factory.mktemp("seed") / "braze.json"
    with running_sandbox(state=str(path)) as sandbox:
        def send(method: str, route: str, body: Any) -> int:
            return requests.request(method, f"{sandbox.url}{route}", json=body, headers=sandbox.headers,
                                    timeout=10).status_code

        assert send("POST", "/catalogs", PRODUCTS_CATALOG) == 201
        fields = [f["name"] for f in PRODUCTS_CATALOG["catalogs"][0]["fields"] if f["name"] != "id"]
        assert send("PUT", "/catalogs/products/items", {"items": [{"id": "p1", **dict.fromkeys(fields)}]}) == 202
        assert send("POST", "/users/track", {
            "attributes": [{"external_id": "u1", "email": "u1@example.com", "loyalty_tier": "gold"}],
            "events": [{"external_id": "u1", "name": "order_placed", "time": "2024-01-01T00:00:00Z"}]}) == 201
        assert send("POST", "/subscription/status/set", {"subscription_group_id": NEWSLETTER,
                                                          "subscription_state": "subscribed",
                                                          "external_id": ["u1"]}) == 201
    return path


def seeded(seed: Path, tmp_path: Path, permissions: str | None = None) -> Any:
    """A running sandbox (context manager) starting from the seeded state, with these permissions."""
    state = tmp_path / f"braze-{time.monotonic_ns()}.json"
    shutil.copy(seed, state)
    options: dict[str, Any] = {"state": str(state)}
    if permissions is not None:
        options["permissions"] = permissions
    return running_sandbox(**options)


def braze_state(sandbox: SandboxHandle) -> str:
    with sandbox.store.lock:
        return json.dumps(sandbox.store.to_json(), sort_keys=True, default=str)


@pytest.fixture
def pointed(seed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Point the example connection at a seeded sandbox with the permissions given."""
    opened: list[Any] = []

    def start(permissions: str | None = None) -> SandboxHandle:
        handle = seeded(seed, tmp_path, permissions)
        sandbox = handle.__enter__()
        opened.append(handle)
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
        monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
        return sandbox

    yield start
    for handle in opened:
        handle.__exit__(None, None, None)


def rows(out: str) -> dict[str, tuple[str, str, str]]:
    """permission -> (request, needed by, result) from the printed table."""
    found = {}
    for line in out.splitlines():
        parts = [p for p in line.strip().split("  ") if p.strip()]
        if parts and parts[0].strip() in PERMISSIONS:
            found[parts[0].strip()] = tuple(p.strip() for p in parts[1:4])
    return found  # type: ignore[return-value]


def test_a_key_with_every_needed_permission_passes_and_writes_nothing(check: Cli, pointed: Any) -> None:
    sandbox = pointed()
    before = braze_state(sandbox)
    code, out, err = check("check")
    assert code == 0, out + err
    assert f"braze  {sandbox.url}  API key: accepted" in out
    assert rows(out) == {p: (*NEEDED[p], OK) for p in NEEDED}
    assert "OK: every connection answers" in out
    assert braze_state(sandbox) == before


def test_missing_permissions_are_named_and_exit_1(check: Cli, pointed: Any) -> None:
    sandbox = pointed("users.track,catalogs.replace_items,catalogs.update_items,users.export.ids")
    before = braze_state(sandbox)
    code, out, _ = check("check")
    assert code == 1
    found = rows(out)
    assert found["users.delete"] == (*NEEDED["users.delete"], "missing (Braze answered 403 Access Denied)")
    assert found["catalogs.delete_items"] == (*NEEDED["catalogs.delete_items"],
                                              "missing (Braze answered 403 Access Denied)")
    assert {p: r[2] for p, r in found.items() if p not in ("users.delete", "catalogs.delete_items")} == {
        "users.track": OK, "catalogs.replace_items": OK,
        "catalogs.update_items": OK, "users.export.ids": OK}
    assert "Missing 2 permissions: users.delete (braze), catalogs.delete_items (braze)." in out
    assert braze_state(sandbox) == before


@pytest.mark.parametrize("permission", list(NEEDED))
def test_each_probe_tells_granted_from_missing_and_writes_nothing(seed: Path, tmp_path: Path,
                                                                  permission: str) -> None:
    """Every probe against the sandbox, with the permission and without it."""
    method, path = ("POST", "/users/export/ids") if permission == "users.export.ids" else NEEDED[permission][0].split()
    need = Need(permission, method, path, syncs=("s",), catalog="products" if "catalogs" in permission else None)
    others = sorted(ALL_PERMISSIONS - {permission})
    for granted, expected in ((sorted(ALL_PERMISSIONS), OK), (others, MISSING)):
        with seeded(seed, tmp_path, ",".join(granted)) as sandbox:
            before = braze_state(sandbox)
            assert '"u1"' in before and '"p1"' in before and NEWSLETTER in before
            client = BrazeClient(connection="braze", base_url=sandbox.url, api_key=Secret(sandbox.api_key),
                                 user_agent=USER_AGENT, timeout=5, max_retries=0, rates={})
            try:
                result = probe_connection("braze", sandbox.url, [need], client.probe)
            finally:
                client.close()
            assert result.key == "accepted", result
            assert [(p.permission, p.result) for p in result.permissions if p.permission == permission] == [
                (permission, expected)]
            assert result.problems == ()
            assert braze_state(sandbox) == before


def test_a_wrong_key_is_refused(check: Cli, pointed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pointed()
    monkeypatch.setenv("BRAZE_API_KEY", "not-the-key")
    code, out, _ = check("check")
    assert code == 1
    assert "API key: refused (401)" in out
    assert all(r[2] == NOT_CHECKED for r in rows(out).values())
    assert "refused the API key of connection 'braze' (401)" in out


def test_a_missing_catalog_is_a_problem(check: Cli, pointed: Any) -> None:
    sandbox = pointed()
    with sandbox.store.lock:
        del sandbox.store.catalogs["products"]
    code, out, _ = check("check")
    assert code == 1
    assert rows(out)["catalogs.replace_items"][2] == OK                      # the key has the permission
    assert ("problem: catalog 'products' does not exist in this workspace; create it in Braze before syncing "
            "catalog_products") in out


def test_an_unset_key_is_reported(check: Cli, pointed: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pointed()
    monkeypatch.delenv("BRAZE_API_KEY")
    code, out, _ = check("check")
    assert code == 1
    assert "API key: not checked: no API key" in out
    assert "environment variable BRAZE_API_KEY is not set" in out


def test_a_closed_port_is_named_at_once(check: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("BRAZE_API_KEY", "k")
    started = time.monotonic()
    code, out, _ = check("check")
    assert time.monotonic() - started < 5
    assert code == 1
    assert f"problem: cannot connect to 127.0.0.1:{port}: connection refused" in out


def test_a_host_that_never_answers_is_named_within_the_timeout(project: Path, check: Cli,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.create_server(("127.0.0.1", 0))          # takes connections, never answers
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    text = (project / "reflow_project.yml").read_text()
    (project / "reflow_project.yml").write_text(text.replace(
        "    api_key: \"{{ env_var('BRAZE_API_KEY') }}\"", "    api_key: \"{{ env_var('BRAZE_API_KEY') }}\"\n    timeout: 1"))
    monkeypatch.setenv("BRAZE_REST_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("BRAZE_API_KEY", "k")
    try:
        started = time.monotonic()
        code, out, _ = check("check")
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()
    assert code == 1
    assert elapsed < 3                                           # one probe, one timeout, no retries
    assert f"problem: no answer from 127.0.0.1:{port} within 1 s" in out
