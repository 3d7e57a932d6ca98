"""`Context`: a loaded project and what the commands and the Python API (engine/api.py) open from it: its
syncs (selected), warehouse, destinations and state. Heavy modules are imported when used."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ProjectError, UserError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from engine.destinations.base import Destination
    from engine.locations import MirrorKeeper
    from engine.plan import Plan
    from engine.specs import SyncSpec
    from engine.state import State
    from engine.state.remote import RemoteState
    from engine.warehouse.base import Warehouse
    from engine.warehouse.dbt import DbtWarehouse

Say = Callable[[str], None]


class Context:
    """The loaded project, syncs and helpers shared by the commands and the Python API.

    `warn` and `note` receive what a person should read (the CLI's console; the API's logger)."""

    def __init__(self, project_dir: str | Path | None, *, target: str | None = None, lock_timeout: float = 0.0,
                 warn: Say | None = None, note: Say | None = None) -> None:
        from engine import console
        from engine.project import find_project, load_project

        self.warn: Say = warn or console.warning
        self.note: Say = note or console.note
        self.lock_timeout = lock_timeout
        self.root = find_project(str(project_dir) if project_dir is not None else None)
        self.project = load_project(self.root)
        self._warehouse: Any = None
        self._syncs: list[SyncSpec] | None = None
        if target:
            import dataclasses

            if self.project.warehouse.type != "dbt":
                raise UserError("--target chooses a dbt profile target; this project's warehouse is not dbt")
            self.project = dataclasses.replace(
                self.project, warehouse=dataclasses.replace(self.project.warehouse, target=target))
        for w in getattr(self.project, "warnings", ()):
            self.warn(w)

    def syncs(self, select: Sequence[str] | None = None) -> list[SyncSpec]:
        """The project's syncs (`select`ed), read and validated once per Context: a command that asks for
        its selection and for every sync reads each spec file once."""
        from engine.specs import load_syncs

        if self._syncs is None:
            self._syncs = load_syncs(self.project)
        return select_syncs(self._syncs, select, reads_from=self._reads_from(select))

    def _reads_from(self, select: Sequence[str] | None) -> Callable[[SyncSpec, str], bool] | None:
        """For `MODEL+` selectors on a dbt project: does a sync read MODEL or anything built from it?"""
        from engine.specs import is_graph_selector

        if self.project.warehouse.type != "dbt" or not any(is_graph_selector(s) for s in select or ()):
            return None
        warehouse = self.dbt_warehouse()

        def reads_from(sync: SyncSpec, model: str) -> bool:
            below = warehouse.downstream_of(model)
            if below is None:
                raise UserError(f"--select {model}+: no dbt model named '{model}'")
            return any(n.unique_id in below for n in warehouse.reads(self.project, sync))

        return reads_from

    def warehouse(self) -> Warehouse:
        from engine.warehouse import open_warehouse

        if self._warehouse is None:
            import weakref

            self._warehouse = open_warehouse(self.project)
            weakref.finalize(self, self._warehouse.close)
        return self._warehouse

    def dbt_warehouse(self) -> DbtWarehouse:
        """The warehouse of a dbt project (the caller checked `warehouse.type` is dbt)."""
        from engine.warehouse.dbt import DbtWarehouse

        warehouse = self.warehouse()
        if not isinstance(warehouse, DbtWarehouse):
            raise UserError("this needs a dbt project (warehouse: {type: dbt} in reflow_project.yml)")
        return warehouse

    def dbt_build(self, syncs: Sequence[SyncSpec]) -> None:
        """`--dbt-build`: build (with their parents) the dbt models the syncs read, before planning."""
        if self.project.warehouse.type != "dbt":
            raise UserError("--dbt-build needs a dbt project (warehouse: {type: dbt} in reflow_project.yml)")
        warehouse = self.dbt_warehouse()
        models = sorted({n.name for s in syncs for n in warehouse.reads(self.project, s)
                         if n.resource_type in ("model", "seed", "snapshot")})
        seconds = warehouse.build(models)
        self.note(f"dbt build --select {' '.join('+' + m for m in models)}: ok ({seconds:.1f} s)")

    def destination_for(self, *, need_key: bool,
                        stop: threading.Event | None = None) -> Callable[[SyncSpec], Destination]:
        from engine.destinations.braze.destination import make_destination
        from engine.destinations.braze.endpoints import resolve_base_url
        from engine.project import resolve_api_key
        from engine.specs import cohort_attributes, kept_cohorts

        def make(sync: SyncSpec) -> Destination:
            conn = self.project.connections[sync.destination.connection]
            key = resolve_api_key(conn, required=need_key)
            # the connections to this one's Braze workspace, as far as Reflow can tell: the same REST host
            host = resolve_base_url(conn)
            same = [n for n, c in self.project.connections.items() if n == conn.name or _host(c) == host]
            return make_destination(conn, key, sync, stop=stop,
                                    cohort_attributes=cohort_attributes(self.syncs(), same),
                                    kept_cohorts=kept_cohorts(self.syncs(), sync, same))

        return make

    def mirrors(self, state: State, plan: Plan) -> MirrorKeeper | None:
        """What keeps the warehouse mirrors of the plan's `diff: warehouse` syncs in step (None: none)."""
        from engine.locations import MirrorKeeper as Keeper

        if not any(sp.read.get("diff") == "warehouse" for sp in plan.syncs):
            return None
        return Keeper(self.project, self.warehouse(), state)

    def state(self, command: str, *, read_only: bool = False, working_copy: bool = False
              ) -> AbstractContextManager[State]:
        from engine.state import State

        remote = self.remote()
        if working_copy and remote is None:
            raise UserError(f"--working-copy reads a remote state's working copy; {self.project.file} has a local "
                            "state_path, which is read as it is")
        return State.open(self.project.state_path, command=command, memory_limit=self.project.memory_limit,
                          read_only=read_only, remote=remote, lock_timeout=self.lock_timeout,
                          working_copy=working_copy)

    def preview_state(self) -> AbstractContextManager[State]:
        """A private copy of the state for a read-only plan (engine/state/preview.py): no lock, no upload."""
        from engine.state.preview import open_preview

        return open_preview(self.project.state_path, memory_limit=self.project.memory_limit, remote=self.remote())

    def remote(self) -> RemoteState | None:
        """The remote state (`state_path: s3://…`) with its working copy, or None for a local state file."""
        if self.project.state_url is None:
            return None
        from engine.project import DEFAULT_STATE_PATH
        from engine.state.remote import RemoteState

        return RemoteState(self.project.state_url, self.project.state_path, **self.project.remote_state,
                           local_state=self.project.root / DEFAULT_STATE_PATH)

    def require_remote(self, command: str) -> RemoteState:
        remote = self.remote()
        if remote is None:
            raise UserError(f"`reflow {command}` is for a remote state (state_path: s3://…); this project's state is "
                            f"the local file {self.project.state_path}")
        return remote


def select_syncs(syncs: list[SyncSpec], select: Sequence[str] | None, *,
                 reads_from: Callable[[SyncSpec, str], bool] | None = None) -> list[SyncSpec]:
    from engine.specs import select_syncs as select_specs

    return select_specs(syncs, select, reads_from=reads_from)


def _host(connection: Any) -> str | None:
    """A connection's REST base URL, None when it has none Reflow can resolve (that connection's own
    syncs say so; the others go ahead)."""
    from engine.destinations.braze.endpoints import resolve_base_url

    try:
        return resolve_base_url(connection)
    except ProjectError:
        return None
