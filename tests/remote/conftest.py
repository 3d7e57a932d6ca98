"""Remote state fixtures: moto's S3 server on 127.0.0.1 (the real S3 wire protocol, conditional writes
included; never a mock of the client library), a fresh bucket per test with the environment pointing
at it, and the example project keeping its state there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("obstore")
pytest.importorskip("moto")

from s3_bucket import S3, SECRET, STATE_KEY, use_remote_state  # noqa: E402


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket; the provider's standard environment points at it (as a CI runner's would)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL": s3_endpoint, "AWS_ALLOW_HTTP": "true"}.items():
        monkeypatch.setenv(name, value)
    return S3(s3_endpoint, f"reflow-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def remote_project(example_project: Path, s3: S3) -> Path:
    use_remote_state(example_project, s3.url(STATE_KEY))
    return example_project


@pytest.fixture
def slow_braze(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A sandbox answering after 60 ms, so an apply lasts long enough to be raced or killed."""
    import requests

    from engine.demo import PRODUCTS_CATALOG
    from engine.sandbox.testing import running_sandbox

    with running_sandbox(latency_ms=60) as handle:
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", handle.url)
        monkeypatch.setenv("BRAZE_API_KEY", handle.api_key)
        r = requests.post(f"{handle.url}/catalogs", json=PRODUCTS_CATALOG, headers=handle.headers, timeout=10)
        assert r.status_code == 201, r.text
        yield handle
