"""Registered secrets (API keys, secret settings) in a plan's rows: found in SQL where rows never reach
Python, found and named in Python where they do, and masked so that a plan row refused for one keeps
nothing of it (engine/errors.py owns the secrets themselves)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from engine import diff
from engine.errors import contains_secret, registered_secrets, scrub
from engine.sql import sql_str

SECRET_REASON = ("holds a secret value (the value of a secret setting such as an API key, or of a secret "
                 "environment variable)")


def secret_free_sql(columns: Sequence[str]) -> str:
    """SQL true for a row none of whose `columns` (text) holds a registered secret, in any of its forms."""
    hits = [f"contains(coalesce({c}, ''), {sql_str(s)})" for c in columns for s in registered_secrets()]
    return f"NOT ({' OR '.join(hits)})" if hits else "true"


def scrubbed_json(text: str) -> str:
    """A row's JSON with every registered secret masked and the JSON still valid: a string holding one
    has it replaced, a number or boolean whose text holds one becomes the string "***"."""
    def masked(value: Any) -> Any:
        if isinstance(value, dict):
            return {scrub(k): masked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [masked(v) for v in value]
        if isinstance(value, str):
            return scrub(value)
        return "***" if value is not None and contains_secret(json.dumps(value)) else value
    return json.dumps(masked(json.loads(text)), ensure_ascii=False, separators=(",", ":"))


def holding_secrets(row: diff.DeltaRow, item: Any) -> list[str]:
    """Where a plan row holds a registered secret: 'the primary key', field names, else 'the payload'."""
    found = ["the primary key"] if contains_secret(row.key) else []
    found += [f for f, v in (row.new_row or {}).items()
              if contains_secret(json.dumps(v, ensure_ascii=False, default=str))]
    if not found and item is not None and contains_secret(item.item_json):
        found.append("the payload")
    return found


def secret_in_values(fields: Sequence[diff.Column], prefix: str) -> str | None:
    """SQL over a projected relation (`prefix`: its alias and a dot) true for a row whose key or values
    hold a registered secret; None when none is registered. The texts (strings, nested values, the key)
    are searched joined by NUL (which no secret holds); values whose text is a number, a boolean, a date or
    a time only for secret forms that could be spelt with their characters (a realistic API key cannot)."""
    secrets = registered_secrets()
    if not secrets:
        return None
    texts = [f"{prefix}{diff.KEY}"]
    plain: list[str] = []
    for f in fields:
        (plain if _spelt_plainly(f.type) else texts).append(f"CAST({diff.normalized(f, prefix)} AS VARCHAR)")
    joined = f"concat_ws(chr(0), {', '.join(texts)})"
    hits = [f"contains({joined}, {sql_str(s)})" for s in secrets]
    hits += [f"contains(coalesce({p}, ''), {sql_str(s)})" for p in plain for s in secrets if set(s) <= _PLAIN_CHARS]
    return " OR ".join(hits)


# every character a number, boolean, date or time renders with (DuckDB's casts, the ISO forms)
_PLAIN_CHARS = frozenset("0123456789.:+- eETZinfatyrulsINFAN")
_PLAIN_TYPES = re.compile(r"(TINYINT|SMALLINT|INTEGER|INT|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT"
                          r"|FLOAT|DOUBLE|DOUBLE PRECISION|REAL|(DECIMAL|NUMERIC)(\(\d+, ?\d+\))?|BOOLEAN|DATE"
                          r"|TIMESTAMP(_S|_MS|_NS|TZ)?(\(\d\))?( WITH(OUT)? TIME ZONE)?|TIME(TZ)?( WITH(OUT)? TIME ZONE)?)")


def _spelt_plainly(kind: str) -> bool:
    """A scalar whose text is made of `_PLAIN_CHARS` only: a number, a boolean, a date or a time."""
    return _PLAIN_TYPES.fullmatch(kind.strip().upper()) is not None
