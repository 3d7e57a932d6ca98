"""Braze's per-object rules, checked before sending. Each check returns None or a reason that names
the field and what is wrong with its value, e.g. "email: 'not-an-email' is not a valid email address"."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from engine import isodata
from engine.destinations.base import ARRAY_MAX, NON_FINITE, TIME_RANGE, Reason

EXTERNAL_ID_MAX_BYTES = 987
ALIAS_MAX_BYTES = 236
STRING_MAX_CHARS = 255
NESTED_MAX_BYTES = 100 * 1024
# Standard profile fields that take a string.
STRING_FIELDS = frozenset({"first_name", "last_name", "home_city", "phone", "time_zone", "date_of_first_session",
                           "date_of_last_session", "marked_email_as_spam_at"})
NAME_MAX_CHARS = 255
# Braze's standard (not custom) user fields: values with their own rules
STANDARD_FIELDS = frozenset({"email", "country", "language", "dob", "gender", "email_subscribe", "push_subscribe"}) \
    | STRING_FIELDS
STANDARD_ARRAYS = frozenset({"subscription_groups", "push_tokens"})   # not custom arrays: array_max is not theirs
# "A year < 0 or > 3000 is stored as a string" (braze-api.md §2.5, custom attribute types)
YEAR_MIN, YEAR_MAX = 0, 3000
ARRAY_MAX_DEFAULT = 25          # a workspace's array attribute length unless raised (up to 100)
CATALOG_ID_MAX_CHARS = 250
CATALOG_VALUE_MAX_CHARS = 5000

# ISO 3166-1 alpha-2 (249 officially assigned codes).
COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())

# ISO 639-1 (two-letter language codes, lowercase).
LANGUAGES = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en
eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv
ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne
ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st
su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())

# ISO 4217 alphabetic currency codes (active, plus funds and precious-metal codes).
CURRENCIES = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF
CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD
GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP
LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS
TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD
XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWL
""".split())

GENDERS = frozenset({"M", "F", "O", "N", "P"})
SUBSCRIBE_STATES = frozenset({"opted_in", "subscribed", "unsubscribed"})
RESERVED_EVENT_PROPERTIES = frozenset({"time", "event_name"})

