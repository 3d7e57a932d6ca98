"""Which Braze paths exist, with the permission and rate-limit bucket of each (braze-api.md §1.3, §3.1)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import catalogs, cohorts, identity, subscriptions, track

if TYPE_CHECKING:
    from .app import Request, Sandbox
    from .responses import Response

Handler = Callable[["Sandbox", "Request"], "Response"]


@dataclass(frozen=True)
class Route:
    method: str
    template: str            # "/catalogs/{catalog_name}/items"
    handler: Handler
    permission: str
    bucket: str
    has_body: bool = True
    writes: bool = True      # changes the store (process-then-fail faults apply only to these)
    body_auth: bool = False  # partner endpoints: credentials in the body (cohorts.authenticate), not a header

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"


ROUTES: tuple[Route, ...] = (
    Route("POST", "/users/track", track.users_track, "users.track", "users.track"),
    Route("POST", "/users/export/ids", identity.export_ids, "users.export.ids", "users.export.ids", writes=False),
    Route("POST", "/users/delete", identity.delete_users, "users.delete", "users.identity"),
    Route("POST", "/users/alias/new", identity.alias_new, "users.alias.new", "users.identity"),
    Route("POST", "/users/alias/update", identity.alias_update, "users.alias.update", "users.identity"),
    Route("POST", "/users/identify", identity.identify, "users.identify", "users.identity"),
    Route("POST", "/subscription/status/set", subscriptions.status_set, "subscription.status.set", "subscription"),
    Route("POST", "/catalogs", catalogs.create_catalog, "catalogs.create", "catalogs.manage"),
    Route("GET", "/catalogs", catalogs.list_catalogs, "catalogs.get", "catalogs.manage", has_body=False,
          writes=False),
    Route("DELETE", "/catalogs/{catalog_name}", catalogs.delete_catalog, "catalogs.delete", "catalogs.manage",
          has_body=False),
    Route("POST", "/catalogs/{catalog_name}/items", catalogs.add_items, "catalogs.add_items", "catalogs.items.async"),
    Route("PATCH", "/catalogs/{catalog_name}/items", catalogs.update_items, "catalogs.update_items",
          "catalogs.items.async"),
    Route("PUT", "/catalogs/{catalog_name}/items", catalogs.replace_items, "catalogs.replace_items",
          "catalogs.items.async"),
    Route("DELETE", "/catalogs/{catalog_name}/items", catalogs.delete_items, "catalogs.delete_items",
          "catalogs.items.async"),
    Route("GET", "/catalogs/{catalog_name}/items", catalogs.get_items, "catalogs.get_items", "catalogs.items.sync",
          has_body=False, writes=False),
    Route("POST", "/partners/{partner}/cohorts", cohorts.create_cohort, "", "partners.cohorts", body_auth=True),
    Route("POST", "/partners/{partner}/cohorts/users", cohorts.cohort_users, "", "partners.cohorts", body_auth=True),
)

_PARAM = re.compile(r"\{(\w+)\}")


class Router:
    """Exact-path match (a trailing slash is a different, unknown path, as on Braze)."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self._static: dict[tuple[str, str], Route] = {}
        self._patterns: list[tuple[re.Pattern[str], Route]] = []
        for route in routes:
            if "{" in route.template:
                regex = "^" + _PARAM.sub(r"(?P<\1>[^/]+)", route.template) + "$"
                self._patterns.append((re.compile(regex), route))
            else:
                self._static[(route.method, route.template)] = route

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        route = self._static.get((method, path))
        if route is not None:
            return route, {}
        for regex, candidate in self._patterns:
            if candidate.method == method:
                found = regex.match(path)
                if found:
                    return candidate, found.groupdict()
        return None, {}
