"""Running the sandbox inside a test process.

    with running_sandbox(fail_429_first=2) as sandbox:
        requests.post(f"{sandbox.url}/users/track", headers=sandbox.headers, json={...})
        assert sandbox.user("u1")["custom_attributes"]["plan"] == "pro"
        assert sandbox.stats()["data_points"] == 3

Options are the CLI flags as keyword arguments (`legacy_limits`, `latency_ms`, `fail_5xx_rate`,
`fail_429_first`, `reject_external_ids`, `permissions`, `rate_limit="N/SECONDS"`,
`drop_connection_rate`, `seed`, `error_codes`, `ratelimit_headers`, `max_array_length`, `state`,
`subscription_groups`, `long_strings`, `api_key`, `process_then_fail_rate`,
`process_then_fail_kind`, `visibility_delay_ms`, `processed_counts`, `catalog_post_existing`,
`deleted_counts`, `admin_token`), plus `bucket_limits` for other endpoints.

The handle reads the store directly; for HTTP calls to /_sandbox/ send `handle.admin_headers`
(it carries the admin token when one is set). `stats()["applied_then_failed"]` lists the
requests the process-then-fail fault applied and then failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import admin
from .app import Sandbox
from .options import SandboxOptions
from .server import SandboxServer, make_server, start_in_thread
from .store import Store


class SandboxHandle:
    """A running sandbox: its URL and key, and direct reads of its store (no HTTP round trip)."""

    def __init__(self, server: SandboxServer) -> None:
        self._server = server
        self.sandbox: Sandbox = server.sandbox
        self.url: str = server.url
        self.api_key: str = self.sandbox.options.api_key

    @property
    def store(self) -> Store:
        return self.sandbox.store

    @property
    def headers(self) -> dict[str, str]:
        """Headers a well-behaved client sends."""
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}

    @property
    def admin_headers(self) -> dict[str, str]:
        """Headers for HTTP calls to /_sandbox/ (the admin token, when the sandbox has one)."""
        token = self.sandbox.options.admin_token
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    def stats(self) -> dict[str, Any]:
        return admin.stats(self.sandbox)

    def applied_then_failed(self) -> list[dict[str, Any]]:
        """Requests applied to the store and then answered 500/504 or dropped (process-then-fail)."""
        return list(self.stats()["applied_then_failed"])

    def user(self, external_id: str | None = None, **query: str) -> dict[str, Any] | None:
        """A full profile by external_id (or email=, phone=, braze_id=, alias_name=+alias_label=); None if absent."""
        if external_id is not None:
            query["external_id"] = external_id
        with self.store.lock:
            found = admin.find_user(self.store, query)
            return None if found is None else admin.profile(self.store, found)

    def users(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [admin.profile(self.store, u) for u in self.store.users.values()]

    def events(self, external_id: str | None = None) -> list[dict[str, Any]]:
        with self.store.lock:
            return admin.rows(self.store, "events", external_id)

    def purchases(self, external_id: str | None = None) -> list[dict[str, Any]]:
        with self.store.lock:
            return admin.rows(self.store, "purchases", external_id)

    def catalog_items(self, name: str) -> list[dict[str, Any]] | None:
        with self.store.lock:
            return admin.catalog_items(self.store, name)

    def connections_opened(self) -> int:
        """TCP connections accepted so far (keep-alive reuse shows as fewer connections than requests)."""
        return self._server.connections_opened

    def reset(self) -> None:
        self.sandbox.reset()

    def save(self) -> str | None:
        return self.sandbox.save_state()


@contextmanager
def running_sandbox(**options: Any) -> Iterator[SandboxHandle]:
    """Start the sandbox on 127.0.0.1 and a free port in a background thread; stop it on exit
    (saving the store when `state=` is given)."""
    server = make_server(SandboxOptions.build(**options), "127.0.0.1", 0)
    thread = start_in_thread(server)
    try:
        yield SandboxHandle(server)
    finally:
        server.stop()
        thread.join(timeout=5)
        server.sandbox.save_state()
