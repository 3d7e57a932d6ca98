"""The fast path for `users`: /users/track attributes objects built by DuckDB.

For added and changed rows whose values SQL can prove valid by Braze's rules, DuckDB renders
the same object `UsersPayloads.prepare` would build (same keys, same values, same data points).
The checks here are deliberately at least as strict as `validate.py`: a row that fails any of
them is not rejected here, it simply goes through the Python path, which stays authoritative.
Unusual types (MAP, UNION, lists of objects), the JSON values the SQL does not judge (`_json_check`:
floats, nulls, deeper nesting) and rows with nothing to send also go through Python. A property test
(tests/unit/test_braze_sql_users.py) checks both paths agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine.destinations.base import SqlItems, is_time_type
from engine.destinations.braze import datapoints, sql_ident, validate
from engine.destinations.braze.payloads import UsersPayloads
from engine.sql import sql_str

_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_SCALAR_STRING = ("VARCHAR", "TIMESTAMP", "DATE", "TIME", "INTERVAL", "UUID", "BIT", "ENUM", "BLOB")
_NUMBER = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
           "FLOAT", "DOUBLE", "REAL", "HUGEINT", "UHUGEINT", "DECIMAL")
_FLOATS = re.compile(r"\b(?:DOUBLE|FLOAT|REAL)\b")        # a nested type holding floats: NaN is possible
_STANDARD = validate.STANDARD_FIELDS


# numbers that are always finite: integers and decimals (their normalised DOUBLE cannot overflow)
_FINITE = re.compile(r"^(?:U?(?:TINY|SMALL|BIG|HUGE)?INT(?:EGER)?|DECIMAL)\b")
# standard fields whose value is any short text (validate.STRING_MAX_CHARS): a time's ISO text is one
_TEXT_FIELDS = frozenset(_STANDARD) - {"email", "phone", "country", "language", "gender", "email_subscribe",
                                       "push_subscribe", "dob"}


def _years_typed(v: str, type_text: str, first: str = "0000") -> str:
    """SQL: a typed TIMESTAMP or DATE whose normalised text (UTC) has a year from `first` to
    validate.YEAR_MAX (infinity compares past every time): what `time_range` checks on the text,
    without formatting it."""
    t = type_text.strip().upper()
    last = f"{validate.YEAR_MAX + 1:04d}-01-01"
    if t == "DATE":
        return f"({v} >= DATE '{first}-01-01' AND {v} < DATE '{last}')"
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        return f"({v} >= TIMESTAMPTZ '{first}-01-01 00:00:00+00' AND {v} < TIMESTAMPTZ '{last} 00:00:00+00')"
    return f"({v}::TIMESTAMP >= TIMESTAMP '{first}-01-01' AND {v}::TIMESTAMP < TIMESTAMP '{last}')"


@dataclass(frozen=True)
class _Kind:
    """What a column's normalised value is: 'string' | 'number' | 'bool' | 'object' | 'list' | None
    (None: not for the fast path); for objects, how many data points one value costs."""

    name: str | None
    points: int = 1




_q = sql_ident.column


def _one_of(v: str, values: frozenset[str]) -> str:
    """SQL: text `v` is one of `values`, exactly as `v IN (...)` says, matched whole by one regular
    expression of them all (RE2 runs it as an automaton: each value costs nothing per row). Per 10M rows on
    DuckDB 2.0, Braze's 249 country codes: an IN list 2.2 s, a search of one '|'-joined string of them
    4.2 s, this 0.2 s."""
    pattern = "(?:" + "|".join(re.escape(value) for value in sorted(values)) + ")"
    return f"regexp_full_match({v}, {sql_str(pattern)})"


def split_top(text: str) -> list[str]:
    """Split a DuckDB type list on commas that are not nested in () or []."""
    parts, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "([":
            depth += 1
        elif not quoted and ch in ")]":
            depth -= 1
        elif not quoted and ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def struct_fields(type_text: str) -> list[tuple[str, str]] | None:
    inner = type_text[type_text.index("(") + 1: type_text.rindex(")")]
    fields = []
    for part in split_top(inner):
        if part.startswith('"'):
            end = part.index('"', 1)
            while end + 1 < len(part) and part[end + 1] == '"':          # "" escapes a quote
                end = part.index('"', end + 2)
            name, rest = part[1:end].replace('""', '"'), part[end + 1:].strip()
        else:
            name, _, rest = part.partition(" ")
        if not rest:
            return None
        fields.append((name, rest.strip()))
    return fields


def kind_of(type_text: str) -> _Kind:
    t = type_text.strip().upper()
    if t.endswith("]"):
        inner = type_text.strip()[: type_text.strip().rindex("[")]
        element = kind_of(inner)
        # lists of scalars cost 1; lists of objects or of lists go through Python
        return _Kind("list") if element.name in ("string", "number", "bool") else _Kind(None)
    if t.startswith("STRUCT("):
        points = _struct_points(type_text)
        return _Kind("object", points) if points is not None else _Kind(None)
    if t == "JSON":
        return _Kind("json")            # its shape is each value's own: judged row by row (UsersSql._json_check)
    if t.startswith(("MAP", "UNION")):
        return _Kind(None)
    if t == "BOOLEAN":
        return _Kind("bool")
    if t.startswith(_NUMBER):
        return _Kind("number")
    if t.startswith(_SCALAR_STRING):
        return _Kind("string")
    return _Kind(None)


def _struct_points(type_text: str) -> int | None:
    """Data points of one STRUCT value (1 per key, nested STRUCTs entered), or None when its keys
    break Braze's nested-key rules or it holds something only the Python path handles."""
    fields = struct_fields(type_text)
    if not fields:
        return None
    total = 0
    for name, sub in fields:
        if not name or name != name.strip() or "." in name or "$" in name or " " in name or len(name) > 255:
            return None
        kind = kind_of(sub)
        # a null inner object costs differently; a JSON value's shape (and cost) is its own
        if kind.name not in ("string", "number", "bool", "list"):
            return None
        total += 1
    return total


