"""Per-object validation for /users/track (braze-api.md §2.3–§2.7, §10).

Each failed rule raises `Invalid(code, text)`. `code` is Braze's documented enum where one exists
(EMAIL_BAD_FORMAT, EXTERNAL_USER_ID_TOO_LARGE, BLACKLISTED_EXTERNAL_USER_ID, BAD_*_SUBSCRIPTION_STATE,
BAD_SUBSCRIPTION_GROUP_*, BAD_LOCATION_UPDATE, BAD_PUSH_TOKEN_*, BAD_DEVICE_ID,
INVALID_ATTRIBUTE_EMAIL_SUBSCRIPTION_INFO) and a sandbox name otherwise; `text` is the human form
Braze sends on the wire (observed wording where known, ours otherwise).

Choice (braze-api.md §13.8, unconfirmed): a custom attribute string over 255 characters rejects the
object by default; `long_strings="truncate"` keeps the object and truncates instead.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from engine.isodata import CURRENCIES, LANGUAGES

from .options import SandboxOptions
from .times import is_date, parse_time

PRIMARY = ("external_id", "user_alias", "braze_id")
SECONDARY = ("email", "phone")
CONTROL_KEYS = frozenset({"external_id", "user_alias", "braze_id", "_update_existing_only", "_merge_objects",
                          "push_token_import"})
STRING_FIELDS = frozenset({"first_name", "last_name", "home_city", "phone", "time_zone",
                           "date_of_first_session", "date_of_last_session", "marked_email_as_spam_at"})
STANDARD_FIELDS = STRING_FIELDS | frozenset({
    "email", "country", "language", "dob", "gender", "email_subscribe", "push_subscribe",
    "subscription_groups", "email_open_tracking_disabled", "email_click_tracking_disabled",
    "current_location", "push_tokens", "facebook", "twitter",
})
SUBSCRIBE_STATES = frozenset({"opted_in", "subscribed", "unsubscribed"})
GROUP_STATES = frozenset({"subscribed", "unsubscribed"})
GENDERS = frozenset({"M", "F", "O", "N", "P"})
RESERVED_EVENT_PROPERTIES = frozenset({"time", "event_name"})
MAX_STRING = 255
MAX_EXTERNAL_ID_BYTES = 987
MAX_ALIAS_BYTES = 236
MAX_NESTED_BYTES = 100 * 1024
_EMAIL = re.compile(r"^[^@\s\"(),:;<>\[\\\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")
_PHONE = re.compile(r"^\+?[0-9 ().-]{5,30}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class Invalid(Exception):
    """One object fails one rule."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def is_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 255 and bool(_EMAIL.match(value))


def is_phone(value: object) -> bool:
    return isinstance(value, str) and bool(_PHONE.match(value)) and sum(c.isdigit() for c in value) >= 5


def is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def alias_ok(alias: object) -> bool:
    if not isinstance(alias, dict):
        return False
    for key in ("alias_name", "alias_label"):
        value = alias.get(key)
        if not isinstance(value, str) or not value or len(value.encode()) > MAX_ALIAS_BYTES:
            return False
    return True


def lookup(obj: Mapping[str, Any]) -> tuple[str, Any]:
    """The identifier Braze looks the object up by: the primary one, else email, else phone."""
    for kind in PRIMARY + SECONDARY:
        if obj.get(kind) is not None:
            return kind, obj[kind]
    return "", None


# ---- identifiers ---------------------------------------------------------------------------


def check_identifiers(obj: Mapping[str, Any], options: SandboxOptions) -> None:
    primaries = [k for k in PRIMARY if obj.get(k) is not None]
    if len(primaries) > 1:
        raise Invalid("MULTIPLE_PRIMARY_IDENTIFIERS",
                      "Only one of 'external_id', 'braze_id' or 'user_alias' may be provided")
    if not primaries and all(obj.get(k) is None for k in SECONDARY):
        raise Invalid("MISSING_IDENTIFIER", "'external_id' or 'braze_id' or 'user_alias' is required")
    external_id = obj.get("external_id")
    if external_id is not None:
        if not isinstance(external_id, str) or not external_id:
            raise Invalid("BAD_EXTERNAL_USER_ID", "'external_id' must be a non-empty string")
        if len(external_id.encode()) > MAX_EXTERNAL_ID_BYTES:
            raise Invalid("EXTERNAL_USER_ID_TOO_LARGE", "'external_id' must be fewer than 988 bytes")
        if external_id in options.reject_external_ids:
            raise Invalid("BLACKLISTED_EXTERNAL_USER_ID", "provided external_id is blacklisted and disallowed")
    if obj.get("braze_id") is not None and (not isinstance(obj["braze_id"], str) or not obj["braze_id"]):
        raise Invalid("BAD_BRAZE_ID", "'braze_id' must be a non-empty string")
    if obj.get("user_alias") is not None and not alias_ok(obj["user_alias"]):
        raise Invalid("BAD_USER_ALIAS", "'user_alias' must be an object with non-empty 'alias_name' and "
                      "'alias_label' strings of at most 236 bytes each")
    if obj.get("email") is not None and not is_email(obj["email"]):
        raise Invalid("EMAIL_BAD_FORMAT", "The value provided for the 'email' field is not a valid email.")
    if obj.get("phone") is not None and not is_phone(obj["phone"]):
        raise Invalid("PHONE_BAD_FORMAT", "The value provided for the 'phone' field is not a valid phone number.")
    if "_update_existing_only" in obj and not isinstance(obj["_update_existing_only"], bool):
        raise Invalid("BAD_UPDATE_EXISTING_ONLY", "'_update_existing_only' must be a boolean")


