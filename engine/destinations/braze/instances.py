"""Braze instances: the REST endpoint of a dashboard or cluster name, and the rules for an endpoint URL.

The one place names and URLs are resolved (braze-api.md §1.1): the project loader calls
`resolve_endpoint` for each connection. Imports nothing of Reflow but errors, so the project layer
can use it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Braze's "API and SDK endpoints" page (braze-api.md §1.1): cluster name -> REST endpoint.
INSTANCES: dict[str, str] = {
    **{f"iad-0{n}": f"https://rest.iad-0{n}.braze.com" for n in range(1, 9)},
    "us-10": "https://rest.us-10.braze.com",
    "fra-01": "https://rest.fra-01.braze.eu",
    "fra-02": "https://rest.fra-02.braze.eu",
    "au-01": "https://rest.au-01.braze.com",
}
# The same instances by their dashboard names (US-01 … US-08, US-10, EU-01, EU-02, AU-01).
DASHBOARD_NAMES: dict[str, str] = {
    **{f"us-0{n}": f"iad-0{n}" for n in range(1, 9)},
    "us-10": "us-10",
    "eu-01": "fra-01",
    "eu-02": "fra-02",
    "au-01": "au-01",
}
# Cluster families whose newer members may be missing from the table: a well-formed name is
# accepted as rest.<cluster>.braze.com (.braze.eu for fra-*), with a warning. us-01 … us-09 are
# dashboard names (their clusters are iad-0N), never clusters.
_CLUSTER = re.compile(r"^(iad|fra|au|us)-(\d{2})$")
_LOOPBACK_HOSTS = frozenset({"localhost"})


@dataclass(frozen=True)
class Endpoint:
    """A connection's REST base URL, and a note for the user when Reflow had to assume something."""

    url: str
    warning: str | None = None


class EndpointProblem(ValueError):
    """The connection's `endpoint` or `instance` (named by `key`) cannot be used; `message` says why."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def known_instances() -> str:
    dashboards = ", ".join(name.upper() for name in DASHBOARD_NAMES)
    return f"dashboard names {dashboards}; cluster names {', '.join(INSTANCES)}"


def resolve_endpoint(*, endpoint: str | None, instance: str | None, allow_http: bool = False) -> Endpoint:
    """The REST base URL of a connection given as `endpoint` (a URL) or `instance` (a name).

    The one place names and URLs are resolved: the project loader calls it (locating problems and
    warnings in reflow_project.yml) and stores the result as the connection's endpoint.
    Instance names are case-insensitive dashboard names (US-01, EU-02, AU-01) or cluster names
    (iad-01, fra-02, au-01) from Braze's "API and SDK endpoints" page. A well-formed cluster name the
    table does not list yet (iad-09, fra-03, us-11, au-02) is assumed to follow Braze's naming, with a
    warning; a dashboard name that does not exist (US-09, EU-03) is refused."""
    if endpoint and instance:
        raise EndpointProblem("instance", "set either endpoint or instance, not both")
    if instance:
        return _instance_endpoint(instance)
    if endpoint:
        return _url_endpoint(endpoint, allow_http=allow_http)
    raise EndpointProblem("instance", "set instance (a Braze instance such as US-01 or iad-01) or endpoint "
                                      "(the REST endpoint URL, e.g. https://rest.iad-01.braze.com)")


def _cluster_url(cluster: str) -> str:
    return f"https://rest.{cluster}.{'braze.eu' if cluster.startswith('fra-') else 'braze.com'}"


def _instance_endpoint(instance: str) -> Endpoint:
    name = instance.strip().lower()
    if name in INSTANCES:
        return Endpoint(INSTANCES[name])
    if name in DASHBOARD_NAMES:
        return Endpoint(INSTANCES[DASHBOARD_NAMES[name]])
    found = _CLUSTER.match(name)
    if found and int(found.group(2)) >= (10 if found.group(1) == "us" else 1):
        url = _cluster_url(name)
        return Endpoint(url, f"{instance!r} is not among the Braze instances this Reflow version knows "
                             f"({', '.join(INSTANCES)}); assuming its REST endpoint is {url}. If your dashboard "
                             "shows another REST endpoint, set endpoint: to it instead")
    if "://" in name or "." in name:
        raise _refused(instance, "looks like a URL or host name; write it as endpoint: "
                                 "https://rest.<cluster>.braze.com")
    if re.match(r"^(us|eu)-\d{2}$", name):
        raise _refused(instance, "is not a Braze instance")
    raise _refused(instance, "is not a known Braze instance")


def _refused(instance: str, why: str) -> EndpointProblem:
    return EndpointProblem("instance", f"{instance!r} {why}; the instances are {known_instances()} "
                                      "(or set endpoint: to the REST endpoint URL of your Braze dashboard)")


_REST_HOST = re.compile(r"^rest\.([a-z]+-\d{2})\.braze\.(?:com|eu)$")
_SDK_HOST = re.compile(r"^sdk\.([a-z]+-\d{2})\.braze\.(?:com|eu)$")
_DASHBOARD_HOST = re.compile(r"^dashboard(?:-(\d{2})|\.([a-z]+-\d{2}))\.braze\.(com|eu)$")


def _url_endpoint(url: str, *, allow_http: bool) -> Endpoint:
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        raise EndpointProblem("endpoint", f"{url!r} has an invalid port") from None
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise EndpointProblem("endpoint", f"{url!r} is not an http(s) URL; expected e.g. https://rest.iad-01.braze.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise EndpointProblem("endpoint", f"{parts.scheme}://{host}… must be a base URL without credentials, "
                                          "query or fragment")
    if parts.scheme == "http" and not allow_http and not _is_loopback(host):
        raise EndpointProblem("endpoint", "plain http:// would send the API key unencrypted; use https:// "
                                          "(or allow_http: true for testing)")
    _refuse_non_rest_host(host)
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    rest = _REST_HOST.match(host)
    if rest and rest.group(1) in INSTANCES and f"https://{host}" != INSTANCES[rest.group(1)]:
        return Endpoint(base, f"Braze lists the REST endpoint of {rest.group(1)} as {INSTANCES[rest.group(1)]}, "
                              f"not {parts.scheme}://{host}")
    return Endpoint(base)


def _refuse_non_rest_host(host: str) -> None:
    """The SDK endpoint and the dashboard are Braze hosts too, but not the REST API."""
    sdk = _SDK_HOST.match(host)
    if sdk:
        raise EndpointProblem("endpoint", f"{host} is Braze's SDK endpoint; the REST API of that instance is "
                                          f"{_cluster_url(sdk.group(1))}")
    dashboard = _DASHBOARD_HOST.match(host)
    if dashboard:
        number, cluster, tld = dashboard.groups()
        name = cluster or f"{'eu' if tld == 'eu' else 'us'}-{number}"
        rest = INSTANCES.get(DASHBOARD_NAMES.get(name, ""))
        hint = f"its REST endpoint is {rest}" if rest else "use the REST endpoint, https://rest.<cluster>.braze.com"
        raise EndpointProblem("endpoint", f"{host} is the Braze dashboard, not the REST API; {hint}")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