class UsersSql:
    def __init__(self, payloads: UsersPayloads) -> None:
        self.p = payloads

    def items(self, columns: Sequence[tuple[str, str]], *, added_only: bool = False) -> SqlItems | None:
        """`added_only`: every row is added (a first run), so the SQL leaves out what only a changed or
        removed row needs (at 10M rows, 1 s of the checks)."""
        types = dict(columns)
        ident = self.p.ident
        if types.get(ident.column) is None or kind_of(types[ident.column]).name != "string":
            return None
        # a first run's rows are judged with their times typed (SqlItems.typed_times): an identifier is text
        typed = added_only
        if typed and is_time_type(types[ident.column]):
            return None
        pairs = self.p.fields.pairs(dict.fromkeys(types))
        if isinstance(pairs, str) or any(col not in types for _, col in pairs):
            return None
        unset = self.p.nulls == "unset"
        secondary = ident.kind in ("email", "phone")
        parts = [self._ident_json()]
        if self.p.flag is not None:
            parts.append(sql_str('"_update_existing_only":' + json.dumps(self.p.flag)))
        checks = [self._ident_check()]
        points = []
        includes = []
        for field, column in pairs:
            kind = kind_of(types[column])
            if kind.name is None or field in datapoints.FREE_KEYS - {"email_subscribe", "push_subscribe"}:
                return None
            v = _q(column)
            include = f"({v} IS NOT NULL)" if added_only else (
                f"(CASE WHEN r.__op = 'added' THEN {v} IS NOT NULL "
                f"ELSE list_contains(r.__changed, {sql_str(column)})"
                f"{'' if unset else f' AND {v} IS NOT NULL'} END)")
            includes.append(include)
            key = json.dumps(field, ensure_ascii=False) + ":"
            parts.append(f"CASE WHEN {include} THEN {sql_str(key)} || coalesce(to_json({v})::VARCHAR, 'null') END")
            checks.append(f"({'' if added_only else f'NOT {include} OR '}{v} IS NULL OR "
                          f"(({self._value_check(field, v, kind, types[column], typed)}) "
                          f"AND {self._storable(field, v, types[column], kind, typed)}))")
            if not unset and not added_only:       # a changed field that became null is kept in Braze: the Python path says so
                checks.append(f"NOT (r.__op = 'changed' AND list_contains(r.__changed, {sql_str(column)}) AND {v} IS NULL)")
            free = field in ("email_subscribe", "push_subscribe") or (secondary and field in ("email", "phone"))
            cost = "0" if free else (f"(CASE WHEN {v} IS NULL THEN 1 ELSE {kind.points} END)"
                                     if kind.name == "object" else
                                     f"(CASE WHEN json_type({v}) = 'OBJECT' THEN len(json_keys({v})) ELSE 1 END)"
                                     if kind.name == "json" else "1")
            points.append(f"(CASE WHEN {include} THEN {cost} ELSE 0 END)")
        if not includes:
            return None
        # concat_ws skips the NULL parts (fields left out): the same text as joining a filtered list, at a
        # third of the CPU (no list and lambda per row; 1M rows: 4.6 s -> 1.6 s)
        item = "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'"
        eligible = " AND ".join(
            ([] if added_only else ["r.__op IN ('added', 'changed')"]) + ["(" + " OR ".join(includes) + ")", *checks])
        removed = None if added_only else self._removed(pairs, list(types), secondary)
        channel_sql = None
        if removed is not None:
            if self.p.profiles.rule:    # removals (update-only unsets) need no profile check
                channel_sql = (f"CASE WHEN r.__op = 'removed' THEN {sql_str(self.p.profiles.base)} "
                               f"ELSE {sql_str(self.p.channel)} END")
            r_item, r_points, r_eligible = removed
            item = f"CASE WHEN r.__op = 'removed' THEN {r_item} ELSE {item} END"
            points = [f"CASE WHEN r.__op = 'removed' THEN {r_points} ELSE {' + '.join(points)} END"]
            eligible = f"(({eligible}) OR ({r_eligible}))"
        return SqlItems(channel=self.p.channel, item=item, data_points=" + ".join(points), eligible=eligible,
                        channel_sql=channel_sql, typed_times=typed)

    def _removed(self, pairs: list[tuple[str, str]], columns: list[str],
                 secondary: bool) -> tuple[str, str, str] | None:
        """`on_removed: unset`: every mapped field null, update-only, identified from the old row.
        With fields mapped automatically, only rows whose old row has today's columns qualify."""
        if self.p.on_removed != "unset" or not pairs:
            return None
        ident = self.p.ident
        old, is_text = sql_ident.old_value(ident.column)
        parts = [self._ident_json(old), sql_str('"_update_existing_only":true')]
        parts += [sql_str(json.dumps(field, ensure_ascii=False) + ":null") for field, _ in pairs]
        item = "'{' || " + " || ',' || ".join(parts) + " || '}'"
        free = {"email_subscribe", "push_subscribe"} | ({"email", "phone"} if secondary else set())
        points = str(sum(0 if field in free else 1 for field, _ in pairs))
        checks = ["r.__op = 'removed'", is_text, self._ident_check(old)]
        if self.p.fields.explicit is None:
            keys = "[" + ", ".join(sql_str(c) for c in columns) + "]"
            checks.append(f"json_keys(r.__old_row) = {keys}")
        return item, points, " AND ".join(checks)

    def _ident_json(self, value: str | None = None) -> str:
        ident = self.p.ident
        return sql_ident.track_json(ident.kind, ident.alias_label, value or _q(ident.column))

    def _ident_check(self, value: str | None = None) -> str:
        return sql_ident.check(self.p.ident.kind, value or _q(self.p.ident.column))

    def _storable(self, field: str, v: str, type_text: str, kind: _Kind, typed: bool) -> str:
        """SQL: none of the values Braze would mangle (validate.finite, time_range, array_length):
        rows holding one go through the Python path, which flags them. `typed`: a time is the model's
        typed value (SqlItems.typed_times), else its normalised text."""
        parts = ["true"]
        if kind.name == "number" and not _FINITE.match(type_text.strip().upper()):
            parts.append(f"isfinite({v}::DOUBLE)")
        if kind.name in ("list", "object") and _FLOATS.search(type_text.upper()):
            parts.append(f"NOT contains({v}::VARCHAR, 'NaN') AND NOT contains({v}::VARCHAR, 'Infinity')")
        if is_time_type(type_text) and typed:
            parts.append(_years_typed(v, type_text))
        elif is_time_type(type_text):
            # the year in validate.YEAR_MIN..YEAR_MAX, checked without a regular expression (1.5 s
            # per 10M rows): a time is normalised by strftime, whose text starts with the year's digits
            # (a year past 9999 has five, a year BC a '-', infinity letters: none of these passes)
            parts.append(f"(substr({v}, 5, 1) = '-' AND substr({v}, 1, 4) BETWEEN '0000' AND '3000')")
        if kind.name == "list" and field not in validate.STANDARD_ARRAYS:
            parts.append(f"json_array_length({v}) <= {int(self.p.array_max)}")
        return "(" + " AND ".join(parts) + ")"

    def _value_check(self, field: str, v: str, kind: _Kind, type_text: str, typed: bool) -> str:
        if is_time_type(type_text):
            # normalised, a time is ISO text of at most 27 characters (or 'infinity'): no string limit to
            # check, and no standard field but `dob` takes it (a DATE's text; the rest is the Python path's)
            if field == "dob" and type_text.strip().upper() == "DATE":
                # a real date, with a four-digit year (one past 9999 has five, one BC a '-', before '0001')
                return _years_typed(v, "DATE", first="0001") if typed else f"strlen({v}) = 10 AND {v} >= '0001-01-01'"
            return "false" if field in _STANDARD and field not in _TEXT_FIELDS else "true"
        if field in _STANDARD:
            if kind.name != "string":
                return "false"
            if field == "email":
                return sql_ident.email(v)
            if field == "phone":
                return sql_ident.phone(v)
            if field == "country":
                return _one_of(v, validate.COUNTRIES)
            if field == "language":
                return _one_of(v, validate.LANGUAGES)
            if field == "gender":
                return _one_of(v, validate.GENDERS)
            if field in ("email_subscribe", "push_subscribe"):
                return _one_of(v, validate.SUBSCRIBE_STATES)
            if field == "dob":
                return (f"regexp_full_match({v}, {sql_str(_DATE)}) AND {v} >= '0001-01-01' "
                        f"AND try_strptime({v}, '%Y-%m-%d') IS NOT NULL")
            return f"strlen({v}) <= {validate.STRING_MAX_CHARS}"
        if kind.name in ("number", "bool"):
            return "true"
        if kind.name == "json":
            return self._json_check(field, v)
        # strings, and nested values rendered as JSON: short enough that no string inside can be long
        return f"strlen({v}::VARCHAR) <= {validate.STRING_MAX_CHARS}"

    def _json_check(self, field: str, v: str) -> str:
        """SQL: a JSON value the Python path would send as it is, at 1 data point, or 1 per key of an object:
        a string, an integer or a boolean; a flat object of those (keys unique, none empty or holding '.', '$'
        or a space, none of Braze's operation names); a list of 1 to `array_max` of them. Its text short
        enough that no string or key inside can be long, without a \\u escape (a control character or an
        unpaired surrogate: the Python path's to judge). Any other value (a float, whose text Python may
        spell differently, a null, a deeper nesting) goes through the Python path."""
        text = f"{v}::VARCHAR"

        def scalars(path: str) -> str:      # no value at `path` is an object, a list, a float or a null
            return (f"len(list_filter(json_type({v}, '{path}'), "
                    "lambda __t: __t IN ('OBJECT', 'ARRAY', 'DOUBLE', 'NULL'))) = 0")
        # the keys parsed once (a one-element list's lambda), each checked in one pass: plain, not an
        # operation name, and first where it stands (so unique); 10M two-key objects: 5.8 s → 1.4 s
        plain_key = ("__k <> '' AND NOT contains(__k, '.') AND NOT contains(__k, '$') AND NOT contains(__k, ' ') "
                     "AND __k NOT IN ('inc', 'add', 'remove') AND list_position(__ks, __k) = __i")
        keys_ok = (f"list_transform([json_keys({v})], lambda __ks: len(__ks) > 0 "
                   f"AND list_bool_and(list_transform(__ks, lambda __k, __i: {plain_key})))[1]")
        flat_object = f"({keys_ok} AND {scalars('$.*')})"
        limit = "" if field in validate.STANDARD_ARRAYS else f" AND json_array_length({v}) <= {int(self.p.array_max)}"
        flat_list = f"(json_array_length({v}) > 0{limit} AND {scalars('$[*]')})"
        return (f"(strlen({text}) <= {validate.STRING_MAX_CHARS} AND NOT contains({text}, '\\u') AND "
                f"CASE json_type({v}) WHEN 'VARCHAR' THEN true WHEN 'BIGINT' THEN true WHEN 'UBIGINT' THEN true "
                f"WHEN 'BOOLEAN' THEN true WHEN 'OBJECT' THEN {flat_object} WHEN 'ARRAY' THEN {flat_list} "
                "ELSE false END)")
