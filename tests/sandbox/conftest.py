"""Fixtures: a fresh sandbox per test and a small client bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from engine.sandbox.testing import SandboxHandle, running_sandbox


class Client:
    """requests.Session bound to one sandbox, sending the right key and Content-Type by default."""

    def __init__(self, handle: SandboxHandle) -> None:
        self.handle = handle
        self.session = requests.Session()

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             data: bytes | str | None = None) -> requests.Response:
        sent = dict(self.handle.headers)
        sent.update(headers or {})
        kwargs: dict[str, Any] = {"headers": sent, "timeout": 10}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        return self.session.request(method, self.handle.url + path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.call("POST", path, body, **kwargs)

    def track(self, **arrays: Any) -> requests.Response:
        return self.post("/users/track", arrays)


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with running_sandbox() as handle:
        yield handle


@pytest.fixture
def client(sandbox: SandboxHandle) -> Iterator[Client]:
    c = Client(sandbox)
    yield c
    c.session.close()


@pytest.fixture
def make_client() -> Iterator[Any]:
    """Start a sandbox with options: `make_client(fail_429_first=2)` → Client."""
    stack: list[Any] = []

    def make(**options: Any) -> Client:
        manager = running_sandbox(**options)
        handle = manager.__enter__()
        c = Client(handle)
        stack.append((manager, c))
        return c

    yield make
    for manager, c in reversed(stack):
        c.session.close()
        manager.__exit__(None, None, None)
