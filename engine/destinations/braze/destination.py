"""BrazeDestination: the destination contract for one sync, over payloads, endpoints and the client."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import engine
from engine.destinations.base import (
    Batch,
    Capabilities,
    Destination,
    Estimate,
    Invalid,
    Item,
    PlanRow,
    Projection,
    RowResult,
    Skip,
    SqlItems,
    cut_batches,
)
from engine.destinations.braze import projection
from engine.destinations.braze.client import BrazeClient
from engine.destinations.braze.endpoints import (
    MAX_BODY_BYTES,
    channel_info,
    export_info,
    rate_groups,
    resolve_base_url,
)
from engine.destinations.braze.payloads import (
    EventsPayloads,
    PurchasesPayloads,
    UsersPayloads,
    build_payloads,
    profile_notes,
)
from engine.destinations.braze.profiles import ProfileGate
from engine.destinations.braze.sql_users import UsersSql
from engine.errors import DestinationError, register_secret
from engine.project import ConnectionConfig, Secret
from engine.specs import SyncSpec

USER_AGENT = f"partner-Reflow-Reflow/{engine.__version__}"
DEFAULT_CONCURRENCY = 32
# what one row of each object addresses, in messages (others: a Braze user)
OBJECT_WORDS = {"catalog_items": "catalog item", "subscription_groups": "subscription state of a user"}
# identity keys that say where a sync's objects live (not how its rows name them)
PLACE = ("endpoint", "object", "catalog", "subscription group")


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
        if dest.object == "users":
            sends_removed = dest.on_removed in ("unset", "delete")
        elif dest.object == "catalog_items":
            sends_removed = dest.on_removed == "delete"
        else:
            sends_removed = False
        self.capabilities = Capabilities(
            default_concurrency=connection.concurrency or DEFAULT_CONCURRENCY,
            append_only=dest.object in ("events", "purchases"),
            sends_removed=sends_removed,
            # a profile deleted by one sync must not be re-created by another sync of the same apply
            apply_rank=2 if dest.object == "user_deletes" else 1,
            object_word=OBJECT_WORDS.get(dest.object, "Braze user"),
            place=PLACE,
        )
        self._client_options = dict(client_options or {})
        self._client: BrazeClient | None = None
        self._gate: ProfileGate | None = None
        self._lock = threading.Lock()

    # -- planning (no network, no key) -----------------------------------------------------------
    def project(self, columns: Sequence[str]) -> Projection:
        """Fix the projection (projection.py); payloads then read rows keyed by Braze field."""
        found, spec = projection.project(self.sync, columns)
        self._payloads = self._rules(spec)
        return found

    def _rules(self, spec: SyncSpec) -> Any:
        payloads = build_payloads(spec)
        if isinstance(payloads, EventsPayloads | PurchasesPayloads):
            payloads.max_unknown_sends = self.connection.max_unknown_sends
        if isinstance(payloads, UsersPayloads):
            payloads.array_max = self.connection.array_max
        return payloads

    def identity(self) -> Mapping[str, str]:
        return projection.identity(self.sync, self.base_url)

    def prepare(self, row: PlanRow) -> Item | Invalid | Skip:
        return self._payloads.prepare(row)

    def plan_notes(self, sent: int) -> list[str]:
        """What the plan should say about this sync's `sent` rows (profiles Braze may not have)."""
        return profile_notes(self.sync, sent)

    def sql_items(self, columns: Sequence[Any]) -> SqlItems | None:
        """DuckDB-built payloads for the rows SQL can prove valid (users attributes only)."""
        if isinstance(self._payloads, UsersPayloads):
            return UsersSql(self._payloads).items([(c.name, c.type) for c in columns])
        return None

    def estimate(self, items: Mapping[str, tuple[int, int]]) -> Estimate:
        requests: dict[str, int] = {}
        per_group: dict[str, int] = {}
        data_points = 0
        for channel, (count, points) in items.items():
            info = channel_info(channel)
            n = math.ceil(count / info.limit) if count > 0 else 0
            requests[info.endpoint] = requests.get(info.endpoint, 0) + n
            per_group[info.group] = per_group.get(info.group, 0) + n
            data_points += points
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
        if info.profiles:
            return self._get_gate().send(info, batch.keys, batch.items)
        return self._get_client().send(info, batch.keys, batch.items)

    def _get_gate(self) -> ProfileGate:
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
                if not self._api_key:
                    raise DestinationError(f"connection '{self.connection.name}': api_key is empty; "
                                           "set BRAZE_API_KEY (or the variable named in reflow_project.yml)")
                options: dict[str, Any] = {
                    "connection": self.connection.name, "base_url": self.base_url, "api_key": self._api_key,
                    "user_agent": USER_AGENT, "timeout": self.connection.timeout,
                    "max_retries": self.connection.max_retries,
                    "rates": self._rates,
                }
                options.update(self._client_options)
                self._client = BrazeClient(**options)
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client, self._gate = self._client, None, None
        if client is not None:
            client.close()


def make_destination(connection: ConnectionConfig, api_key: str | None, sync: SyncSpec, *,
                     stop: threading.Event | None = None) -> BrazeDestination:
    """The Braze destination of one sync. `api_key` may be None when planning; `send` needs it.
    `stop` (the runner's first Ctrl-C / SIGTERM) ends the client's waits at once.

    Raises ProjectError for a bad endpoint/instance and SpecError for a destination section Braze
    cannot serve (missing identifier, reserved field names, …)."""
    return BrazeDestination(connection, api_key, sync, client_options={"stop": stop} if stop else None)