# ---- attributes ----------------------------------------------------------------------------


def check_attributes(obj: Mapping[str, Any], options: SandboxOptions) -> None:
    check_identifiers(obj, options)
    if "_merge_objects" in obj and not isinstance(obj["_merge_objects"], bool):
        raise Invalid("BAD_MERGE_OBJECTS", "'_merge_objects' must be a boolean")
    if obj.get("push_token_import") is True and (obj.get("external_id") is not None or obj.get("braze_id") is not None):
        raise Invalid("BAD_PUSH_TOKEN_IMPORT", "'push_token_import' objects must not carry 'external_id' or 'braze_id'")
    merge = obj.get("_merge_objects") is True
    for key, value in obj.items():
        if key in CONTROL_KEYS or key in SECONDARY:
            continue
        if key in STANDARD_FIELDS:
            _check_standard(key, value, options)
        else:
            _check_custom(key, value, merge, options)


def _check_standard(key: str, value: Any, options: SandboxOptions) -> None:
    if value is None:
        return
    if key in STRING_FIELDS:
        if not isinstance(value, str) or len(value) > MAX_STRING:
            raise Invalid(f"BAD_{key.upper()}", f"'{key}' must be a string of at most 255 characters")
    elif key == "country":
        if not isinstance(value, str):
            raise Invalid("BAD_COUNTRY", "'country' must be a string")
    elif key == "language":
        if value not in LANGUAGES:
            raise Invalid("BAD_LANGUAGE", "'language' must be an ISO-639-1 code")
    elif key == "dob":
        if not is_date(value):
            raise Invalid("BAD_DOB", "'dob' must be a date formatted YYYY-MM-DD")
    elif key == "gender":
        if value not in GENDERS:
            raise Invalid("BAD_GENDER", "'gender' must be one of 'M', 'F', 'O', 'N', 'P' or null")
    elif key in ("email_subscribe", "push_subscribe"):
        if value not in SUBSCRIBE_STATES:
            kind = "EMAIL" if key == "email_subscribe" else "PUSH"
            raise Invalid(f"BAD_{kind}_SUBSCRIPTION_STATE",
                          f"'{key}' must be one of 'opted_in', 'subscribed' or 'unsubscribed'")
    elif key == "subscription_groups":
        _check_subscription_groups(value, options)
    elif key in ("email_open_tracking_disabled", "email_click_tracking_disabled"):
        if not isinstance(value, bool):
            raise Invalid(f"BAD_{key.upper()}", f"'{key}' must be a boolean")
    elif key == "current_location":
        if not (isinstance(value, dict) and set(value) == {"longitude", "latitude"}
                and is_number(value["longitude"]) and is_number(value["latitude"])):
            raise Invalid("BAD_LOCATION_UPDATE", "'current_location' must be {\"longitude\": n, \"latitude\": n}")
    elif key == "push_tokens":
        _check_push_tokens(value)
    elif key in ("facebook", "twitter") and not isinstance(value, dict):
        raise Invalid(f"BAD_{key.upper()}", f"'{key}' must be an object")


def _check_subscription_groups(value: Any, options: SandboxOptions) -> None:
    if not isinstance(value, list):
        raise Invalid("BAD_SUBSCRIPTION_GROUP_ARRAY", "'subscription_groups' must be an array")
    for group in value:
        if not isinstance(group, dict) or "subscription_group_id" not in group or "subscription_state" not in group:
            raise Invalid("BAD_SUBSCRIPTION_GROUP_HASH", "each subscription group must be an object with "
                          "'subscription_group_id' and 'subscription_state'")
        if not subscription_group_known(group["subscription_group_id"], options):
            raise Invalid("BAD_SUBSCRIPTION_GROUP_ID", "'subscription_group_id' must be a valid subscription group id")
        if group["subscription_state"] not in GROUP_STATES:
            raise Invalid("BAD_SUBSCRIPTION_GROUP_STATE", "'subscription_state' must be 'subscribed' or 'unsubscribed'")


