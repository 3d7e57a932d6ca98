"""Shared fixtures: the example project copied to tmp_path, and the Braze sandbox on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import Cli

ROOT = Path(__file__).resolve().parent.parent
PRODUCTS_CATALOG = None  # set lazily from engine.demo


@pytest.fixture(autouse=True, scope="session")
def _known_valid_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Documents found valid (engine/known_valid.py) are recorded in a folder of the test session, not in
    the user's cache; subprocesses inherit it."""
    before = os.environ.get("REFLOW_CACHE_DIR")
    os.environ["REFLOW_CACHE_DIR"] = str(tmp_path_factory.mktemp("reflow-cache"))
    yield
    if before is None:
        os.environ.pop("REFLOW_CACHE_DIR", None)
    else:
        os.environ["REFLOW_CACHE_DIR"] = before


@pytest.fixture
def example_project(tmp_path: Path) -> Path:
    """A copy of the repository's example project with its warehouse built."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copy(ROOT / "reflow_project.yml", dest / "reflow_project.yml")
    shutil.copytree(ROOT / "models", dest / "models")
    shutil.copytree(ROOT / "syncs", dest / "syncs")
    from engine.example import build_warehouse

    build_warehouse(dest / "warehouse.duckdb", customers=300)
    location = os.environ.get("REFLOW_TEST_DIFF")      # run a suite with the diff elsewhere (hashes, warehouse)
    if location:
        path = dest / "reflow_project.yml"
        path.write_text(path.read_text().replace("warehouse: {type: duckdb, path: warehouse.duckdb}",
                                                 f"warehouse: {{type: duckdb, path: warehouse.duckdb, diff: {location}}}"))
    return dest


@pytest.fixture
def sandbox() -> Iterator[Any]:
    from engine.sandbox.testing import running_sandbox

    with running_sandbox() as handle:
        yield handle


@pytest.fixture
def braze_env(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the example connection at the sandbox, with its catalog created as a user would."""
    import requests

    from engine.demo import PRODUCTS_CATALOG

    monkeypatch.setenv("BRAZE_REST_ENDPOINT", sandbox.url)
    monkeypatch.setenv("BRAZE_API_KEY", sandbox.api_key)
    r = requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
    assert r.status_code == 201, r.text
    return sandbox


@pytest.fixture
def cli(example_project: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(example_project, capsys)
