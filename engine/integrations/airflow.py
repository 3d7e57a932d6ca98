"""Airflow: `ReflowRunOperator`, `reflow run` (plan, guards, apply) for a selection of syncs as one task
(`pip install "reflow[airflow]"`; Airflow 3, tested with 3.3; 2.10+ through the older imports, untested).

    from engine.integrations.airflow import ReflowRunOperator

    ReflowRunOperator(task_id="reflow_daily", project_dir="/opt/reflow", select=["tag:daily"],
                      lock_timeout=600)

It calls `engine.api.run` in the worker's process (no shell) and maps the CLI's exit codes:

    0   success
    3   rows left undelivered (rejected, or Braze unreachable for some): the task succeeds and logs a
        warning naming them (Airflow has no "succeeded with warnings" state; they are retried by the next
        run). `fail_on_undelivered=True` fails the task instead.
    1   a sync failed: AirflowException (the task's `retries` apply)
    4   a guard blocked the plan: AirflowFailException (no retry: a retry would be blocked again; review the
        plan, then run with `allow_guards`)
    130 the task was killed (`on_kill` stops the send after the batches in flight): AirflowException

What stops the whole run before anything is sent raises too: the state held by another run or a remote
state unreachable (AirflowException: retried), a project or spec error (AirflowFailException). Messages
are Reflow's, secrets scrubbed. The return value (XCom `return_value`) is the run's numbers per sync.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

try:
    try:
        from airflow.sdk import BaseOperator
        from airflow.sdk.exceptions import AirflowException, AirflowFailException
    except ImportError:             # Airflow 2
        from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]
        from airflow.models import BaseOperator  # type: ignore[no-redef]
except ImportError as exc:          # the optional extra
    raise ImportError('engine.integrations.airflow needs Airflow: pip install "reflow[airflow]"') from exc

from engine import api
from engine.errors import DestinationError, LockError, ReflowError, RemoteStateError


class ReflowRunOperator(BaseOperator):  # type: ignore[misc]
    """Run the selected syncs of the Reflow project at `project_dir` (as `reflow run --select ...`)."""

    template_fields: Sequence[str] = ("project_dir", "select", "target")
    ui_color = "#d9ecff"

    def __init__(self, *, project_dir: str, select: Sequence[str] | None = None, target: str | None = None,
                 allow_guards: Sequence[str] = (), lock_timeout: float = 600.0, dbt_build: bool = False,
                 fail_on_undelivered: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project_dir = project_dir
        self.select = list(select) if select else None
        self.target = target
        self.allow_guards = list(allow_guards)
        self.lock_timeout = lock_timeout
        self.dbt_build = dbt_build
        self.fail_on_undelivered = fail_on_undelivered
        self._stop = threading.Event()

    def execute(self, context: Any) -> dict[str, Any]:
        try:
            result = api.run(self.project_dir, select=self.select, target=self.target,
                             allow_guards=self.allow_guards, lock_timeout=self.lock_timeout,
                             dbt_build=self.dbt_build, stop=self._stop)
        except (LockError, RemoteStateError, DestinationError) as exc:
            raise AirflowException(f"reflow: {exc.message}") from None
        except ReflowError as exc:
            raise AirflowFailException(f"reflow: {exc.message}") from None
        for s in result.syncs:
            self.log.info("%s: %d row(s) planned, %d acknowledged, %d rejected, %d pending; %d request(s), "
                          "%d data points%s", s.name, s.rows, s.acknowledged, s.rejected, s.pending, s.requests,
                          s.data_points, f"; {s.error or s.blocked}" if s.error or s.blocked else "")
        code = result.exit_code
        if code == api.BLOCKED:
            raise AirflowFailException(_problem("a guard blocked the plan", result))
        if code != api.OK and code != api.UNDELIVERED:
            raise AirflowException(_problem("a sync failed" if code == api.FAILED else f"exit code {code}", result))
        if code == api.UNDELIVERED:
            pending = ", ".join(f"{s.name} {s.pending:,}" for s in result.syncs if s.pending)
            if self.fail_on_undelivered:
                raise AirflowException(f"reflow: rows left undelivered ({pending})")
            self.log.warning("reflow: rows left undelivered (%s): the next run retries them; `reflow errors` and "
                             "`reflow status` say why", pending)
        return summary(result)

    def on_kill(self) -> None:
        self._stop.set()


def summary(result: api.RunResult) -> dict[str, Any]:
    """The run as JSON-serialisable values (the task's XCom)."""
    return {"exit_code": result.exit_code, "plan_id": result.plan.plan_id,
            "syncs": [{"name": s.name, "rows": s.rows, "acknowledged": s.acknowledged, "rejected": s.rejected,
                       "pending": s.pending, "requests": s.requests, "data_points": s.data_points,
                       "error": s.error, "blocked": s.blocked} for s in result.syncs]}


def _problem(what: str, result: api.RunResult) -> str:
    lines = [f"reflow run: {what} (exit code {result.exit_code})"]
    lines += [f"{s.name}: {s.error or s.blocked}" for s in result.syncs if s.error or s.blocked]
    return "\n".join(lines)
