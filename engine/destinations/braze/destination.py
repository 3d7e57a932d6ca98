"""BrazeDestination: the destination contract for one sync, over payloads, endpoints and the client."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import engine
from engine.destinations.base import (
    ACKNOWLEDGED,
    NOT_ATTEMPTED,
    Batch,
    Capabilities,
    Destination,
    Estimate,
    Invalid,
    Item,
    Op,
    PlanRow,
    Projection,
    RowResult,
    Skip,
    SqlItems,
    cut_batches,
)
from engine.destinations.braze import projection
from engine.destinations.braze.endpoints import (
    MAX_BODY_BYTES,
    ChannelInfo,
    channel_info,
    export_info,
    rate_groups,
    resolve_base_url,
)
from engine.destinations.braze.payloads import (
    COHORT_ID_FIELD,
    COHORT_NAME_FIELD,
    CohortPayloads,
    EventsPayloads,
    PurchasesPayloads,
    UsersPayloads,
    build_payloads,
    cohort_channels,
    profile_notes,
)
from engine.errors import DestinationError, PlanError, ProjectError, register_secret
from engine.project import ConnectionConfig, Secret, resolve_partner_secret
from engine.specs import SyncSpec

if TYPE_CHECKING:
    from engine.destinations.braze.client import BrazeClient
    from engine.destinations.braze.profiles import ProfileGate

USER_AGENT = f"partner-Reflow-Reflow/{engine.__version__}"
DEFAULT_CONCURRENCY = 32
# what one row of each object addresses, in messages (others: a Braze user)
OBJECT_WORDS = {"catalog_items": "catalog item", "subscription_groups": "subscription state of a user"}
# the order syncs of one apply go in (others: 1): cohorts never create a profile, so they follow the syncs
# that may; user deletes go last, so that a profile deleted by one sync is not re-created by another
APPLY_RANK = {"cohorts": 2, "user_deletes": 3}
# identity keys that say where a sync's objects live (not how its rows name them)
PLACE = ("endpoint", "object", "catalog", "subscription group")
INVALID_ROWS = 4                # a cohort's tally: [entered, left, renamed, data points, invalid rows]


class BrazeDestination(Destination):
    """Braze for one sync. prepare/estimate/batches need no key; send needs it (DestinationError if missing)."""

    def __init__(self, connection: ConnectionConfig, api_key: str | Secret | None, sync: SyncSpec,
                 client_options: Mapping[str, Any] | None = None) -> None:
        if isinstance(api_key, Secret):
            api_key = api_key.reveal()
        register_secret(api_key)
        self.connection = connection
        self.sync = sync
        self.base_url = resolve_base_url(connection)
        self._api_key = Secret(api_key) if api_key else None     # repr never shows it
        self._payloads = self._rules(sync)
        self._rates = {name: group.requests_per_second for name, group in rate_groups(connection).items()}
        dest = sync.destination
        self.partner = dest.cohort is not None and dest.cohort.method == "partner"
        if self.partner and (connection.cohort_import is None or not connection.cohort_import.partner):
            raise ProjectError(f"sync '{sync.name}': cohorts with method: partner need cohort_import: {{partner, "
                               f"partner_api_key, data_import_key}} in connection '{connection.name}'")
        if dest.object == "users":
            sends_removed = dest.on_removed in ("unset", "delete")
        elif dest.object == "catalog_items":
            sends_removed = dest.on_removed == "delete"
        else:
            sends_removed = dest.object == "cohorts"          # a member who leaves the model leaves the cohort
        self.capabilities = Capabilities(
            default_concurrency=connection.concurrency or DEFAULT_CONCURRENCY,
            append_only=dest.object in ("events", "purchases"),
            sends_removed=sends_removed,
            apply_rank=APPLY_RANK.get(dest.object, 1),
            membership=dest.object == "cohorts",
            object_word=OBJECT_WORDS.get(dest.object, "Braze user"),
            place=PLACE,
        )
        self._client_options = dict(client_options or {})
        self.cohort_attributes: dict[str, str] = {}     # make_destination: attributes cohort syncs keep ids in
        self.kept_cohorts: dict[str, str] = {}          # ... and cohort ids other syncs keep where this one does
        self._client: BrazeClient | None = None
        self._gate: ProfileGate | None = None
        self._lock = threading.Lock()
        self._cohort_lock = threading.Lock()
        self._cohorts_named: dict[str, str] = {}      # partner cohorts created or renamed by this apply
        # what a plan sends per cohort: [entered, left, renamed, data points]; model rows per cohort
        self._tally: dict[str, list[int]] = {}
        self._totals: dict[str | None, int] = {}
        self.group_field = COHORT_ID_FIELD if dest.cohort is not None and dest.cohort.id_column else None
        if self.group_field and self.partner and dest.cohort is not None and dest.cohort.name_column:
            self.group_constants = {COHORT_NAME_FIELD: "a Braze cohort has one name: each apply would rename it "
                                                       "to whichever name its last request carried"}

    # -- planning (no network, no key) -----------------------------------------------------------
    def project(self, columns: Sequence[str]) -> Projection:
        """Fix the projection (projection.py); payloads then read rows keyed by Braze field."""
        found, spec = projection.project(self.sync, columns)
        if self.sync.destination.object == "users":
            taken = [(f, self.cohort_attributes[f]) for f in found.names if f in self.cohort_attributes]
            if taken:
                field, owner = taken[0]
                how = ("mapped from the model's column of that name (no destination.fields)"
                       if not self.sync.destination.fields else "a field of destination.fields")
                raise PlanError(f"sync '{self.sync.name}': '{field}' holds the cohort ids of sync '{owner}', and this "
                                f"sync writes it ({how}): its values would replace the ids. Nothing was sent for "
                                "this sync. Rename the model's column, or list destination.fields without it")
        self._payloads = self._rules(spec)
        return found

    def check_unset(self, fields: Sequence[str]) -> None:
        """A users sync unsetting fields it no longer maps (on_unmapped: unset) must not unset an attribute
        a cohort sync keeps its ids in: that would empty the cohorts while their plans say "No changes"."""
        taken = [f for f in fields if f in self.cohort_attributes]
        if taken:
            raise PlanError(f"sync '{self.sync.name}': on_unmapped: unset would unset '{taken[0]}', which now holds "
                            f"the cohort ids of sync '{self.cohort_attributes[taken[0]]}'. Nothing was sent for this "
                            "sync. Set on_unmapped: keep on this sync (Braze's attribute is then the cohort sync's)")

    def _rules(self, spec: SyncSpec) -> Any:
        payloads = build_payloads(spec)
        if isinstance(payloads, EventsPayloads | PurchasesPayloads):
            payloads.max_unknown_sends = self.connection.max_unknown_sends
        if isinstance(payloads, UsersPayloads):
            payloads.array_max = self.connection.array_max
        if isinstance(payloads, CohortPayloads) and self.connection.cohort_import is not None:
            payloads.partner = self.connection.cohort_import.partner
        return payloads

    def identity(self) -> Mapping[str, str]:
        found = dict(projection.identity(self.sync, self.base_url))
        if self.partner and self.connection.cohort_import is not None:
            # partner cohorts live under /partners/{partner}/: another partner name is another destination
            found["cohort partner"] = self.connection.cohort_import.partner
        return found

    def prepare(self, row: PlanRow) -> Item | Invalid | Skip:
        result = self._payloads.prepare(row)
        if isinstance(self._payloads, CohortPayloads) and isinstance(result, Item):
            cohort, _ = self._payloads.cohort_of(row.values)
            renamed = result.channel.startswith("POST /partners/") and "/cohorts/users " not in result.channel
            self._count(cohort, 2 if renamed else 1 if row.op == Op.REMOVED else 0, 1, result.data_points)
        elif isinstance(self._payloads, CohortPayloads) and isinstance(result, Invalid) and row.op != Op.REMOVED:
            cohort, problem = self._payloads.cohort_of(row.values)
            if not problem:
                self._count(cohort, INVALID_ROWS, 1, 0)      # a model row of the cohort that is no member
        return result

    def _count(self, cohort: str, what: int, rows: int, points: int) -> None:
        """Tally a plan's rows of one cohort: `what` 0 entered, 1 left, 2 renamed, 4 invalid (never sent)."""
        tally = self._tally.setdefault(cohort, [0, 0, 0, 0, 0])
        tally[what] += rows
        tally[3] += points

    def plan_sql_rows(self, written: Mapping[tuple[str | None, str], tuple[int, int]]) -> None:
        """Cohorts: the fast path's entering and leaving rows, into the per-cohort tally."""
        if not isinstance(self._payloads, CohortPayloads):
            return
        for (group, op), (rows, points) in written.items():
            cohort = self._payloads.spec.id if group is None else group
            self._count(cohort or "", 1 if op == Op.REMOVED else 0, rows, points)

    def plan_totals(self, totals: Mapping[str | None, int]) -> None:
        """The model's rows per value of `group_field` (the cohort id; None: the one cohort), for the notes.
        A `cohort_column` value that another sync keeps as its cohort stops this sync."""
        self._totals = dict(totals)
        cohort = self.sync.destination.cohort
        if cohort is not None and cohort.id is not None and cohort.id in self.kept_cohorts:
            # another connection to this workspace (validate refuses it on one connection)
            raise PlanError(f"sync '{self.sync.name}': cohort '{cohort.id}' is also kept by sync "
                            f"'{self.kept_cohorts[cohort.id]}' (another connection to the same Braze REST host): a "
                            "member leaving one sync's model would leave the cohort although the other's still "
                            "holds it. Nothing was sent for this sync. Use another cohort id, or one sync")
        taken = sorted(str(k) for k in totals if k is not None and str(k) in self.kept_cohorts)
        if self.group_field and taken:
            column = cohort.id_column if cohort else ""
            owners = ", ".join(f"'{k}' (sync '{self.kept_cohorts[k]}')" for k in taken[:5])
            raise PlanError(f"sync '{self.sync.name}': {column} gives cohort id(s) another sync keeps: {owners}. A "
                            "member leaving one sync's model would leave the cohort although the other's still "
                            "holds it. Nothing was sent for this sync. Give the cohorts other ids, or keep them in "
                            "one sync")

    def left_behind(self, old: Mapping[str, str], rows: int) -> str | None:
        """A cohort sync that starts again (another cohort id, attribute, method, partner or identifier)
        does not take its members out of the old cohort: the plan says what stays there."""
        if old.get("object") != "cohorts" or "cohort" not in old:
            return None
        if old.get("cohort method") == "attribute":
            where = f"cohort id(s) {old['cohort']} in the array attribute {old.get('cohort attribute', '')}"
        else:
            where = f"partner cohort {old['cohort']}" + (f" of partner {old['cohort partner']}"
                                                        if old.get("cohort partner") else "")
        note = (f"Braze keeps the {rows:,} membership(s) this sync recorded in {where}: Reflow does not take "
                "them out of the old cohort (remove them in Braze, or empty the old cohort first, under the old spec)")
        cohort = self.sync.destination.cohort
        if cohort is not None and cohort.id_column and not old["cohort"].startswith("from column "):
            # constant -> cohort_column: the new cohorts may include the old one
            note += (f"; if {cohort.id_column} gives the id {old['cohort']} too, this sync keeps that cohort again "
                     "(its members are sent again as entering): do not empty it")
        return note

    def plan_notes(self, sent: int) -> list[str]:
        """What the plan should say about this sync's `sent` rows (profiles Braze may not have; cohorts)."""
        if not isinstance(self._payloads, CohortPayloads):
            return profile_notes(self.sync, sent)
        cohort = self.sync.destination.cohort
        assert cohort is not None
        notes = []
        totals = ({cohort.id: self._totals.get(None, 0)} if cohort.id is not None
                  else {str(k): v for k, v in self._totals.items() if k is not None})
        for name in sorted(set(totals) | set(self._tally)):
            if self._payloads.cohort_of({COHORT_ID_FIELD: name})[1]:
                continue            # not a cohort id: its rows are invalid (counted, and listed by `show`)
            entered, left, renamed, points, invalid = self._tally.get(name, [0, 0, 0, 0, 0])
            unchanged = max(totals.get(name, 0) - entered - invalid, 0)
            line = f"cohort {name}: {entered} entered, {left} left, {unchanged} unchanged; {points} data point(s)"
            notes.append(line + ("; renamed" if renamed else "") + (f"; {invalid} invalid row(s), not members"
                                                                    if invalid else ""))
        entering = sum(t[0] for t in self._tally.values())
        if entering:        # what Braze may lack matters to members entering (a rename or a leave needs no user)
            notes += profile_notes(self.sync, entering)
        if any(t[3] for t in self._tally.values()):
            notes.append("cohort assignments are billable data points" if self.partner else
                         f"each cohort id added to or removed from {cohort.attribute} is a data point")
        return notes

    def sql_items(self, columns: Sequence[Any], *, added_only: bool = False) -> SqlItems | None:
        """DuckDB-built payloads for the rows SQL can prove valid (users attributes, cohort members); their
        SQL builders are imported here, when a plan has rows to write."""
        if isinstance(self._payloads, UsersPayloads):
            from engine.destinations.braze.sql_users import UsersSql

            return UsersSql(self._payloads).items([(c.name, c.type) for c in columns], added_only=added_only)
        if isinstance(self._payloads, CohortPayloads):
            from engine.destinations.braze.sql_cohorts import CohortsSql

            return CohortsSql(self._payloads).items([(c.name, c.type) for c in columns])
        return None

    def estimate(self, items: Mapping[str, tuple[int, int]]) -> Estimate:
        requests: dict[str, int] = {}
        per_group: dict[str, int] = {}
        data_points = 0
        named: set[str] = set()            # partner cohorts an apply creates or renames: one request each
        for channel, (count, points) in items.items():
            info = channel_info(channel)
            data_points += points
            if info.body_auth and info.cohort is not None and count and (info.array == "" or info.cohort_name):
                if info.cohort not in named:
                    named.add(info.cohort)
                    partner = self.connection.cohort_import.partner if self.connection.cohort_import else ""
                    create = channel_info(cohort_channels(partner, info.cohort, "external_id")[2])
                    requests[create.endpoint] = requests.get(create.endpoint, 0) + 1
                    per_group[create.group] = per_group.get(create.group, 0) + 1
                if info.array == "":
                    continue
            n = math.ceil(count / info.limit) if count > 0 else 0
            requests[info.endpoint] = requests.get(info.endpoint, 0) + n
            per_group[info.group] = per_group.get(info.group, 0) + n
            if info.profiles and info.identifier and count:
                # at most: users are looked up once per apply, and a user with several rows once
                lookup = export_info(info.identifier)
                asks = math.ceil(count / lookup.limit)
                requests[lookup.endpoint] = requests.get(lookup.endpoint, 0) + asks
                per_group[lookup.group] = per_group.get(lookup.group, 0) + asks
                if info.profiles == "create":
                    requests[info.endpoint] += n
                    per_group[info.group] += n
        seconds = max((n / self._rates[group] for group, n in per_group.items()), default=0.0)
        return Estimate(requests=requests, data_points=data_points, seconds=seconds)

    def batch_limits(self, channel: str) -> tuple[int, int]:
        info = channel_info(channel)
        return info.limit, MAX_BODY_BYTES - len(info.prefix.encode("utf-8")) - len(info.suffix)

    def batches(self, channel: str, rows: Iterable[tuple[str, str]]) -> Iterator[Batch]:
        return cut_batches(channel, rows, *self.batch_limits(channel))

    # -- sending ---------------------------------------------------------------------------------
    def send(self, batch: Batch) -> Sequence[RowResult]:
        info = channel_info(batch.channel)
        if info.body_auth and info.cohort is not None:
            return self._send_cohort(info, batch)
        if info.profiles:
            return self._get_gate().send(info, batch.keys, batch.items)
        return self._get_client().send(info, batch.keys, batch.items)

    def _send_cohort(self, info: ChannelInfo, batch: Batch) -> Sequence[RowResult]:
        """A partner cohort batch. Members entering go after the request that creates the cohort (or renames
        it, when its name changed), made once per apply; a rename batch is that request."""
        cohort = info.cohort or ""
        if info.array == "":
            # the rename channel: member rows whose recorded name is another; each is acknowledged when the
            # request naming the cohort as the row says is (a model giving one cohort two names is refused
            # by the plan, but a batch is still read row by row)
            names = [json.loads(item)["name"] for item in batch.items]
            problems = {name: self._name_cohort(cohort, name, key) for name, key in
                        dict(zip(names, batch.keys, strict=True)).items()}
            return [RowResult(key, ACKNOWLEDGED) if (problem := problems[name]) is None
                    else RowResult(key, problem.outcome, problem.reason)
                    for key, name in zip(batch.keys, names, strict=True)]
        if info.cohort_name is not None:
            problem = self._name_cohort(cohort, info.cohort_name, batch.keys[0])
            if problem is not None:
                why = f"creating or renaming cohort {cohort} first failed: {problem.reason}"
                return [RowResult(key, NOT_ATTEMPTED, why) for key in batch.keys]
        return self._get_client().send(info, batch.keys, batch.items)

    def _name_cohort(self, cohort: str, name: str, key: str) -> RowResult | None:
        """POST /partners/{partner}/cohorts for `cohort` with `name`, unless this apply already did; None
        when Braze acknowledged it (now or before), else the result that says why not."""
        with self._cohort_lock:
            if self._cohorts_named.get(cohort) == name:
                return None
            info = channel_info(cohort_channels(self._payloads.partner, cohort, "external_id")[2])
            created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
            item = json.dumps({"cohort_id": cohort, "name": name, "created_at": created}, ensure_ascii=False)
            result = self._get_client().send(info, [key], [item])[0]
            if result.outcome != ACKNOWLEDGED:
                return result
            self._cohorts_named[cohort] = name
            return None

    def _get_gate(self) -> ProfileGate:
        """The profile gate of the send path (missing_users: wait), made at the first send that needs it."""
        from engine.destinations.braze.profiles import ProfileGate

        client = self._get_client()
        with self._lock:
            if self._gate is None:
                self._gate = ProfileGate(client, profile_wait=self.connection.profile_wait)
            return self._gate

    def _get_client(self) -> BrazeClient:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                if not self._api_key and not self.partner:
                    raise DestinationError(f"connection '{self.connection.name}': api_key is empty; "
                                           "set BRAZE_API_KEY (or the variable named in reflow_project.yml)")
                options: dict[str, Any] = {
                    "connection": self.connection.name, "base_url": self.base_url, "api_key": self._api_key or Secret(""),
                    "user_agent": USER_AGENT, "timeout": self.connection.timeout,
                    "max_retries": self.connection.max_retries,
                    "rates": self._rates,
                }
                if self.partner:
                    options["body_auth"] = self._partner_auth()
                options.update(self._client_options)
                # the HTTP stack, imported when a request is to be sent (a plan sends none)
                from engine.destinations.braze.client import BrazeClient

                self._client = BrazeClient(**options)
            return self._client

    def _partner_auth(self) -> Secret:
        """The body members that authenticate a partner cohort request (rendered now, and registered with
        the scrubber): partner_api_key, and client_secret = the workspace's data import key."""
        key = resolve_partner_secret(self.connection, "partner_api_key")
        secret = resolve_partner_secret(self.connection, "data_import_key")
        return Secret(f'"partner_api_key":{json.dumps(key)},"client_secret":{json.dumps(secret)}')

    def close(self) -> None:
        with self._lock:
            client, self._client, self._gate = self._client, None, None
        if client is not None:
            client.close()


def make_destination(connection: ConnectionConfig, api_key: str | None, sync: SyncSpec, *,
                     stop: threading.Event | None = None,
                     cohort_attributes: Mapping[str, str] | None = None,
                     kept_cohorts: Mapping[str, str] | None = None) -> BrazeDestination:
    """The Braze destination of one sync. `api_key` may be None when planning; `send` needs it.
    `stop` (the runner's first Ctrl-C / SIGTERM) ends the client's waits at once. `cohort_attributes`:
    the cohort attributes on the connections to this one's REST host (attribute -> the cohort sync keeping
    its ids there), which a users sync may not write, even as a column mapped automatically, nor unset.
    `kept_cohorts`: cohort ids other syncs keep where this one keeps its cohorts (id -> sync), which
    this sync may not keep too (a `cohort_column` may not produce them).

    Raises ProjectError for a bad endpoint/instance and SpecError for a destination section Braze
    cannot serve (missing identifier, reserved field names, …)."""
    destination = BrazeDestination(connection, api_key, sync, client_options={"stop": stop} if stop else None)
    destination.cohort_attributes = dict(cohort_attributes or {})
    destination.kept_cohorts = dict(kept_cohorts or {})
    return destination