_EMAIL = re.compile(r"^[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.:]\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$")
_PHONE = re.compile(r"^\+?[0-9 ().-]{5,30}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CATALOG_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_YEAR = re.compile(r"^(-?\d+)-\d{2}-\d{2}")
_NON_FINITE_SHOWN = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def show(value: Any, limit: int = 40) -> str:
    """A value quoted for a reason, shortened so that reasons stay readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def identifier_value(kind: str, value: Any, field: str) -> str | None:
    """Identifiers must be present, non-empty strings within Braze's byte limits."""
    if value is None:
        return f"{field}: the identifier is null"
    if not isinstance(value, str):
        return f"{field}: {show(value)} is not a string"
    if not value.strip():
        return f"{field}: the identifier is empty"
    if kind == "external_id" and _utf8_len(value) > EXTERNAL_ID_MAX_BYTES:
        return f"{field}: external_id is {_utf8_len(value)} bytes; Braze allows at most {EXTERNAL_ID_MAX_BYTES}"
    if kind == "user_alias" and _utf8_len(value) > ALIAS_MAX_BYTES:
        return f"{field}: alias_name is {_utf8_len(value)} bytes; Braze allows at most {ALIAS_MAX_BYTES}"
    if kind == "email":
        return email(field, value)
    if kind == "phone":
        return phone(field, value)
    return None


def phone(field: str, value: str) -> str | None:
    if not (_PHONE.match(value) and sum(c.isdigit() for c in value) >= 5):
        return f"{field}: {show(value)} is not a valid phone number (E.164 recommended, e.g. '+15555550123')"
    return None


def subscription_group_id(field: str, value: Any) -> str | None:
    if not (isinstance(value, str) and _UUID.match(value)):
        return f"{field}: {show(value)} is not a subscription group id (a UUID from the Braze dashboard)"
    return None


def email(field: str, value: str) -> str | None:
    if not _EMAIL.match(value):
        return f"{field}: {show(value)} is not a valid email address"
    return None


def name(what: str, key: str) -> str | None:
    """Attribute and property names: non-empty, ≤ 255 characters, no leading $."""
    if not key:
        return f"{what} name is empty"
    if len(key) > NAME_MAX_CHARS:
        return f"{what} name {show(key)} is longer than {NAME_MAX_CHARS} characters"
    if key.startswith("$"):
        return f"{what} name {show(key)} must not start with $"
    return None


def finite(field: str, value: Any, top: str | None = None) -> Reason | None:
    """NaN and ±Infinity: JSON has no such number, so Braze can store none (a float column's NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        shown = _NON_FINITE_SHOWN[repr(value)]
        return Reason(f"{field}: {shown} is not a finite number; JSON cannot carry it, so Braze cannot store it",
                      top or field, NON_FINITE)
    return None


def time_range(field: str, value: Any) -> Reason | None:
    """A time Braze cannot store as a time: an infinite timestamp or date, or a year outside 0-3000
    (Braze keeps those as strings). `value` is a TIMESTAMP or DATE column's normalised text."""
    if not isinstance(value, str):
        return None
    if value in ("infinity", "-infinity"):
        return Reason(f"{field}: {value!r} (an infinite timestamp or date) is not a time Braze can store",
                      field, TIME_RANGE)
    year = _YEAR.match(value)
    if year and not YEAR_MIN <= int(year.group(1)) <= YEAR_MAX:
        return Reason(f"{field}: {show(value)} is outside the years {YEAR_MIN}-{YEAR_MAX}; Braze would store it "
                      "as a string, not a time", field, TIME_RANGE)
    return None


def array_length(field: str, value: Any, limit: int) -> Reason | None:
    """An array attribute longer than the workspace keeps: Braze would keep only its newest `limit` elements."""
    if isinstance(value, list) and len(value) > limit:
        return Reason(f"{field}: array of {len(value):,} elements; the workspace keeps at most {limit} "
                      "(connection array_max), Braze would drop the oldest", field, ARRAY_MAX)
    return None


def nested(field: str, value: Any, max_chars: int = STRING_MAX_CHARS, top: str | None = None) -> str | None:
    """Strings ≤ max_chars; numbers finite; nested object keys non-empty, ≤ 255, without '.' or '$'
    (`$time` allowed). `top` is the field a nested value belongs to (for counting flagged values)."""
    top = top or field
    if isinstance(value, float):
        return finite(field, value, top)
    if isinstance(value, str):
        if len(value) > max_chars:
            return f"{field}: string of {len(value)} characters is longer than {max_chars}"
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                return f"{field}: nested key {show(key)} is empty or not a string"
            if key != "$time" and ("." in key or "$" in key or " " in key):
                return f"{field}: nested key {show(key)} must not contain '.', '$' or spaces"
            if len(key) > NAME_MAX_CHARS:
                return f"{field}: nested key {show(key)} is longer than {NAME_MAX_CHARS} characters"
            problem = nested(f"{field}.{key}", item, max_chars, top)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, list):
                return f"{field}[{i}]: arrays must not contain arrays"
            problem = nested(f"{field}[{i}]", item, max_chars, top)
            if problem:
                return problem
    return None


def standard_attribute(field: str, value: Any) -> str | None:
    """Rules of Braze's standard profile fields (null always allowed: it removes the field)."""
    if value is None:
        return None
    if field == "email":
        return email(field, value) if isinstance(value, str) else f"email: {show(value)} is not a string"
    if field in STRING_FIELDS:
        if not isinstance(value, str):
            return f"{field}: {show(value)} is not a string"
        if field == "phone":
            return phone(field, value)
    elif field == "country":
        if not (isinstance(value, str) and value in COUNTRIES):
            return f"country: {show(value)} is not an ISO-3166-1 alpha-2 country code (e.g. 'US', 'DE')"
    elif field == "language":
        if not (isinstance(value, str) and value in LANGUAGES):
            return f"language: {show(value)} is not an ISO-639-1 language code (e.g. 'en', 'fr')"
    elif field == "dob":
        if not (isinstance(value, str) and _is_date(value)):
            return f"dob: {show(value)} is not a date in the form YYYY-MM-DD"
    elif field == "gender":
        if value not in GENDERS:
            return f"gender: {show(value)} is not one of M, F, O, N, P"
    elif field in ("email_subscribe", "push_subscribe"):
        if value not in SUBSCRIBE_STATES:
            return f"{field}: {show(value)} is not one of opted_in, subscribed, unsubscribed"
    return None


