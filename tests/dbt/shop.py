"""The dbt_shop fixture: a copy with raw data, on DuckDB or loaded into PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb

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


def rows_of(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
