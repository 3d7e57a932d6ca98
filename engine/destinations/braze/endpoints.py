"""Braze endpoints as data: channels, request limits, rate-limit groups, permissions (instances.py: hosts).

A channel names one kind of request; rows of one channel may share a request body:

    "POST /users/track attributes"                  {"attributes":[item,...]}
    "POST /users/track events" / "... purchases"    {"events":[...]} / {"purchases":[...]}
    "POST /users/delete external_ids"               {"external_ids":[item,...]}   (one id kind per request)
    "POST|PATCH|DELETE /catalogs/<name>/items"      {"items":[item,...]}
    "POST /partners/<p>/cohorts/users <cohort> user_ids|aliases add <name>"
                                                    {"cohort_id":"<cohort>","cohort_changes":[{"user_ids":[item,...]}]}
    "POST /partners/<p>/cohorts/users <cohort> user_ids|aliases remove"
                                                    ... [{"user_ids":[...],"should_remove":true}]}
    "POST /partners/<p>/cohorts <cohort>"           {"cohort_id":..,"name":..,"created_at":..} (one per apply)

Partner channels authenticate in the body (`body_auth`: the client adds partner_api_key and
client_secret, never an Authorization header); an entering channel ends in the cohort's name
(percent-encoded), which the destination creates or renames the cohort with before its first members.

A /users/track channel may end in a profile rule (profiles.py): `check:<kind>` (send only the rows
whose user /users/export/ids finds) or `create:user_alias` (create the alias profiles first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from engine.destinations.braze.instances import EndpointProblem, resolve_endpoint
from engine.errors import ProjectError
from engine.project import ConnectionConfig

TRACK_LIMIT = 75                # objects per /users/track request (75 total; legacy: 75 per array)
OTHER_LIMIT = 50                # /users/delete, catalog async items
MAX_BODY_BYTES = 4_000_000


@dataclass(frozen=True)
class RateGroup:
    """Endpoints sharing one Braze rate limit."""

    name: str
    requests_per_second: float


# Documented defaults (requests per minute / 60). /users/track comes from the connection's rate_limit.
COHORT_LIMIT = 1_000           # user_ids + aliases per partner cohort request (braze-api.md §7)
COHORT_GROUP = "partners.cohorts"
TRACK_GROUP = "users.track"
EXPORT_GROUP = "users.export.ids"
EXPORT_LIMIT = 50               # external_ids or user_aliases per /users/export/ids request
DEFAULT_RATES: dict[str, float] = {
    TRACK_GROUP: 1000.0,                  # 3,000 requests / 3 s
    "users.identity": 20_000 / 60,        # /users/delete, alias, identify, merge: 20,000/min shared
    "catalog.items": 16_000 / 60,         # async catalog item endpoints: 16,000/min shared
    EXPORT_GROUP: 250 / 60,               # workspaces onboarded since 2024-08-22 (older: 2,500/min)
    COHORT_GROUP: 250_000 / 3600,         # partner cohort import: its own 250,000/hour, not the workspace's
}


@dataclass(frozen=True)
class ChannelInfo:
    """Everything needed to send one channel's rows: where, how many per request, body envelope."""

    channel: str
    method: str
    path: str
    endpoint: str                         # "POST /users/track" — the key of Estimate.requests
    array: str                            # name of the array the items go into
    limit: int                            # objects per request
    group: str                            # rate-limit group
    permission: str                       # the API key permission Braze checks
    prefix: str                           # body = prefix + ",".join(items) + suffix
    suffix: str
    profiles: str | None = None           # /users/track: "check" | "create" (profiles.py), None: send as is
    identifier: str | None = None         # the identifier kind the profile rule looks users up by
    body_auth: bool = False               # partner endpoints: credentials in the body, no Authorization header
    cohort: str | None = None             # partner channels: the cohort id
    cohort_name: str | None = None        # an entering partner channel: the cohort's name (created or renamed first)