def subscription_group_known(group_id: object, options: SandboxOptions) -> bool:
    if options.subscription_groups is not None:
        return isinstance(group_id, str) and group_id in options.subscription_groups
    return is_uuid(group_id)


def _check_push_tokens(value: Any) -> None:
    if not isinstance(value, list):
        raise Invalid("BAD_PUSH_TOKEN_ARRAY", "'push_tokens' must be an array")
    for token in value:
        if not (isinstance(token, dict) and isinstance(token.get("app_id"), str)
                and isinstance(token.get("token"), str) and token["token"]):
            raise Invalid("BAD_PUSH_TOKEN_HASH", "each push token must be an object with 'app_id' and 'token'")
        device = token.get("device_id")
        if device is not None and (not isinstance(device, str) or not 8 <= len(device.encode()) <= 255):
            raise Invalid("BAD_DEVICE_ID", "'device_id' must be 8 to 255 bytes")


def _check_custom(key: str, value: Any, merge: bool, options: SandboxOptions) -> None:
    if key == "email_subscription_info":
        raise Invalid("INVALID_ATTRIBUTE_EMAIL_SUBSCRIPTION_INFO", "'email_subscription_info' is not a valid attribute")
    if not key or len(key) > MAX_STRING or key.startswith("$"):
        raise Invalid("BAD_ATTRIBUTE_NAME", "custom attribute names must be non-empty, at most 255 characters "
                      "and must not start with '$'")
    if value is None or isinstance(value, bool) or is_number(value):
        return
    if isinstance(value, str):
        _check_string(key, value, options)
    elif isinstance(value, list):
        _check_array(key, value, options)
    elif isinstance(value, dict):
        _check_object_value(key, value, merge, options)
    else:
        raise Invalid("BAD_ATTRIBUTE_VALUE", f"'{key}' has an unsupported value type")


def _check_string(key: str, value: str, options: SandboxOptions) -> None:
    if len(value) > MAX_STRING and options.long_strings == "reject":
        raise Invalid("STRING_VALUE_TOO_LARGE", f"'{key}' must be a string of at most 255 characters")


def _check_array(key: str, value: list[Any], options: SandboxOptions) -> None:
    for element in value:
        if isinstance(element, dict):
            _check_nested(key, element, options)
        elif isinstance(element, list):
            raise Invalid("BAD_ATTRIBUTE_VALUE", f"'{key}' must not contain nested arrays")
        elif isinstance(element, str):
            _check_string(key, element, options)
    _check_nested_size(key, value)


def _check_object_value(key: str, value: Mapping[str, Any], merge: bool, options: SandboxOptions) -> None:
    keys = set(value)
    if keys == {"inc"}:
        if not is_integer(value["inc"]):
            raise Invalid("BAD_INCREMENT", f"'{key}': 'inc' must be an integer")
        return
    if keys and keys <= {"add", "remove"}:
        for op in keys:
            if not isinstance(value[op], list) or any(isinstance(v, list | dict) for v in value[op]):
                raise Invalid("BAD_ARRAY_OPERATION", f"'{key}': '{op}' must be an array of values")
            for element in value[op]:
                if isinstance(element, str):
                    _check_string(key, element, options)
        return
    if keys and keys <= {"$add", "$update", "$remove"}:
        _check_object_array_ops(key, value, merge, options)
        return
    if "$time" in keys and keys == {"$time"}:
        raise Invalid("BAD_NESTED_VALUE", f"'{key}': '$time' is only allowed inside a nested object")
    _check_nested(key, value, options)
    _check_nested_size(key, value)


def _check_object_array_ops(key: str, value: Mapping[str, Any], merge: bool, options: SandboxOptions) -> None:
    bad = Invalid("BAD_ARRAY_OF_OBJECTS_OPERATION",
                  f"'{key}': '$add', '$update' and '$remove' must be arrays of valid operations")
    for op, entries in value.items():
        if not isinstance(entries, list):
            raise bad
        for entry in entries:
            if not isinstance(entry, dict):
                raise bad
            if op == "$add":
                _check_nested(key, entry, options)
                continue
            if not isinstance(entry.get("$identifier_key"), str) or "$identifier_value" not in entry:
                raise bad
            if op == "$update":
                if not merge:
                    raise Invalid("BAD_ARRAY_OF_OBJECTS_OPERATION", f"'{key}': '$update' requires '_merge_objects': true")
                if not isinstance(entry.get("$new_object"), dict):
                    raise bad
                _check_nested(key, entry["$new_object"], options)
    _check_nested_size(key, value)


