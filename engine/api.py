"""Reflow's public Python API: what `reflow plan` and `reflow run` do, called from Python (an orchestrator,
a notebook, a test), composing the same core functions as the CLI (planner.build_plan,
runner.ready_to_send, runner.apply_plan); no shell.

    from engine import api

    result = api.run("path/to/project", select=["tag:daily"], lock_timeout=600)
    result.exit_code            # 0 ok, 1 a sync failed, 3 rows left undelivered, 4 blocked by a guard
    for s in result.syncs:      # 130: interrupted (the `stop` event was set)
        print(s.name, s.rows, s.requests, s.data_points, s.rejected)

    preview = api.plan("path/to/project", read_only=True)     # a Plan (engine/plan.py): the PR preview

    for info in api.syncs("path/to/project"):   # each sync and what it reads (dbt models, or its model)
        print(info.name, info.reads)

What stops the whole call before anything is sent raises a ReflowError (engine/errors.py): an invalid
project or spec (UserError, ProjectError, SpecError), the state held by another run (LockError; wait with
`lock_timeout`), an unusable remote state (RemoteStateError), a plan stopped while sending because the
state cannot be written (StateError). Its message says what to do; secrets are scrubbed from it. What
happens to one sync is in the result, as the CLI reports it: a sync that could not be planned or sent
(exit code 1, `SyncResult.error`), a guard (4, `SyncResult.blocked`), undelivered rows (3).

Nothing is printed. What the CLI would print as a warning or a note goes to the logger "reflow" (scrubbed).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import GuardError, scrub

if TYPE_CHECKING:
    from engine.context import Context
    from engine.plan import Plan
    from engine.runner import ApplyResult

__all__ = ["RunResult", "SyncInfo", "SyncResult", "plan", "run", "syncs"]

log = logging.getLogger("reflow")

OK, FAILED, UNDELIVERED, BLOCKED, INTERRUPTED = 0, 1, 3, 4, 130     # as the CLI's exit codes


@dataclass(frozen=True)
class Upstream:
    """Something a sync reads: a dbt node (`resource_type` model, seed, snapshot or source; `source_name`
    for a source), or for a DuckDB project the sync's model (`resource_type` "reflow_model")."""

    name: str
    resource_type: str
    source_name: str | None = None


@dataclass(frozen=True)
class SyncInfo:
    name: str
    model: str
    object: str                 # the Braze object: users, events, purchases, catalog_items, …
    connection: str
    tags: tuple[str, ...]
    description: str | None
    reads: tuple[Upstream, ...]


@dataclass(frozen=True)
class SyncResult:
    """One sync of a run: planned `rows` to send; what Braze acknowledged and rejected, what is left pending."""

    name: str
    rows: int = 0
    acknowledged: int = 0
    rejected: int = 0
    pending: int = 0
    requests: int = 0
    data_points: int = 0
    seconds: float = 0.0
    error: str | None = None        # this sync failed (could not be planned, or the send stopped)
    blocked: str | None = None      # a guard blocked it: nothing was sent


@dataclass(frozen=True)
class RunResult:
    plan: Plan
    exit_code: int
    syncs: tuple[SyncResult, ...]

    @property
    def ok(self) -> bool:
        return self.exit_code == OK

    def sync(self, name: str) -> SyncResult:
        return next(s for s in self.syncs if s.name == name)


def _context(project_dir: str | Path, target: str | None, lock_timeout: float = 0.0) -> Context:
    from engine.context import Context

    return Context(project_dir, target=target, lock_timeout=lock_timeout,
                   warn=lambda text: log.warning(scrub(text)), note=lambda text: log.info(scrub(text)))


def syncs(project_dir: str | Path, *, select: Sequence[str] | None = None, target: str | None = None) -> list[SyncInfo]:
    """The project's syncs (those `select` names, as `--select`), each with what it reads."""
    ctx = _context(project_dir, target)
    dbt = ctx.dbt_warehouse() if ctx.project.warehouse.type == "dbt" else None
    found = []
    for s in ctx.syncs(select):
        if dbt is not None:
            reads = tuple(Upstream(n.name, n.resource_type, n.source_name if n.resource_type == "source" else None)
                          for n in dbt.reads(ctx.project, s))
        else:
            reads = (Upstream(s.model, "reflow_model"),)
        found.append(SyncInfo(s.name, s.model, str(s.destination.object), s.destination.connection, s.tags,
                              s.description, reads))
    return found


