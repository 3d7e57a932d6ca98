"""SQL naming a row's Braze user as `IdentifierRule` does, shared by the fast paths (sql_users.py,
sql_cohorts.py). Expressions are over the planner's delta rows, aliased `r`: a live row's identifier is
its column, a removed row's is read from its old row (`r.__old_row`, JSON).

The checks are at least as strict as `validate.identifier_value`: an identifier failing one is not
rejected here, its row goes through the Python path, which judges it. Identifiers holding a control
character also go there: DuckDB's JSON escapes them otherwise than Python's (`\\u001F`, not `\\u001f`),
and a fast-path item must be byte for byte what prepare() builds.
"""

from __future__ import annotations

import json

from engine.destinations.braze import validate
from engine.sql import json_path, quote, sql_str

# SQL mirrors of validate.py's patterns, stricter where the regex engines differ (ASCII only).
EMAIL = (r"^[!#-'*+\-./0-9=?A-Z^_`a-z{|}~]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
         r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
PHONE = r"^\+?[0-9 ().-]{5,30}$"
INTEGERS = frozenset({"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                      "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"})
JSON_INTEGERS = ("BIGINT", "UBIGINT")      # json_type of an integer in an old row


def column(name: str) -> str:
    """A field of the delta row."""
    return "r." + quote(name)


def old_value(name: str, json_types: tuple[str, ...] = ("VARCHAR",)) -> tuple[str, str]:
    """(a removed row's value of field `name` as text, SQL true when its JSON type is one of `json_types`)."""
    path = json_path(name)
    types = ", ".join(sql_str(t) for t in json_types)
    return f"json_extract_string(r.__old_row, {path})", f"json_type(r.__old_row, {path}) IN ({types})"


def value_json(kind: str, alias_label: str, v: str) -> str:
    """SQL: the JSON of the user named by text `v`: the identifier (a JSON string), or for `user_alias`
    the alias object {"alias_name", "alias_label"}."""
    if kind == "user_alias":
        label = json.dumps(alias_label, ensure_ascii=False)
        return f"""'{{"alias_name":' || to_json({v})::VARCHAR || {sql_str(',"alias_label":' + label + '}')}"""
    return f"to_json({v})::VARCHAR"


def track_json(kind: str, alias_label: str, v: str) -> str:
    """SQL: the identifier part of a /users/track object (`"external_id":"u1"`, `"user_alias":{...}`)."""
    return f"{sql_str(json.dumps(kind) + ':')} || {value_json(kind, alias_label, v)}"


def check(kind: str, v: str) -> str:
    """SQL true when text `v` is an identifier of `kind` that validate.identifier_value accepts."""
    # a letter or digit, and no control character: one pass of one expression (two cost 1.5x as much)
    base = f"{v} IS NOT NULL AND regexp_full_match({v}, '[^\\x00-\\x1f]*[A-Za-z0-9][^\\x00-\\x1f]*')"
    if kind == "external_id":
        return f"({base} AND strlen({v}) <= {validate.EXTERNAL_ID_MAX_BYTES})"
    if kind == "user_alias":
        return f"({base} AND strlen({v}) <= {validate.ALIAS_MAX_BYTES})"
    if kind == "email":
        return f"({base} AND {email(v)})"
    if kind == "phone":
        return f"({base} AND {phone(v)})"
    return f"({base})"


def email(v: str) -> str:
    return f"regexp_full_match({v}, {sql_str(EMAIL)}) AND strlen({v}) <= {validate.STRING_MAX_CHARS}"


def phone(v: str) -> str:
    return f"regexp_full_match({v}, {sql_str(PHONE)}) AND length(regexp_replace({v}, '[^0-9]', '', 'g')) >= 5"
