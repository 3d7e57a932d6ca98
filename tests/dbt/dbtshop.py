"""The dbt_shop fixture: a copy with raw data, on DuckDB or loaded into PostgreSQL; the CLI on it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest
from cli_runner import Cli

from engine.example import TABLES, build_warehouse, mutate_warehouse

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "dbt_shop"
RAW_TABLES = ("customers", "orders", "order_items", "gdpr_requests")
_PG_TYPES = {"VARCHAR": "text", "DATE": "date", "TIMESTAMP": "timestamp", "BOOLEAN": "boolean",
             "DECIMAL(10,2)": "numeric(10,2)", "INTEGER": "integer", "VARCHAR[]": "text[]"}


def copy_shop(dest: Path, *, customers: int = 300) -> Path:
    """The fixture copied to `dest`, its raw tables built into shop.duckdb (the dev target's file)."""
    shutil.copytree(FIXTURE, dest, ignore=shutil.ignore_patterns("target", "logs", ".reflow", "*.duckdb*"))
    build_warehouse(dest / "shop.duckdb", customers=customers)
    return dest


def mutate(project: Path, step: int = 1) -> dict[str, int]:
    return mutate_warehouse(project / "shop.duckdb", step=step)


def _pg_type(duck: str) -> str:
    return _PG_TYPES.get(duck, "jsonb")   # the STRUCT column (preferences) becomes jsonb


def load_postgres(project: Path, dsn: str, schema: str) -> None:
    """(Re)load the raw tables of shop.duckdb into PostgreSQL schema `schema`."""
    import psycopg2
    from psycopg2.extras import Json, execute_values

    con = duckdb.connect(str(project / "shop.duckdb"), read_only=True)
    pg = psycopg2.connect(dsn)
    try:
        with pg, pg.cursor() as cur:
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            for table in RAW_TABLES:
                columns = TABLES[table]
                cur.execute(f'DROP TABLE IF EXISTS "{schema}"."{table}" CASCADE')
                cur.execute(f'CREATE TABLE "{schema}"."{table}" ('
                            + ", ".join(f'"{n}" {_pg_type(t)}' for n, t in columns) + ")")
                rows = con.execute(f"SELECT {', '.join(n for n, _ in columns)} FROM {table}").fetchall()
                adapted = [tuple(Json(v) if isinstance(v, dict) else v for v in row) for row in rows]
                if adapted:
                    execute_values(cur, f'INSERT INTO "{schema}"."{table}" VALUES %s', adapted, page_size=2000)
    finally:
        pg.close()
        con.close()


def drop_schemas(dsn: str, *schemas: str) -> None:
    import psycopg2

    pg = psycopg2.connect(dsn)
    try:
        with pg, pg.cursor() as cur:
            for schema in schemas:
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        pg.close()


ShopCli = Cli      # `reflow ...` on a dbt_shop copy (optionally with --target)


def pg_dsn() -> str:
    dsn = os.environ.get("REFLOW_TEST_PG")
    in_ci = os.environ.get("CI", "").lower() == "true"
    if not dsn:
        if in_ci:
            pytest.fail("REFLOW_TEST_PG is not set in CI (.ci/run starts PostgreSQL and sets it)")
        pytest.skip("no PostgreSQL configured: set REFLOW_TEST_PG (see .ci/run)")
    try:
        import psycopg2

        psycopg2.connect(dsn, connect_timeout=5).close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable server
        if in_ci:
            pytest.fail(f"PostgreSQL at REFLOW_TEST_PG is unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL at REFLOW_TEST_PG is unreachable: {exc}")
    return dsn


def side_project(shop: Path, model_sql: str) -> Path:
    """A Reflow project in a subfolder of the dbt project, with a model of its own."""
    side = shop / "reflow_side"
    (side / "models").mkdir(parents=True)
    (side / "syncs").mkdir()
    text = (shop / "reflow_project.yml").read_text().replace("warehouse: {type: dbt}",
                                                             "warehouse: {type: dbt, project_dir: ..}")
    (side / "reflow_project.yml").write_text(text)
    (side / "models" / "vip_customers.sql").write_text(model_sql)
    (side / "syncs" / "vip.yml").write_text(
        "name: vip\nmodel: vip_customers\nprimary_key: customer_id\n"
        "destination: {connection: braze, object: users, identifier: {external_id: customer_id}}\n")
    return side
