"""dbt fixtures: the dbt_shop project on DuckDB, and on a real PostgreSQL (REFLOW_TEST_PG).

PostgreSQL tests skip only when no server is configured outside CI; in CI (CI=true, where
.ci/run starts PostgreSQL) a missing or unreachable server fails them."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dbtshop import copy_shop, drop_schemas, load_postgres, pg_dsn  # noqa: E402


@pytest.fixture(autouse=True)
def _dbt_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DBT_PROFILES_DIR", "DBT_TARGET", "SHOP_TARGET", "SHOP_RAW_SCHEMA", "SHOP_PG_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "1")


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    return copy_shop(tmp_path / "dbt_shop")


@pytest.fixture
def pg(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A reachable PostgreSQL with two fresh schemas (raw, models), exported as SHOP_* env vars."""
    dsn = pg_dsn()
    parts = dict(p.split("=", 1) for p in dsn.split())
    tag = uuid.uuid4().hex[:8]
    info = {"dsn": dsn, "raw": f"reflow_raw_{tag}", "schema": f"reflow_shop_{tag}"}
    for key, env in (("host", "SHOP_PG_HOST"), ("port", "SHOP_PG_PORT"), ("user", "SHOP_PG_USER"),
                     ("dbname", "SHOP_PG_DBNAME"), ("password", "SHOP_PG_PASSWORD")):
        if key in parts:
            monkeypatch.setenv(env, parts[key])
    monkeypatch.setenv("SHOP_RAW_SCHEMA", info["raw"])
    monkeypatch.setenv("SHOP_PG_SCHEMA", info["schema"])
    try:
        yield info
    finally:
        drop_schemas(dsn, info["raw"], info["schema"])


@pytest.fixture
def pg_shop(shop: Path, pg: dict[str, str]) -> Path:
    load_postgres(shop, pg["dsn"], pg["raw"])
    return shop