def attribute(field: str, value: Any, *, time: bool = False, array_max: int | None = None) -> str | None:
    """A user attribute's value; `time`: it comes from a TIMESTAMP or DATE column; `array_max`: the
    workspace's longest array."""
    problem = name("attribute", field)
    if problem:
        return problem
    problem = (finite(field, value) or (time_range(field, value) if time else None)
               or standard_attribute(field, value) or nested(field, value))
    if problem is None and array_max is not None and field not in STANDARD_ARRAYS:
        problem = array_length(field, value, array_max)
    if problem is None and isinstance(value, dict | list):
        return size(field, value)
    return problem


def size(field: str, value: Any) -> str | None:
    """Nested objects, arrays of objects and event properties: at most 100 KB of JSON."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text) > NESTED_MAX_BYTES // 4 and len(text.encode("utf-8")) > NESTED_MAX_BYTES:
        return f"{field}: {len(text.encode('utf-8')):,} bytes of JSON; Braze allows at most 100 KB"
    return None


def properties(what: str, props: Mapping[str, Any], *, event: bool, times: frozenset[str] = frozenset()) -> str | None:
    """Event or purchase properties; `times`: the properties read from TIMESTAMP or DATE columns."""
    for key, value in props.items():
        problem = name(f"{what} property", key)
        if problem:
            return problem
        if event and key in RESERVED_EVENT_PROPERTIES:
            return f"{what} property name {key!r} is reserved by Braze"
        problem = (time_range(f"properties.{key}", value) if key in times else None) or nested(
            f"properties.{key}", value)
        if problem:
            return problem
    return size("properties", props)


def country(value: Any) -> Any:
    """Country names and alpha-3 codes as Braze normalises them ('Australia', 'AUS' → 'AU'); other values
    unchanged (then refused by `standard_attribute`: Braze would store null for them)."""
    if isinstance(value, str) and value not in COUNTRIES:
        return isodata.country_code(value) or value
    return value


def event_time(value: Any) -> Any:
    """A date (a DATE column, normalised to YYYY-MM-DD) as the full ISO-8601 time Braze expects."""
    if isinstance(value, str) and len(value) == 10 and _is_date(value):
        return value + "T00:00:00.000Z"
    return value


def time(field: str, value: Any) -> str | None:
    if value is None:
        return f"{field}: is null; Braze requires a time"
    problem = time_range(field, value)
    if problem:
        return problem
    if not (isinstance(value, str) and _TIME.match(value) and _is_date(value[:10])):
        return f"{field}: {show(value)} is not an ISO-8601 time"
    return None


def required_string(field: str, value: Any, max_chars: int = STRING_MAX_CHARS) -> str | None:
    if value is None:
        return f"{field}: is null; Braze requires it"
    if not isinstance(value, str) or not value:
        return f"{field}: {show(value)} is not a non-empty string"
    if len(value) > max_chars:
        return f"{field}: string of {len(value)} characters is longer than {max_chars}"
    return None


def currency(value: Any) -> str | None:
    if not (isinstance(value, str) and value in CURRENCIES):
        return f"currency: {show(value)} is not an ISO-4217 currency code (3 uppercase letters, e.g. 'USD')"
    return None


def price(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"price: {show(value)} is not a number"
    return finite("price", value)


def quantity(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        return f"quantity: {show(value)} is not an integer from 1 to 100"
    return None


def catalog_item_id(field: str, value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return f"{field}: catalog item id {show(value)} is not a non-empty string"
    if len(value) > CATALOG_ID_MAX_CHARS:
        return f"{field}: catalog item id is {len(value)} characters; Braze allows at most {CATALOG_ID_MAX_CHARS}"
    if not _CATALOG_ID.match(value):
        return f"{field}: catalog item id {show(value)} may contain only letters, digits, '-' and '_'"
    return None


def catalog_value(field: str, value: Any, *, time: bool = False) -> str | None:
    problem = name("catalog field", field)
    if problem:
        return problem
    return (time_range(field, value) if time else None) or nested(field, value, CATALOG_VALUE_MAX_CHARS)


def _is_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True