@lru_cache(maxsize=256)
def channel_info(channel: str) -> ChannelInfo:
    """Parse a channel name into its request shape (cached: called once per batch)."""
    parts = channel.split(" ")
    if len(parts) < 2:
        raise ValueError(f"unknown channel {channel!r}")
    method, path, rest = parts[0], parts[1], parts[2:]
    endpoint = f"{method} {path}"
    if path == "/users/track" and method == "POST" and len(rest) in (1, 2):
        array = rest[0]
        rule, _, kind = rest[1].partition(":") if len(rest) == 2 else (None, "", None)
        if rule is not None and (rule not in ("check", "create") or kind not in EXPORT_BODIES):
            raise ValueError(f"unknown channel {channel!r}")
        return ChannelInfo(channel, method, path, endpoint, array, TRACK_LIMIT, TRACK_GROUP, "users.track",
                           '{"' + array + '":[', "]}", rule, kind or None)
    if path == "/users/delete" and method == "POST" and len(rest) == 1:
        array = rest[0]
        return ChannelInfo(channel, method, path, endpoint, array, OTHER_LIMIT, "users.identity", "users.delete",
                           '{"' + array + '":[', "]}")
    if path.startswith("/partners/") and method == "POST":
        found = _partner_channel(channel, method, path, endpoint, rest)
        if found is not None:
            return found
    if path.startswith("/catalogs/") and path.endswith("/items") and not rest:
        permission = {"POST": "catalogs.add_items", "PATCH": "catalogs.update_items",
                      "DELETE": "catalogs.delete_items", "PUT": "catalogs.replace_items"}.get(method)
        if permission is not None:
            return ChannelInfo(channel, method, path, endpoint, "items", OTHER_LIMIT, "catalog.items",
                               permission, '{"items":[', "]}")
    raise ValueError(f"unknown channel {channel!r}")


def _partner_channel(channel: str, method: str, path: str, endpoint: str, rest: list[str]) -> ChannelInfo | None:
    parts = path.split("/")            # "", "partners", <partner>, "cohorts"[, "users"]
    if len(parts) == 4 and parts[3] == "cohorts" and len(rest) == 1:
        # the rename channel: its batches carry the member rows a rename acknowledges, one request each
        return ChannelInfo(channel, method, path, endpoint, "", COHORT_LIMIT, COHORT_GROUP, "partner cohort import",
                           "", "", body_auth=True, cohort=rest[0])
    if len(parts) != 5 or parts[3:] != ["cohorts", "users"] or len(rest) not in (3, 4):
        return None
    cohort, array, change = rest[0], rest[1], rest[2]
    if array not in ("user_ids", "aliases") or (change, len(rest)) not in (("add", 4), ("remove", 3)):
        return None
    head = '{"cohort_id":' + json.dumps(cohort) + ',"cohort_changes":[{"' + array + '":['
    tail = "]" + (',"should_remove":true' if change == "remove" else "") + "}]}"
    return ChannelInfo(channel, method, path, endpoint, array, COHORT_LIMIT, COHORT_GROUP, "partner cohort import",
                       head, tail, body_auth=True, cohort=cohort,
                       cohort_name=unquote(rest[3]) if change == "add" else None)


# /users/export/ids by identifier kind: the request's key, how many per request, the field to export
# (a required list for newer workspaces; one field keeps the answer small). braze-api.md §4.1
EXPORT_BODIES: dict[str, tuple[str, int, str]] = {
    "external_id": ("external_ids", EXPORT_LIMIT, "external_id"),
    "user_alias": ("user_aliases", EXPORT_LIMIT, "user_aliases"),
    "braze_id": ("braze_id", 1, "braze_id"),
    "email": ("email_address", 1, "email"),
    "phone": ("phone", 1, "phone"),
}


def export_info(kind: str) -> ChannelInfo:
    """The /users/export/ids request that looks users up by `kind` (items: JSON identifiers)."""
    key, limit, field = EXPORT_BODIES[kind]
    many = limit > 1
    return ChannelInfo(f"POST /users/export/ids {key}", "POST", "/users/export/ids", "POST /users/export/ids",
                       key, limit, EXPORT_GROUP, "users.export.ids",
                       '{"' + key + '":' + ("[" if many else ""),
                       ("]" if many else "") + ',"fields_to_export":["' + field + '"]}')


def resolve_base_url(connection: ConnectionConfig) -> str:
    """The REST base URL of a connection (ProjectError naming the connection when it has none)."""
    try:
        return resolve_endpoint(endpoint=connection.endpoint, instance=connection.instance,
                                allow_http=connection.allow_http).url
    except EndpointProblem as problem:
        raise ProjectError(f"connection '{connection.name}': {problem.key}: {problem.message}") from None


def rate_groups(connection: ConnectionConfig) -> dict[str, RateGroup]:
    rates = dict(DEFAULT_RATES)
    if connection.rate_limit:
        rates[TRACK_GROUP] = float(connection.rate_limit)
    if connection.export_rate_limit:
        rates[EXPORT_GROUP] = float(connection.export_rate_limit)
    return {name: RateGroup(name, rate) for name, rate in rates.items()}
