"""`reflow check`: each connection's endpoint, key and permissions, tested without writing anything.

For every connection: the REST endpoint (resolved when the project was loaded), then one request per
permission the project's syncs need, each with a body Braze refuses after checking the key and the
permission and before doing anything (braze-api.md §1.2-1.3, §10: key 401, then permission 403, then
the body):

    permission               probe                                   a key that has it gets
    users.track              POST /users/track {}                    400 "Valid data must be provided…"
    users.delete             POST /users/delete {}                   400 (no identifiers)
    catalogs.replace_items   PUT /catalogs/<catalog>/items {}        400 item-array-invalid (404 catalog-not-found)
    catalogs.update_items    PATCH /catalogs/<catalog>/items {}      same
    catalogs.delete_items    DELETE /catalogs/<catalog>/items {}     same
    users.export.ids         POST /users/export/ids {}               a read: 200 with no users, or 400

A JSON 2xx/400 means granted; 403 (Braze's "Access Denied") means missing; 401 on every probe means
the key itself is refused (wrong key, wrong instance or an IP allowlist); 401 on some probes of a key
other probes accepted is read as a missing permission (Braze's errors page lists it as a cause). One
attempt per probe, no retries: an unreachable host is reported within the connection's `timeout`.

What each object needs (README, "Permissions each object needs"):

    users             users.track (+ users.delete with on_removed: delete)
    events, purchases users.track
    catalog_items     catalogs.replace_items (added items: PUT creates or replaces),
                      catalogs.update_items (changed fields: PATCH),
                      + catalogs.delete_items with on_removed: delete
    subscription_groups  users.track (states travel in attributes objects' subscription_groups)
    user_deletes      users.delete
    cohorts           method attribute: users.track (the cohort attribute's {"add"}/{"remove"});
                      method partner: no REST API key permission: the partner cohort import authenticates
                      with cohort_import's partner_api_key and data_import_key in the body (a 401 names them)
    update-only rows with missing_users: wait, alias events/purchases   + users.export.ids
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from engine.destinations.braze.client import BrazeClient
from engine.destinations.braze.endpoints import ChannelInfo, channel_info, resolve_base_url
from engine.destinations.braze.payloads import profile_rule
from engine.destinations.braze.transport import Answer, TransportError
from engine.errors import ProjectError
from engine.project import Project, Secret
from engine.specs import SyncSpec

OK = "ok"
MISSING = "missing"
NOT_NEEDED = "not needed"
NOT_CHECKED = "not checked"

# Every permission Reflow can use, in the order the table lists them.
PERMISSIONS = ("users.track", "users.delete", "catalogs.replace_items", "catalogs.update_items",
               "catalogs.delete_items", "users.export.ids")
KEY_PROBE = "users.track"          # always sent: it tells whether the key is accepted at all
EXPORT_IDS = ("POST", "/users/export/ids")


@dataclass(frozen=True)
class Need:
    """A permission one or more syncs need, and the request that probes it."""

    permission: str
    method: str
    path: str
    syncs: tuple[str, ...]
    catalog: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class PermissionCheck:
    permission: str
    endpoint: str | None                 # "PUT /catalogs/products/items"; None when not needed
    needed_by: tuple[str, ...]
    result: str                          # OK | MISSING | NOT_NEEDED | NOT_CHECKED
    detail: str = ""                     # why not checked, or what Braze said


@dataclass(frozen=True)
class ConnectionCheck:
    name: str
    base_url: str
    key: str                             # "accepted" | "refused (401) …" | "not checked …"
    permissions: tuple[PermissionCheck, ...] = ()
    problems: tuple[str, ...] = ()       # unreachable, missing catalog, unset key, …

    @property
    def ok(self) -> bool:
        return not self.problems and all(p.result in (OK, NOT_NEEDED) for p in self.permissions)


@dataclass(frozen=True)
class CheckReport:
    connections: tuple[ConnectionCheck, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.connections)

    @property
    def missing(self) -> list[tuple[str, str]]:
        """(connection, permission) pairs that a sync needs and the key lacks."""
        return [(c.name, p.permission) for c in self.connections for p in c.permissions if p.result == MISSING]


def needs(sync: SyncSpec) -> list[tuple[str, ChannelInfo | None]]:
    """The permissions one sync needs, each with the channel whose request probes it (None: a
    request that is not a channel, /users/export/ids)."""
    dest = sync.destination
    track = channel_info("POST /users/track attributes")
    delete = channel_info("POST /users/delete external_ids")
    found: list[ChannelInfo] = []
    partner_cohorts = dest.cohort is not None and dest.cohort.method == "partner"
    if dest.object in ("users", "events", "purchases", "subscription_groups") or (
            dest.object == "cohorts" and not partner_cohorts):
        found.append(track)
        if dest.object == "users" and dest.on_removed == "delete":
            found.append(delete)
    elif dest.object == "user_deletes":
        found.append(delete)
    elif dest.object == "catalog_items":
        path = f"/catalogs/{dest.catalog}/items"
        found += [channel_info(f"PUT {path}"), channel_info(f"PATCH {path}")]
        if dest.on_removed == "delete":
            found.append(channel_info(f"DELETE {path}"))
    out: list[tuple[str, ChannelInfo | None]] = [(info.permission, info) for info in found]
    if profile_rule(sync):          # users looked up before their objects go out (profiles.py)
        out.append(("users.export.ids", None))
    return out


def project_needs(syncs: Sequence[SyncSpec], connection: str) -> list[Need]:
    """What the syncs on one connection need, one entry per permission and endpoint."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    catalogs: dict[tuple[str, str, str], str | None] = {}
    for sync in syncs:
        if sync.destination.connection != connection:
            continue
        for permission, info in needs(sync):
            method, path = (info.method, info.path) if info is not None else EXPORT_IDS
            key = (permission, method, path)
            merged.setdefault(key, [])
            if sync.name not in merged[key]:
                merged[key].append(sync.name)
            catalogs[key] = sync.destination.catalog if path.startswith("/catalogs/") else None
    order = {p: i for i, p in enumerate(PERMISSIONS)}
    return [Need(p, m, path, tuple(names), catalogs[(p, m, path)])
            for (p, m, path), names in sorted(merged.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][2]))]