def plan(project_dir: str | Path, *, select: Sequence[str] | None = None, target: str | None = None,
         read_only: bool = False, lock_timeout: float = 0.0, dbt_build: bool = False) -> Plan:
    """`reflow plan`: the plan, saved in the state for `reflow apply` (status "planned"); with `read_only`
    a preview computed on a private copy of the state (no lock, nothing saved or uploaded; status
    "preview"). Syncs that could not be planned are in `Plan.failed`."""
    from engine.plan import PREVIEW
    from engine.planner import build_plan

    ctx = _context(project_dir, target, lock_timeout)
    chosen = ctx.syncs(select)
    if dbt_build:
        ctx.dbt_build(chosen)
    with ctx.preview_state() if read_only else ctx.state("plan") as state:
        made = build_plan(ctx.project, chosen, state, ctx.warehouse(), ctx.destination_for(need_key=False),
                          project_syncs=[s.name for s in ctx.syncs()])
    return dataclasses.replace(made, status=PREVIEW) if read_only else made


def run(project_dir: str | Path, *, select: Sequence[str] | None = None, target: str | None = None,
        allow_guards: Sequence[str] = (), lock_timeout: float = 0.0, dbt_build: bool = False,
        stop: threading.Event | None = None) -> RunResult:
    """`reflow run`: plan, check the guards, apply. Setting `stop` (from another thread) ends the send
    after the batches in flight, as Ctrl-C does (exit code 130)."""
    from engine.planner import build_plan
    from engine.runner import apply_plan, ready_to_send

    ctx = _context(project_dir, target, lock_timeout)
    chosen = ctx.syncs(select)
    if dbt_build:
        ctx.dbt_build(chosen)
    with ctx.state("run") as state:
        made = build_plan(ctx.project, chosen, state, ctx.warehouse(), ctx.destination_for(need_key=False),
                          project_syncs=[s.name for s in ctx.syncs()])
        for failure in made.failed:
            log.error("sync '%s' was not planned: %s", failure.sync, failure.message)
        try:
            ready_to_send(state, made, {s.name: s.fingerprint for s in made.syncs}, allow_guards)
        except GuardError as exc:
            log.error("%s", exc.message)
            return _blocked(made, allow_guards)
        applied = apply_plan(state, made, {s.name: s for s in chosen},
                             ctx.destination_for(need_key=made.has_changes, stop=stop), stop=stop,
                             allow_guards=allow_guards, mirrors=ctx.mirrors(state, made))
    return _result(made, applied)


def _blocked(made: Plan, allow_guards: Sequence[str]) -> RunResult:
    from engine.runner import blocked_syncs

    why = blocked_syncs(made, allow_guards)
    results = [SyncResult(s.name, rows=s.counts.to_send, blocked=why.get(s.name)) for s in made.syncs]
    results += [SyncResult(f.sync, error=f.message) for f in made.failed]
    return RunResult(made, FAILED if made.failed else BLOCKED, tuple(results))


def _result(made: Plan, applied: ApplyResult) -> RunResult:
    planned = {s.name: s for s in made.syncs}
    results = [SyncResult(o.name, rows=planned[o.name].counts.to_send if o.name in planned else 0,
                          acknowledged=o.acknowledged, rejected=o.rejected, pending=o.pending, requests=o.requests,
                          data_points=o.data_points, seconds=o.seconds, error=o.error, blocked=o.blocked)
               for o in applied.syncs]
    results += [SyncResult(name, error=message) for name, message in applied.failed]
    for r in results:
        if r.error:
            log.error("sync '%s' failed: %s", r.name, r.error)
        elif r.blocked:
            log.warning("sync '%s' was blocked by a guard: %s", r.name, r.blocked)
    return RunResult(made, applied.exit_code, tuple(results))