def _check_nested(key: str, value: Mapping[str, Any], options: SandboxOptions, depth: int = 0) -> None:
    """Nested object rules: keys non-empty ≤ 255 without '.' or '$' (except a `{"$time": ...}` date)."""
    if depth > 50:
        raise Invalid("BAD_NESTED_VALUE", f"'{key}' is nested too deeply")
    for name, inner in value.items():
        if not name or len(name) > MAX_STRING or "." in name or "$" in name or " " in name:
            raise Invalid("BAD_NESTED_KEY", f"'{key}': nested keys must not be empty, contain spaces, '.' or '$'")
        if isinstance(inner, dict):
            if set(inner) == {"$time"}:
                if parse_time(inner["$time"]) is None:
                    raise Invalid("BAD_NESTED_TIME", f"'{key}': '$time' must be a valid date")
                continue
            _check_nested(key, inner, options, depth + 1)
        elif isinstance(inner, list):
            for element in inner:
                if isinstance(element, dict):
                    _check_nested(key, element, options, depth + 1)
                elif isinstance(element, str):
                    _check_string(key, element, options)
        elif isinstance(inner, str):
            _check_string(key, inner, options)


def _check_nested_size(key: str, value: Any) -> None:
    if len(json.dumps(value, separators=(",", ":"))) > MAX_NESTED_BYTES:
        raise Invalid("NESTED_ATTRIBUTE_TOO_LARGE", f"'{key}' must be at most 100 KB")


# ---- events and purchases ------------------------------------------------------------------


def check_event(obj: Mapping[str, Any], options: SandboxOptions) -> None:
    check_identifiers(obj, options)
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_STRING:
        raise Invalid("BAD_EVENT_NAME", "'name' is required and must be a non-empty string of at most 255 characters")
    _check_time(obj)
    _check_app_id(obj)
    _check_properties(obj, options)


def check_purchase(obj: Mapping[str, Any], options: SandboxOptions) -> None:
    check_identifiers(obj, options)
    product_id = obj.get("product_id")
    if not isinstance(product_id, str) or not product_id.strip() or len(product_id) > MAX_STRING:
        raise Invalid("BAD_PRODUCT_ID", "'product_id' is required and must be a non-empty string of at most 255 characters")
    currency = obj.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency) or currency not in CURRENCIES:
        raise Invalid("BAD_CURRENCY", "'currency' must be a three-letter uppercase ISO 4217 code")
    if not is_number(obj.get("price")):
        raise Invalid("BAD_PRICE", "'price' is required and must be a number")
    quantity = obj.get("quantity", 1)
    if not is_integer(quantity) or not 1 <= quantity <= 100:
        raise Invalid("BAD_QUANTITY", "'quantity' must be an integer between 1 and 100")
    _check_time(obj)
    _check_app_id(obj)
    _check_properties(obj, options)


def _check_time(obj: Mapping[str, Any]) -> None:
    if parse_time(obj.get("time")) is None:
        raise Invalid("BAD_TIME", "'time' is required and must be an ISO-8601 time")


def _check_app_id(obj: Mapping[str, Any]) -> None:
    if obj.get("app_id") is not None and not isinstance(obj["app_id"], str):
        raise Invalid("BAD_APP_ID", "'app_id' must be a string")


def _check_properties(obj: Mapping[str, Any], options: SandboxOptions) -> None:
    if "properties" not in obj or obj["properties"] is None:
        return
    properties = obj["properties"]
    if not isinstance(properties, dict):
        raise Invalid("BAD_PROPERTIES", "'properties' must be an object")
    for name, value in properties.items():
        if not name or len(name) > MAX_STRING or name.startswith("$"):
            raise Invalid("BAD_PROPERTY_NAME", "property names must be non-empty, at most 255 characters "
                          "and must not start with '$'")
        if name in RESERVED_EVENT_PROPERTIES:
            raise Invalid("RESERVED_PROPERTY_NAME", f"'{name}' is a reserved property name")
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise Invalid("PROPERTY_VALUE_TOO_LARGE", f"property '{name}' must be at most 255 characters")
        if isinstance(value, dict):
            _check_nested(name, value, options)
        elif isinstance(value, list):
            for element in value:
                if isinstance(element, dict):
                    _check_nested(name, element, options)
                elif isinstance(element, str) and len(element) > MAX_STRING:
                    raise Invalid("PROPERTY_VALUE_TOO_LARGE", f"property '{name}' must be at most 255 characters")
    if len(json.dumps(properties, separators=(",", ":"))) > MAX_NESTED_BYTES:
        raise Invalid("PROPERTIES_TOO_LARGE", "'properties' must be at most 100 KB")