Prober = Callable[[str, str, bytes | None], Answer]


def check_project(project: Project, syncs: Sequence[SyncSpec], *, user_agent: str,
                  client_options: Mapping[str, Any] | None = None) -> CheckReport:
    """Check every connection of the project (each one's key is read from the environment now)."""
    return CheckReport(tuple(check_connection(project, name, syncs, user_agent=user_agent,
                                              client_options=client_options)
                             for name in project.connections))


def check_connection(project: Project, name: str, syncs: Sequence[SyncSpec], *, user_agent: str,
                     client_options: Mapping[str, Any] | None = None) -> ConnectionCheck:
    connection = project.connections[name]
    base_url = resolve_base_url(connection)
    wanted = project_needs(syncs, name)
    try:
        key = project.api_key(name)
    except ProjectError as exc:
        return _unchecked(name, base_url, wanted, "not checked: no API key", exc.message)
    client = BrazeClient(connection=name, base_url=base_url, api_key=Secret(key or ""), user_agent=user_agent,
                         timeout=connection.timeout, max_retries=0, rates={}, **dict(client_options or {}))
    try:
        return probe_connection(name, base_url, wanted, client.probe)
    finally:
        client.close()


@dataclass(frozen=True)
class _Probed:
    result: str
    detail: str = ""
    problem: str | None = None
    status: int | None = None            # of Braze's (JSON) answer; None when there was none


