"""Chaos fixtures (helpers live in faulty_sandbox.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faulty_sandbox import (
    CLIENT_TIMEOUT,
    CONCURRENCY,
    MAX_RETRIES,
    SHORT_WINDOWS,
    FaultySandbox,
    tune_connection,
)
from reflow_process import SLOW_CONCURRENCY, Processes

from engine.sandbox.testing import running_sandbox


@pytest.fixture
def chaos_project(example_project: Path) -> Path:
    tune_connection(example_project, timeout=CLIENT_TIMEOUT, max_retries=MAX_RETRIES, concurrency=CONCURRENCY)
    return example_project


@pytest.fixture
def slow_project(example_project: Path) -> Path:
    """The example tuned for runs that a test interrupts or watches: SLOW_CONCURRENCY requests in flight,
    a generous timeout (the sandbox answers after SLOW_LATENCY_MS)."""
    tune_connection(example_project, timeout=10, max_retries=2, concurrency=SLOW_CONCURRENCY)
    return example_project


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultySandbox]:
    """A sandbox with the products catalog created, env vars pointing the example at it, faults off."""
    import requests

    from engine.demo import PRODUCTS_CATALOG

    with running_sandbox(seed=7, bucket_limits=SHORT_WINDOWS) as handle:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", handle.url)
        monkeypatch.setenv("BRAZE_API_KEY", handle.api_key)
        r = requests.post(f"{handle.url}/catalogs", json=PRODUCTS_CATALOG, headers=handle.headers, timeout=10)
        assert r.status_code == 201, r.text
        yield FaultySandbox(handle)


@pytest.fixture
def processes() -> Iterator[Processes]:
    """`processes.start(project, *args)`: a `reflow` process; any still running is killed afterwards."""
    started = Processes()
    yield started
    started.stop_all()
