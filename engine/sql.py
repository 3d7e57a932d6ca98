"""SQL text helpers, one home for each: identifiers, string literals, JSON paths, a database error's
first line for a message, and a DuckDB setting changed for a block. Imports nothing of Reflow's."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any


def quote(name: str) -> str:
    """A quoted SQL identifier (DuckDB and PostgreSQL); an inner double quote is doubled."""
    return '"' + name.replace('"', '""') + '"'


def sql_str(value: str) -> str:
    """A SQL string literal; an inner single quote is doubled."""
    return "'" + value.replace("'", "''") + "'"


def json_path(name: str) -> str:
    """A JSON path literal selecting one top-level key, whatever characters it has."""
    return sql_str("$." + json.dumps(name))


@contextlib.contextmanager
def duckdb_setting(con: Any, name: str, value: str, default: str) -> Iterator[None]:
    """DuckDB's setting `name` at `value` (SQL) while the block runs, then as it was (`default`: SQL, when
    it had none); put back outside any transaction the block aborted."""
    before = con.execute(f"SELECT current_setting('{name}')").fetchone()
    con.execute(f"SET {name} = {value}")
    try:
        yield
    finally:
        was = before[0] if before else None
        spelled = str(was).lower() if isinstance(was, bool) else sql_str(str(was)) if was else default
        con.execute(f"SET {name} = {spelled}")


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (DuckDB's carry context lines), or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# control characters whose JSON escape `\u00XX` holds a hex letter: PostgreSQL's to_json writes it in
# lowercase, DuckDB's (the local diff's composite keys) in uppercase
LETTER_ESCAPES = (0x0B, 0x0E, 0x0F, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x1F)


def uppercase_escapes(json_text: str) -> str:
    """SQL (PostgreSQL and DuckDB alike) respelling the `\\u00XX` escapes of LETTER_ESCAPES in the JSON text
    `json_text` with uppercase hex, as DuckDB spells them. Escaped backslashes (`\\\\`) are set aside first
    (JSON text holds no raw control character, so chr(1) can stand for them), so a key holding the literal
    text `\\u001f` keeps it."""
    respelled = f"replace({json_text}, '\\\\', chr(1))"
    for code in LETTER_ESCAPES:
        respelled = f"replace({respelled}, '\\u{code:04x}', '\\u{code:04X}')"
    return f"replace({respelled}, chr(1), '\\\\')"


def letter_escape_chars() -> str:
    """A regular expression (PostgreSQL and DuckDB) matching a raw character of LETTER_ESCAPES."""
    return "[" + "".join(f"\\x{code:02x}" for code in LETTER_ESCAPES) + "]"


def lowercase_escape() -> str:
    """A regular expression matching the JSON escape of a LETTER_ESCAPES character spelt in lowercase."""
    return "\\\\u00(" + "|".join(f"{code:02x}" for code in LETTER_ESCAPES) + ")"
