"""The Braze destination: `make_destination` is the one entry point the planner and runner use.

    endpoints.py    instances, URL rules, channels, limits, rate-limit groups, permissions (data)
    validate.py     Braze's per-object rules (reasons name the field and the value problem)
    payloads.py     plan row → one Braze object per destination object
    datapoints.py   data points (billing) per object
    client.py       sessions, rate limiting, retries, response sorting
    destination.py  BrazeDestination (the contract in destinations/base.py)
"""

from __future__ import annotations

import threading

from engine.destinations.braze.destination import BrazeDestination
from engine.project import ConnectionConfig
from engine.specs import SyncSpec

__all__ = ["BrazeDestination", "make_destination"]


def make_destination(connection: ConnectionConfig, api_key: str | None, sync: SyncSpec, *,
                     stop: threading.Event | None = None) -> BrazeDestination:
    """The Braze destination of one sync. `api_key` may be None when planning; `send` needs it.
    `stop` (the runner's first Ctrl-C / SIGTERM) ends the client's waits at once.

    Raises ProjectError for a bad endpoint/instance and SpecError for a destination section Braze
    cannot serve (missing identifier, reserved field names, …)."""
    return BrazeDestination(connection, api_key, sync, client_options={"stop": stop} if stop else None)
