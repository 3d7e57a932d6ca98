"""A model is one read-only query: checked before it runs on the planner's DuckDB connection.

The planner's connection also holds Reflow's state (catalog `rstate`) and its scratch tables
(`memory`), so a model must not be able to touch them. Before a model's SQL is embedded in any query:

    exactly one statement, a SELECT (or WITH … SELECT)    `…) AS m; COPY … TO 'file'; SELECT …` is refused
    no table of the catalogs `rstate` or `memory`          the state's snapshots, plans, payloads
    no table function that reads tables named in strings   query(), query_table()

Reading files the project author points at (read_csv, read_parquet, …) stays possible, as in dbt: that
is the author's data. The connection itself refuses to install extensions (state._connect).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb

from engine.errors import WarehouseError
from engine.sql import first_line

RESERVED_CATALOGS = frozenset({"rstate", "memory", "system", "temp"})
STRING_TABLE_FUNCTIONS = frozenset({"query", "query_table"})


def check_model_sql(con: duckdb.DuckDBPyConnection, sql: str, *, model: str) -> None:
    """WarehouseError naming the model unless `sql` is one SELECT that reads no Reflow table."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise WarehouseError(f"model '{model}' is not one SQL query: {first_line(exc)}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kinds = ", ".join(s.type.name for s in statements) or "none"
        raise WarehouseError(f"model '{model}' must be exactly one SELECT (or WITH … SELECT) statement; it has: "
                             f"{kinds}. A model reads data; it cannot run other statements")
    row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {}
    for kind, names in _references(tree):
        if kind == "table" and RESERVED_CATALOGS & {n.lower() for n in names[:2] if n}:
            raise WarehouseError(f"model '{model}' reads {'.'.join(n for n in names if n)}: the catalogs "
                                 f"{', '.join(sorted(RESERVED_CATALOGS))} are Reflow's own, not the warehouse's")
        if kind == "function" and names[0].lower() in STRING_TABLE_FUNCTIONS:
            raise WarehouseError(f"model '{model}' calls {names[0]}(): a model names the tables it reads "
                                 "(ref(), source() or a table name), not a string of SQL")


def _references(node: Any) -> Iterator[tuple[str, tuple[str, ...]]]:
    """("table", (catalog, schema, name)) and ("function", (name,)) for every table and table function."""
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE":
            yield "table", (str(node.get("catalog_name") or ""), str(node.get("schema_name") or ""),
                            str(node.get("table_name") or ""))
        if node.get("type") == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
            yield "function", (str(node["function"].get("function_name") or ""),)
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)

