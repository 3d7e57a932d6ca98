"""Braze endpoints as data: instances, URL rules, channels, request limits, rate-limit groups, permissions.

A channel names one kind of request; rows of one channel may share a request body:

    "POST /users/track attributes"                  {"attributes":[item,...]}
    "POST /users/track events" / "... purchases"    {"events":[...]} / {"purchases":[...]}
    "POST /users/delete external_ids"               {"external_ids":[item,...]}   (one id kind per request)
    "POST /subscription/status/set <gid> <state> <kind>"
                                                    {"subscription_group_id":..,"subscription_state":..,"<kind>":[..]}
    "POST|PATCH|DELETE /catalogs/<name>/items"      {"items":[item,...]}
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from engine.errors import ProjectError
from engine.project import ConnectionConfig

INSTANCES: dict[str, str] = {
    **{f"iad-0{n}": f"https://rest.iad-0{n}.braze.com" for n in range(1, 9)},
    "us-10": "https://rest.us-10.braze.com",
    "fra-01": "https://rest.fra-01.braze.eu",
    "fra-02": "https://rest.fra-02.braze.eu",
    "au-01": "https://rest.au-01.braze.com",
}
# Dashboard names (US-03, EU-01, AU-01) map onto the REST instance names.
_DASHBOARD_ALIASES: dict[str, str] = {
    **{f"us-0{n}": f"iad-0{n}" for n in range(1, 9)},
    "eu-01": "fra-01",
    "eu-02": "fra-02",
}
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

TRACK_LIMIT = 75                # objects per /users/track request (75 total; legacy: 75 per array)
OTHER_LIMIT = 50                # /users/delete, /subscription/status/set, catalog async items
MAX_BODY_BYTES = 4_000_000


@dataclass(frozen=True)
class RateGroup:
    """Endpoints sharing one Braze rate limit."""

    name: str
    requests_per_second: float


# Documented defaults (requests per minute / 60). /users/track comes from the connection's rate_limit.
TRACK_GROUP = "users.track"
DEFAULT_RATES: dict[str, float] = {
    TRACK_GROUP: 1000.0,                  # 3,000 requests / 3 s
    "users.identity": 20_000 / 60,        # /users/delete, alias, identify, merge: 20,000/min shared
    "subscription": 5_000 / 60,           # /subscription/status/set (v1 + v2): 5,000/min shared
    "catalog.items": 16_000 / 60,         # async catalog item endpoints: 16,000/min shared
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


@lru_cache(maxsize=256)
def channel_info(channel: str) -> ChannelInfo:
    """Parse a channel name into its request shape (cached: called once per batch)."""
    parts = channel.split(" ")
    if len(parts) < 2:
        raise ValueError(f"unknown channel {channel!r}")
    method, path, rest = parts[0], parts[1], parts[2:]
    endpoint = f"{method} {path}"
    if path == "/users/track" and method == "POST" and len(rest) == 1:
        array = rest[0]
        return ChannelInfo(channel, method, path, endpoint, array, TRACK_LIMIT, TRACK_GROUP, "users.track",
                           '{"' + array + '":[', "]}")
    if path == "/users/delete" and method == "POST" and len(rest) == 1:
        array = rest[0]
        return ChannelInfo(channel, method, path, endpoint, array, OTHER_LIMIT, "users.identity", "users.delete",
                           '{"' + array + '":[', "]}")
    if path == "/subscription/status/set" and method == "POST" and len(rest) == 3:
        group_id, state, kind = rest
        prefix = ('{"subscription_group_id":' + json.dumps(group_id) + ',"subscription_state":'
                  + json.dumps(state) + ',"' + kind + '":[')
        return ChannelInfo(channel, method, path, endpoint, kind, OTHER_LIMIT, "subscription",
                           "subscription.status.set", prefix, "]}")
    if path.startswith("/catalogs/") and path.endswith("/items") and not rest:
        permission = {"POST": "catalogs.add_items", "PATCH": "catalogs.update_items",
                      "DELETE": "catalogs.delete_items", "PUT": "catalogs.replace_items"}.get(method)
        if permission is not None:
            return ChannelInfo(channel, method, path, endpoint, "items", OTHER_LIMIT, "catalog.items",
                               permission, '{"items":[', "]}")
    raise ValueError(f"unknown channel {channel!r}")


def known_instances() -> str:
    return ", ".join(INSTANCES)


def resolve_base_url(connection: ConnectionConfig) -> str:
    """The REST base URL of a connection, refusing unknown instances and plain http to remote hosts."""
    where = f"connection '{connection.name}'"
    if connection.endpoint and connection.instance:
        raise ProjectError(f"{where}: set either endpoint or instance, not both")
    if connection.instance:
        name = connection.instance.strip().lower()
        name = _DASHBOARD_ALIASES.get(name, name)
        if name not in INSTANCES:
            raise ProjectError(
                f"{where}: unknown Braze instance {connection.instance!r}; known instances: {known_instances()} "
                "(or set endpoint: to the full REST URL shown in your Braze dashboard)")
        return INSTANCES[name]
    if not connection.endpoint:
        raise ProjectError(f"{where}: set instance (one of {known_instances()}) or endpoint (the REST URL)")
    return check_endpoint_url(connection.endpoint, allow_http=connection.allow_http, where=where)


def check_endpoint_url(url: str, *, allow_http: bool, where: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ProjectError(f"{where}: endpoint {url!r} is not an http(s) URL, e.g. https://rest.iad-01.braze.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ProjectError(f"{where}: endpoint {parts.scheme}://{parts.hostname}… must be a base URL without "
                           "credentials, query or fragment")
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        raise ProjectError(
            f"{where}: endpoint {url!r} uses plain http, which would send the API key unencrypted; "
            "use https, or set allow_http: true on the connection if this is intended")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host) in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
    except ValueError:
        return False


def rate_groups(connection: ConnectionConfig) -> dict[str, RateGroup]:
    rates = dict(DEFAULT_RATES)
    if connection.rate_limit:
        rates[TRACK_GROUP] = float(connection.rate_limit)
    return {name: RateGroup(name, rate) for name, rate in rates.items()}
