"""The fast path for `cohorts`: members entering and leaving, built by DuckDB.

Added rows (the member enters) and removed rows (the member leaves: its identifier and cohort id are
read from the old row) get the item `CohortPayloads.prepare` would build, byte for byte, on the same
channel and with the same data points, for both methods (attribute: a /users/track object with
{"add"|"remove": [<cohort id>]}; partner: the member on its cohort's channel, which for entering
members ends in the cohort's percent-encoded name), for a constant cohort and for `cohort_column`.

Everything else goes through Python, which stays authoritative: changed rows (a partner cohort's
rename, or nothing to send), and rows whose identifier, cohort id or cohort name SQL cannot prove to be
what Python accepts (sql_ident.py's checks; an id outside SAFE_TOKEN; a name without a letter or digit).
The plan's per-cohort notes count the rows written here through `BrazeDestination.plan_sql_rows`.
A test plans rows through both paths and compares them (tests/unit/test_braze_sql_cohorts.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.destinations.base import SqlItems
from engine.destinations.braze import datapoints, sql_ident
from engine.destinations.braze.payloads import (
    ASSIGNMENT_POINTS,
    COHORT_ENTERED,
    COHORT_ID_FIELD,
    COHORT_LEFT,
    COHORT_NAME_FIELD,
    SAFE_TOKEN,
    CohortPayloads,
    cohort_channels,
    entering_channel,
    render,
)
from engine.destinations.braze.sql_users import kind_of
from engine.sql import sql_str

_MARK = "\x00"                              # where a row's value goes in a text built by Python
_OLD_TYPES = ("VARCHAR", *sql_ident.JSON_INTEGERS)     # an old row's identifier or cohort id Python reads as text
_REMOVED = "r.__op = 'removed'"


def _as_text(name: str, type_text: str | None) -> str | None:
    """SQL: a live row's field as the text Python reads it as (integers become their digits), or None
    when the field's type is not one the fast path reads."""
    if type_text is None:
        return None
    if kind_of(type_text).name == "string":
        return sql_ident.column(name)
    if type_text.strip().upper() in sql_ident.INTEGERS:
        return f"{sql_ident.column(name)}::VARCHAR"
    return None


def _around(text: str, mark: str = _MARK) -> tuple[str, str]:
    head, found, tail = text.partition(mark)
    assert found, f"{mark!r} is not in {text!r}"
    return head, tail


def _fill(text: str, value: str, mark: str = _MARK) -> str:
    """SQL: Python-built `text` with SQL expression `value` in place of `mark`."""
    head, tail = _around(text, mark)
    return " || ".join(p for p in (sql_str(head) if head else "", value, sql_str(tail) if tail else "") if p)


def _op(removed: str, added: str) -> str:
    return added if removed == added else f"CASE WHEN {_REMOVED} THEN {removed} ELSE {added} END"


class CohortsSql:
    def __init__(self, payloads: CohortPayloads) -> None:
        self.p = payloads

    def items(self, columns: Sequence[tuple[str, str]]) -> SqlItems | None:
        p, types = self.p, dict(columns)
        ident = p.ident
        new_ident = _as_text(ident.column, types.get(ident.column))
        if new_ident is None:
            return None
        old_ident, old_ident_ok = sql_ident.old_value(ident.column, _OLD_TYPES)
        found = self._cohort(types)
        if found is None:
            return None
        new_cohort, new_ok, old_cohort, old_ok = found
        who = _op(old_ident, new_ident)
        cohort = _op(old_cohort, new_cohort)
        entering = ["r.__op = 'added'", sql_ident.check(ident.kind, new_ident), new_ok]
        leaving = [_REMOVED, old_ident_ok, sql_ident.check(ident.kind, old_ident), old_ok]
        if p.method == "attribute":
            item, points = self._attribute(who, cohort, ident.kind)
            channel, channel_sql = p.attribute_channel, None
            if p.profiles.rule:     # entering members go through the profile check; leaving ones need none
                channel, channel_sql = p.profiles.channel, _op(sql_str(p.attribute_channel), sql_str(p.profiles.channel))
        else:
            name = self._name(types, new_cohort)
            if name is None:
                return None
            name_sql, name_ok = name
            entering.append(name_ok)
            item, points = sql_ident.value_json(ident.kind, ident.alias_label, who), str(ASSIGNMENT_POINTS)
            entered, left, _ = cohort_channels(p.partner, _MARK, ident.kind)
            with_name = entering_channel(entered, "")            # the name (percent-encoded) goes last
            assert entering_channel(entered, "a b") == with_name + "a%20b"
            channel = entered.replace(_MARK, p.spec.id or COHORT_ID_FIELD)
            channel_sql = _op(_fill(left, cohort), f"{_fill(with_name, new_cohort)} || url_encode({name_sql})")
        eligible = f"(({' AND '.join(entering)}) OR ({' AND '.join(leaving)}))"
        return SqlItems(channel=channel, item=item, data_points=points, eligible=eligible, channel_sql=channel_sql)

    def _cohort(self, types: dict[str, str]) -> tuple[str, str, str, str] | None:
        """(a live row's cohort id, SQL true when it is valid, a removed row's, the same) or None."""
        p = self.p
        if p.spec.id is not None:
            cohort, problem = p.cohort_of({})
            if problem:
                return None
            return sql_str(cohort), "true", sql_str(cohort), "true"
        new = _as_text(COHORT_ID_FIELD, types.get(COHORT_ID_FIELD))
        if new is None:
            return None
        old, old_type_ok = sql_ident.old_value(COHORT_ID_FIELD, _OLD_TYPES)
        def valid(v: str) -> str:
            return f"({v} IS NOT NULL AND regexp_full_match({v}, {sql_str(SAFE_TOKEN)}))"
        return new, valid(new), old, f"{old_type_ok} AND {valid(old)}"

    def _attribute(self, who: str, cohort: str, kind: str) -> tuple[str, str]:
        """(item, data points): {<identifier>, "_update_existing_only": true, <attribute>: {verb: [id]}}."""
        p = self.p
        parts, points = {}, {}
        for verb in (COHORT_ENTERED, COHORT_LEFT):
            obj = {"_update_existing_only": True, p.attribute: {verb: [_MARK]}}
            text = render(obj)
            assert isinstance(text, str) and text.startswith("{")
            parts[verb] = _around(text[1:], '"\\u0000"')            # '"_update…":true,"attr":{"add":[' , ']}}'
            points[verb] = str(datapoints.attributes_object({kind: "x", **obj}))
        heads = _op(sql_str(parts[COHORT_LEFT][0]), sql_str(parts[COHORT_ENTERED][0]))
        tails = _op(sql_str(parts[COHORT_LEFT][1]), sql_str(parts[COHORT_ENTERED][1]))
        item = (f"'{{' || {sql_ident.track_json(kind, p.ident.alias_label, who)} || ',' || {heads} || "
                f"to_json({cohort})::VARCHAR || {tails}")
        return item, _op(points[COHORT_LEFT], points[COHORT_ENTERED])

    def _name(self, types: dict[str, str], cohort: str) -> tuple[str, str] | None:
        """(a live row's cohort name, SQL true when prepare() would read the same), or None when the
        name's type is not one the fast path reads. `name_of`: a name with no text is the cohort id."""
        if COHORT_NAME_FIELD not in types:
            return cohort, "true"
        if kind_of(types[COHORT_NAME_FIELD]).name != "string":
            return None
        n = sql_ident.column(COHORT_NAME_FIELD)
        return f"coalesce({n}, {cohort})", f"({n} IS NULL OR regexp_matches({n}, '[A-Za-z0-9]'))"