def probe_connection(name: str, base_url: str, wanted: Sequence[Need], probe: Prober) -> ConnectionCheck:
    """Send the key probe and one probe per needed permission; sort the answers into a table."""
    track = channel_info("POST /users/track attributes")
    key_need = next((n for n in wanted if n.permission == KEY_PROBE), Need(KEY_PROBE, track.method, track.path, ()))
    probed: dict[str, _Probed] = {}                            # endpoint -> what its probe found
    failure: str | None = None                                 # no answer: the probes after it are not sent
    for need in [key_need, *wanted]:
        if need.endpoint in probed:
            continue
        if failure is not None:
            probed[need.endpoint] = _Probed(NOT_CHECKED, failure)
            continue
        try:
            answer = probe(need.method, need.path, b"{}")
        except TransportError as exc:
            failure = exc.message
            probed[need.endpoint] = _Probed(NOT_CHECKED, exc.message)
            continue
        probed[need.endpoint] = _sort_probe(answer, need, base_url)
    if not any(p.result == OK or p.status == 403 for p in probed.values()):   # nothing got past the key check
        if not any(p.status == 401 for p in probed.values()):
            return _unchecked(name, base_url, wanted, "not checked", probed[key_need.endpoint].detail)
        return _unchecked(name, base_url, wanted, "refused (401)",
                          f"{base_url} refused the API key of connection '{name}' (401): check the key, that it "
                          "belongs to a workspace on this instance, and its IP allowlist")
    rows: list[PermissionCheck] = []
    problems: list[str] = []
    for need in wanted:
        found = probed[need.endpoint]
        rows.append(PermissionCheck(need.permission, need.endpoint, need.syncs, found.result, found.detail))
        if found.problem and found.problem not in problems:
            problems.append(found.problem)
    if failure is not None:
        problems.append(failure)
    return ConnectionCheck(name, base_url, "accepted", tuple(rows + _not_needed(wanted)), tuple(problems))


def _sort_probe(answer: Answer, need: Need, base_url: str) -> _Probed:
    content_type = (answer.headers.get("content-type") or "").split(";")[0].strip().lower()
    parsed = _parse(answer.body) if content_type == "application/json" else None
    status = answer.status
    if not isinstance(parsed, dict):
        return _Probed(NOT_CHECKED, f"unexpected answer from {_host(base_url)}: {status} "
                                    f"{content_type or 'without content type'}, not Braze's")
    said = str(parsed.get("message") or "")[:120]
    if status in (401, 403):       # 403 Access Denied; 401 too, once another probe showed the key is valid
        return _Probed(MISSING, f"Braze answered {status} {said}".rstrip(), status=status)
    if 200 <= status < 300 or status == 400:
        return _Probed(OK, status=status)
    if status == 404 and need.catalog is not None and _catalog_not_found(parsed):
        return _Probed(OK, problem=f"catalog '{need.catalog}' does not exist in this workspace; create it in Braze "
                                   f"before syncing {', '.join(need.syncs)}", status=status)
    if status == 404:
        return _Probed(NOT_CHECKED, f"Braze answered 404 for {need.endpoint}: check the endpoint URL", status=status)
    if status == 429:
        return _Probed(NOT_CHECKED, "rate limited (429): run reflow check again in a minute", status=status)
    return _Probed(NOT_CHECKED, f"Braze answered {status}{': ' + said if said else ''}", status=status)


def _host(base_url: str) -> str:
    return urlsplit(base_url).netloc or base_url


def _catalog_not_found(parsed: Mapping[str, Any]) -> bool:
    errors = parsed.get("errors")
    return isinstance(errors, list) and any(isinstance(e, dict) and e.get("id") == "catalog-not-found"
                                            for e in errors)


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _not_needed(wanted: Sequence[Need]) -> list[PermissionCheck]:
    used = {n.permission for n in wanted}
    return [PermissionCheck(p, None, (), NOT_NEEDED) for p in PERMISSIONS if p not in used]


def _unchecked(name: str, base_url: str, wanted: Sequence[Need], key: str, problem: str) -> ConnectionCheck:
    rows = [PermissionCheck(n.permission, n.endpoint, n.syncs, NOT_CHECKED) for n in wanted] + _not_needed(wanted)
    return ConnectionCheck(name, base_url, key, tuple(rows), (problem,))
