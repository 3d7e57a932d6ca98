"""SQL text helpers, one home for each: identifiers, string literals, JSON paths, and a database error's
first line for a message. Imports nothing."""

from __future__ import annotations

import json


def quote(name: str) -> str:
    """A quoted SQL identifier (DuckDB and PostgreSQL); an inner double quote is doubled."""
    return '"' + name.replace('"', '""') + '"'


def sql_str(value: str) -> str:
    """A SQL string literal; an inner single quote is doubled."""
    return "'" + value.replace("'", "''") + "'"


def json_path(name: str) -> str:
    """A JSON path literal selecting one top-level key, whatever characters it has."""
    return sql_str("$." + json.dumps(name))


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (DuckDB's carry context lines), or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
