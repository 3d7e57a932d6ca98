"""Dagster: `reflow_assets(project_dir, ...)`, one asset per sync (`pip install "reflow[dagster]"`).

    from dagster import Definitions
    from engine.integrations.dagster import reflow_assets

    defs = Definitions(assets=[reflow_assets("reflow", select=["tag:daily"])])

The syncs are one multi-asset (the shape of dagster-dbt's `@dbt_assets`): materializing any subset of
them is one `engine.api.run(select=those syncs)`, so one plan, one state lock and one apply, never two
runs racing for the state. Each sync's asset is keyed `[*key_prefix, sync name]` (`["reflow", name]` by
default: a sync is often named after its model, which is an asset of its own) and depends on what the
sync reads: for a dbt project the dbt models, seeds and snapshots its SQL reads (keyed `[name]`, as
dagster-dbt keys them by default) and sources (`[source_name, table]`); for a DuckDB project its model
(`[model]`). `upstream_key` maps them otherwise (e.g. to add dagster-dbt's key prefix).

Each materialization carries the run's metadata: rows planned, acknowledged, rejected, pending, requests,
data points, seconds. Exit codes as the CLI's: 1 (a sync failed) and 4 (blocked by a guard) fail the step,
after the syncs that went through are materialized; 3 (rows left undelivered) materializes every sync with
its `pending` count and logs a warning (Dagster has no "succeeded with warnings" state).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import dagster as dg
except ImportError as exc:          # the optional extra
    raise ImportError('engine.integrations.dagster needs Dagster: pip install "reflow[dagster]"') from exc

from engine import api

UpstreamKey = Callable[[api.Upstream], Any]     # -> dagster.AssetKey


def default_upstream_key(upstream: api.Upstream) -> Any:
    if upstream.resource_type == "source" and upstream.source_name:
        return dg.AssetKey([upstream.source_name, upstream.name])
    return dg.AssetKey([upstream.name])


def reflow_assets(project_dir: str | Path, *, select: Sequence[str] | None = None, target: str | None = None,
                  key_prefix: Sequence[str] = ("reflow",), group_name: str = "reflow", name: str = "reflow_syncs",
                  upstream_key: UpstreamKey = default_upstream_key, allow_guards: Sequence[str] = (),
                  lock_timeout: float = 600.0, dbt_build: bool = False) -> Any:
    """A Dagster multi-asset (`dagster.AssetsDefinition`) with one asset per selected sync of the project.
    `lock_timeout`: seconds to wait for another run holding the state (a schedule overlapping a manual run)."""
    project = str(project_dir)
    infos = api.syncs(project, select=select, target=target)
    keys = {info.name: dg.AssetKey([*key_prefix, info.name]) for info in infos}
    specs = [dg.AssetSpec(keys[info.name], deps=[upstream_key(u) for u in info.reads], skippable=True,
                          description=info.description or f"Reflow sync {info.name}: {info.model} → Braze {info.object}",
                          group_name=group_name, kinds={"braze"},
                          metadata={"reflow/sync": info.name, "reflow/model": info.model,
                                    "reflow/object": info.object, "reflow/tags": ", ".join(info.tags)})
             for info in infos]
    names = {key: sync for sync, key in keys.items()}

    @dg.multi_asset(specs=specs, name=name, can_subset=True, group_name=None)
    def _syncs(context):  # Dagster checks this annotation at runtime: left bare (AssetExecutionContext)
        chosen = sorted(names[k] for k in context.selected_asset_keys)
        result = api.run(project, select=chosen, target=target, allow_guards=allow_guards,
                         lock_timeout=lock_timeout, dbt_build=dbt_build)
        done = {s.name: s for s in result.syncs}
        for sync in chosen:
            outcome = done.get(sync, api.SyncResult(sync))
            if outcome.error or outcome.blocked:
                context.log.error(f"{sync}: {outcome.error or 'blocked by a guard: ' + str(outcome.blocked)}")
                continue
            yield dg.MaterializeResult(asset_key=keys[sync], metadata=_metadata(outcome, result.plan.plan_id))
        if result.exit_code == api.UNDELIVERED:
            context.log.warning("reflow: rows were left undelivered (exit code 3): they are retried by the next "
                                "run; `reflow errors` and `reflow status` say why")
        elif result.exit_code != api.OK:
            raise dg.Failure(description=_failure(result), metadata={"exit_code": result.exit_code})

    return _syncs


def _metadata(outcome: api.SyncResult, plan_id: str) -> dict[str, Any]:
    return {"rows": outcome.rows, "acknowledged": outcome.acknowledged, "rejected": outcome.rejected,
            "pending": outcome.pending, "requests": outcome.requests, "data_points": outcome.data_points,
            "seconds": round(outcome.seconds, 3), "plan_id": plan_id}


def _failure(result: api.RunResult) -> str:
    what = {api.FAILED: "a sync failed", api.BLOCKED: "a guard blocked the plan",
            api.INTERRUPTED: "the run was interrupted"}.get(result.exit_code, f"exit code {result.exit_code}")
    lines = [f"reflow run: {what} (exit code {result.exit_code})"]
    lines += [f"- {s.name}: {s.error or s.blocked}" for s in result.syncs if s.error or s.blocked]
    return "\n".join(lines)
