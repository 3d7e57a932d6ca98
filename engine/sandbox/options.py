"""Sandbox configuration: one frozen value built from CLI flags or keyword arguments.

Options that model a detail Braze does not document (braze-api.md §13) say so in their comment;
their defaults keep the sandbox's earlier behaviour. Fault options (latency, 5xx, 429, dropped
connections, process-then-fail) are seeded by `seed`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_API_KEY = "sandbox-api-key"
API_KEY_ENV = "REFLOW_SANDBOX_API_KEY"
ADMIN_TOKEN_ENV = "REFLOW_SANDBOX_ADMIN_TOKEN"
PROCESS_THEN_FAIL_KINDS = ("500", "504", "drop", "mixed")
CATALOG_POST_EXISTING = ("overwrite", "error", "ignore")
PROCESSED_COUNTS = ("all", "applied")
DELETED_COUNTS = ("deleted", "requested")

ALL_PERMISSIONS: frozenset[str] = frozenset(
    {
        "users.track",
        "users.delete",
        "users.alias.new",
        "users.alias.update",
        "users.identify",
        "users.export.ids",
        "subscription.status.set",
        "catalogs.create",
        "catalogs.get",
        "catalogs.delete",
        "catalogs.add_items",
        "catalogs.update_items",
        "catalogs.replace_items",
        "catalogs.delete_items",
        "catalogs.get_items",
    }
)


class OptionError(ValueError):
    """A sandbox option has a bad value (the message says which and why)."""


def default_api_key() -> str:
    return os.environ.get(API_KEY_ENV) or DEFAULT_API_KEY


@dataclass(frozen=True)
class SandboxOptions:
    """Everything that changes how the emulator behaves. Defaults follow Braze's documentation."""

    api_key: str = field(default_factory=default_api_key)
    legacy_limits: bool = False                       # 75 objects per array instead of 75 in total
    max_objects: int = 75
    max_body_bytes: int = 4 * 1024 * 1024
    latency_ms: int = 0
    fail_5xx_rate: float = 0.0
    fail_429_first: int = 0
    fail_423_first: int = 0                           # partner cohort requests answered 423 Resource locked
    drop_connection_rate: float = 0.0
    seed: int | None = None
    reject_external_ids: frozenset[str] = frozenset()
    permissions: frozenset[str] = ALL_PERMISSIONS
    rate_limit: tuple[int, float] | None = None       # /users/track (requests, seconds)
    bucket_limits: Mapping[str, tuple[int, float]] = field(default_factory=dict)  # other buckets
    error_codes: bool = False                         # errors[].type as enum codes
    ratelimit_headers: str = "epoch"                  # "epoch" | "mau"
    max_array_length: int = 25
    state: str | None = None                          # JSON file the store persists to
    subscription_groups: frozenset[str] | None = None  # known group ids; None = any UUID
    long_strings: str = "reject"                      # "reject" | "truncate" strings > 255 chars
    # Braze requests applied to the store, then answered 500/504 or dropped (kind "mixed" = any)
    process_then_fail_rate: float = 0.0
    process_then_fail_kind: str = "mixed"             # "500" | "504" | "drop" | "mixed"
    # a profile created by /users/track stays unknown to the other endpoints (and to update-only
    # /users/track objects of later requests) for this long (braze-api.md §0.1, §2.1)
    visibility_delay_ms: int = 0
    # *_processed of /users/track: every valid object ("all"), or only those that reached a profile
    # ("applied": update-only objects for missing users are not counted); braze-api.md §13.5
    processed_counts: str = "all"
    # POST /catalogs/{name}/items for an id that exists (undocumented for the bulk endpoint):
    # "overwrite" it, reject the request ("error": 400 item-already-exists), or "ignore" the item
    catalog_post_existing: str = "overwrite"
    # /users/delete `deleted`: profiles really deleted ("deleted"), or every identifier sent ("requested")
    deleted_counts: str = "deleted"
    admin_token: str | None = None                    # /_sandbox/* needs "Authorization: Bearer <token>"
    # partner cohort import (braze-api.md §7): the body credentials it accepts, and the partners the
    # workspace enabled (None: any)
    partner_api_key: str = "sandbox-partner-api-key"
    data_import_key: str = "sandbox-data-import-key"
    cohort_partners: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for name in ("fail_5xx_rate", "drop_connection_rate", "process_then_fail_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise OptionError(f"{name.replace('_', '-')} must be between 0 and 1, got {value}")
        for name in ("latency_ms", "fail_429_first", "fail_423_first", "visibility_delay_ms"):
            if getattr(self, name) < 0:
                raise OptionError(f"{name.replace('_', '-')} must be >= 0")
        if self.max_array_length < 1:
            raise OptionError("max-array-length must be >= 1")
        if self.ratelimit_headers not in ("epoch", "mau"):
            raise OptionError("ratelimit-headers must be 'epoch' or 'mau'")
        if self.long_strings not in ("reject", "truncate"):
            raise OptionError("long-strings must be 'reject' or 'truncate'")
        for name, allowed in (("process_then_fail_kind", PROCESS_THEN_FAIL_KINDS),
                              ("processed_counts", PROCESSED_COUNTS),
                              ("catalog_post_existing", CATALOG_POST_EXISTING),
                              ("deleted_counts", DELETED_COUNTS)):
            if getattr(self, name) not in allowed:
                raise OptionError(f"{name.replace('_', '-')} must be one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        if self.admin_token is not None and not self.admin_token:
            raise OptionError("admin-token must not be empty")
        unknown = set(self.permissions) - ALL_PERMISSIONS
        if unknown:
            raise OptionError(f"unknown permission(s): {', '.join(sorted(unknown))}")
        if not self.api_key:
            raise OptionError("api-key must not be empty")

    @classmethod
    def build(cls, **options: Any) -> SandboxOptions:
        """Options from keyword arguments named like the CLI flags; accepts strings where the CLI does."""
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise OptionError(f"unknown sandbox option(s): {', '.join(sorted(unknown))}")
        converted = dict(options)
        if converted.get("api_key") is None:
            converted.pop("api_key", None)
        for name in ("reject_external_ids", "permissions", "subscription_groups", "cohort_partners"):
            if name in converted and converted[name] is not None:
                converted[name] = parse_list(converted[name])
        if converted.get("permissions") is None:
            converted.pop("permissions", None)
        if isinstance(converted.get("process_then_fail_kind"), int):
            converted["process_then_fail_kind"] = str(converted["process_then_fail_kind"])
        if isinstance(converted.get("rate_limit"), str):
            converted["rate_limit"] = parse_rate_limit(converted["rate_limit"])
        return cls(**converted)


def parse_list(value: str | Iterable[str]) -> frozenset[str]:
    """`"a,b"` or an iterable of strings → a set with blanks removed."""
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(item.strip() for item in items if item.strip())


def parse_rate_limit(text: str) -> tuple[int, float]:
    """`"3000/3"` → (3000, 3.0): N requests per SECONDS."""
    try:
        count, _, seconds = text.partition("/")
        parsed = (int(count), float(seconds or "1"))
    except ValueError:
        raise OptionError(f"rate-limit must look like N/SECONDS (e.g. 3000/3), got {text!r}") from None
    if parsed[0] < 1 or parsed[1] <= 0:
        raise OptionError(f"rate-limit must be positive, got {text!r}")
    return parsed
