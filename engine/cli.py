"""The `reflow` command: wiring only. One error handler; exit codes 0 ok, 1 error, 2 usage,
3 finished with undelivered rows, 4 blocked by a guard, 130 interrupted."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine import __version__
from engine.context import Context as BaseContext
from engine.errors import ReflowError, UserError, scrub, scrubbed_output
from engine.interrupts import Interrupts

# the handlers import what they use when they run (`reflow --help` loads no DuckDB)
Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `reflow ARGV`; without `argv`, the process's own command line, and the process exits after
    (the console script, `python -m engine`): see `_starting` and `_exiting`."""
    entry = argv is None
    if entry:
        _starting()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    # --project-dir/--debug are accepted before or after the command (shared, SUPPRESSed actions)
    args.project_dir = getattr(args, "project_dir", None)
    args.debug = getattr(args, "debug", False)
    args.target = getattr(args, "target", None)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    with scrubbed_output():
        code = _handle(args)
    if entry:
        _exiting()
    return code


def _starting() -> None:
    """The process runs one command: the cyclic garbage collector runs after every 50,000 new objects
    rather than Python's 700 (as mypy does). What a command makes (modules, specs, plan rows) lives until
    it ends or is freed by reference counting, so frequent collections only cost time (about 10 ms of a
    small command); objects in reference cycles are still collected, a little later."""
    import gc

    gc.set_threshold(50_000, *gc.get_threshold()[1:])


def _exiting() -> None:
    """The command is done and its process is about to exit: move every object it made out of the
    cyclic garbage collector's reach, so that the interpreter's exit does not walk them all (about 20 ms,
    a tenth of a small command); the operating system frees the memory. What must run at exit is
    registered with atexit (e.g. closing the warehouse), which is not affected."""
    import gc

    gc.freeze()


def _handle(args: argparse.Namespace) -> int:
    """Run the command: the one error handler (exit codes in the module docstring)."""
    try:
        return int(args.handler(args))
    except ReflowError as exc:
        from engine import console

        if args.debug:
            _write_traceback()
        console.error(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:             # `reflow history | head`: the reader has all it wanted
        _quiet_stdout()
        return 141                      # as a shell reports a SIGPIPE'd command
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into a clear line
        if args.debug:
            _write_traceback()
        sys.stderr.write(scrub(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the "
                               "traceback, and please report it)\n"))
        return 1


def _write_traceback() -> None:
    """--debug: the traceback of the exception being handled, scrubbed, on stderr."""
    import traceback

    sys.stderr.write(scrub(traceback.format_exc()))


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail on the closed pipe."""
    import os

    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser. Given the arguments it is about to parse, the options of `reflow sandbox`
    (whose definitions are a module of their own) are added only when they name it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-dir", default=argparse.SUPPRESS,
                        help="folder holding reflow_project.yml (default: found from the current folder up)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks for errors")
    common.add_argument("--target", default=argparse.SUPPRESS, metavar="NAME",
                        help="dbt projects: the profile target to read (default: as dbt chooses)")
    parser = argparse.ArgumentParser(
        prog="reflow", parents=[common],
        description="Declarative reverse ETL: keep Braze in step with your warehouse.")
    parser.add_argument("--version", action="version", version=f"reflow {__version__}")
    parser.set_defaults(handler=None)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def cmd(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = cmd("init", _init, "scaffold a working project")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--schemas", action="store_true",
                   help="only refresh the project's copies of the JSON Schemas (schemas/) after an upgrade")
    cmd("validate", _validate, "check the project file, every sync spec and every model")
    p = cmd("compile", _compile, "print the rendered SQL of a sync's model")
    p.add_argument("sync")
    p = cmd("ls", _ls, "list syncs with their model, object and connection")
    _select(p)
    p = _lock_timeout(cmd("plan", _plan, "compute and save a plan: what would be sent, field by field"))
    _select(p)
    _dbt_build_flag(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON (schemas/plan.schema.json)")
    p.add_argument("--format", choices=["text", "json", "markdown"], default=None,
                   help="text (default), json (same as --json), or markdown for a pull-request comment")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report of the plan to FILE")
    p.add_argument("--read-only", action="store_true",
                   help="plan against a private copy of the state, taking no lock and saving nothing (a remote "
                        "state is downloaded, never uploaded): a preview for pull requests, which cannot be applied")
    p = _lock_timeout(cmd("apply", _apply, "send exactly a saved plan (the latest by default)"))
    p.add_argument("plan_id", nargs="?")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--allow-guard", action="append", default=[], metavar="NAME",
                   help="apply although guard NAME blocked the plan (repeatable)")
    p = _lock_timeout(cmd("run", _run, "plan, check guards, apply: for schedulers (never asks)"))
    _select(p)
    _dbt_build_flag(p)
    p.add_argument("--allow-guard", action="append", default=[], metavar="NAME")
    p.add_argument("--json", action="store_true", help="print the plan and outcome as JSON")
    cmd("check", _check_connection, "test each connection: endpoint, API key, and the permissions the syncs need "
        "(writes nothing)")
    cmd("status", _status, "per sync: last run, rows in the snapshot, pending retries")
    p = cmd("history", _history, "recent runs: counts, duration, data points and outcome")
    p.add_argument("sync", nargs="?")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--working-copy", action="store_true",
                   help="remote state: the runs this folder's working copy holds (uploaded or not), not the stored "
                        "state's")
    p = cmd("errors", _errors, "rows Braze rejected, with its reason and the payload sent")
    p.add_argument("sync", nargs="?")
    p.add_argument("--run", dest="run_id")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default=None)
    p = cmd("show", _show, "browse a plan's rows and their exact payloads")
    p.add_argument("plan_id", nargs="?")
    p.add_argument("--sync")
    p.add_argument("--op", choices=["added", "changed", "removed", "invalid", "retry"])
    p.add_argument("--key")
    p.add_argument("--field", help="rows whose value of this field changed")
    p.add_argument("--limit", type=int, default=20, help="rows to show (0: all, for exports)")
    p.add_argument("--format", choices=["table", "json", "jsonl", "csv"], default="table")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report of the plan to FILE")
    p = _lock_timeout(cmd("reset", _reset, "forget what Braze holds for a sync: the next plan sends every row again in full"))
    p.add_argument("sync")
    p.add_argument("--yes", action="store_true")
    p = cmd("state", _state_help, "back up, restore, rename, forget; a remote state: push, pull, unlock")
    state_sub = p.add_subparsers(title="state commands", metavar="STATE_COMMAND")
    q = state_sub.add_parser("backup", parents=[common], help="a consistent copy of the state file, taken under its lock")
    q.set_defaults(handler=_state_backup)
    _lock_timeout(q)
    q.add_argument("file", nargs="?", help="where to write it (default: next to the state file, timestamped)")
    q = state_sub.add_parser("rename", parents=[common],
                             help="give a sync's state a new name (after renaming its sync file or name:)")
    q.set_defaults(handler=_state_rename)
    _lock_timeout(q)
    q.add_argument("old")
    q.add_argument("new")
    q = state_sub.add_parser("forget", parents=[common],
                             help="drop the state of a sync the project no longer has (its history stays)")
    q.set_defaults(handler=_state_forget)
    _lock_timeout(q)
    q.add_argument("sync")
    q.add_argument("--yes", action="store_true")
    q = state_sub.add_parser("restore", parents=[common],
                             help="put a backup in place of the state file (the old one is kept as .bak)")
    q.set_defaults(handler=_state_restore)
    q.add_argument("file")
    q.add_argument("--yes", action="store_true")
    _lock_timeout(q)
    q = state_sub.add_parser("push", parents=[common],
                             help="a remote state: upload the working copy a stopped run left (see docs/remote-state.md)")
    q.set_defaults(handler=_state_push)
    q.add_argument("--force", action="store_true",
                   help="replace the stored state even if another run wrote it since the working copy was read")
    _lock_timeout(q)
    q = state_sub.add_parser("pull", parents=[common],
                             help="a remote state: drop the working copy; the next run starts from the stored state")
    q.set_defaults(handler=_state_pull)
    q.add_argument("--force", action="store_true", help="required: what the working copy holds alone is dropped")
    q = state_sub.add_parser("unlock", parents=[common],
                             help="a remote state: remove the lock of a run that died (its LOCK_ID is in the error)")
    q.set_defaults(handler=_state_unlock)
    q.add_argument("lock_id", metavar="LOCK_ID")
    q.add_argument("--force", action="store_true", help="required: make sure the holder is dead first")
    p = cmd("sandbox", _sandbox, "serve the local Braze emulator")
    if argv is None or "sandbox" in argv:
        _sandbox_args(p)
    p = cmd("example", _example, "build or mutate the example project's sample warehouse")
    p.add_argument("action", choices=["build", "mutate"])
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--step", type=int, default=1)
    p = cmd("dbt", _dbt_help, "dbt projects: generate lineage for dbt (`reflow dbt exposures`)")
    p.set_defaults(dbt_parser=p)
    dbt_sub = p.add_subparsers(title="dbt commands", metavar="DBT_COMMAND")
    q = dbt_sub.add_parser("exposures", parents=[common], help="one dbt exposure per sync, so dbt docs shows Braze")
    q.set_defaults(handler=_dbt_exposures)
    q.add_argument("--write", action="store_true",
                   help="write models/_reflow/_reflow__exposures.yml in the dbt project (default: print it)")
    p = cmd("demo", _demo, "the main job: build the example, sync it to a local sandbox, mutate, sync again")
    p.add_argument("--keep", action="store_true", help="keep the state and warehouse afterwards")
    return parser


def _lock_timeout(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--lock-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for another run's state lock (default 0: stop at once, naming it)")
    return p


def _select(p: argparse.ArgumentParser) -> None:
    p.add_argument("--select", "-s", nargs="+", default=None, metavar="SELECTOR",
                   help="sync names, tag:TAG, model:NAME, MODEL+ (syncs downstream of a dbt model) or a sync file")


def _dbt_build_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dbt-build", action="store_true",
                   help="dbt projects: first `dbt build` the models the selected syncs read (stops if dbt fails)")


def _sandbox_args(p: argparse.ArgumentParser) -> None:
    try:
        from engine.sandbox.arguments import add_arguments
    except ImportError:
        return
    add_arguments(p)


# ------------------------------------------------------------------------------------------ context


class Context(BaseContext):
    """The command's project (engine/context.py), from its arguments."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.project_dir, target=getattr(args, "target", None),
                         lock_timeout=getattr(args, "lock_timeout", 0.0))

def confirm(command: str, question: str) -> bool:
    """Ask on the terminal (a UserError without one: pass --yes); True when the answer is 'yes'."""
    if not sys.stdin.isatty():
        raise UserError(f"{command} needs confirmation: pass --yes (no terminal to ask on)")
    return input(f"{question} Type 'yes' to continue: ").strip().lower() == "yes"


# ------------------------------------------------------------------------------------------ commands


def _init(args: argparse.Namespace) -> int:
    from engine import console
    from engine.scaffold import init_project, write_schemas

    if args.schemas:
        console.print_lines([f"wrote {p}" for p in write_schemas(Path(args.dir))])
        return 0
    created = init_project(Path(args.dir))
    console.print_lines([f"created {p}" for p in created] + [
        "", f"Next: cd {args.dir} && reflow validate && reflow plan"])
    return 0


def _validate(args: argparse.Namespace) -> int:
    from engine import console
    from engine.planner import check_model_columns, run_models

    ctx = Context(args)
    syncs = ctx.syncs()
    warehouse = ctx.warehouse()
    check_model_columns(ctx.project, syncs, warehouse)
    rows = run_models(ctx.project, syncs, warehouse, ctx.destination_for(need_key=False))
    console.print_lines([f"OK: {ctx.project.file} and {len(syncs)} sync(s) are valid; every model renders, "
                         f"returns the columns its sync names and runs to its end ({rows:,} rows, keys unique "
                         "and not null)."])
    return 0


def _compile(args: argparse.Namespace) -> int:
    from engine.planner import render_sync

    ctx = Context(args)
    [sync] = ctx.syncs([args.sync])
    sys.stdout.write(render_sync(ctx.project, sync, ctx.warehouse()).sql.rstrip() + "\n")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from engine import console

    ctx = Context(args)
    rows = [{"sync": s.name, "model": s.model, "object": s.destination.object,
             "connection": s.destination.connection, "declared in": s.path} for s in ctx.syncs(args.select)]
    console.print_lines(console.table(rows, ["sync", "model", "object", "connection", "declared in"]))
    return 0


def _plan(args: argparse.Namespace) -> int:
    import dataclasses

    from engine import console
    from engine.plan import PREVIEW
    from engine.planner import build_plan

    ctx = Context(args)
    syncs = ctx.syncs(args.select)
    if args.dbt_build:
        ctx.dbt_build(syncs)
    fmt = "json" if args.json else (args.format or "text")
    with ctx.preview_state() if args.read_only else ctx.state("plan") as state:
        with console.progress("planning") as progress:
            plan = build_plan(ctx.project, syncs, state, ctx.warehouse(), ctx.destination_for(need_key=False),
                              progress=progress, project_syncs=[s.name for s in ctx.syncs()])
        if args.read_only:
            plan = dataclasses.replace(plan, status=PREVIEW)
        if args.html:
            _write_html(state, plan, Path(args.html))
    if fmt == "json":
        console.print_json(plan.to_json())
    elif fmt == "markdown":
        from engine.report_markdown import plan_markdown

        console.print_text(plan_markdown(plan))
    else:
        console.print_plan(plan)
    for failure in plan.failed:
        console.error(f"sync '{failure.sync}' was not planned: {failure.message}")
    return max((f.exit_code for f in plan.failed), default=0)


def _write_html(state: Any, plan: Any, path: Path, **filters: Any) -> None:
    from engine import console
    from engine.report_html import write_report

    info = write_report(path, state, plan, **filters)
    note = "" if info["embedded"] == info["matching"] else f" (first {info['embedded']:,} of {info['matching']:,})"
    console.note(f"wrote {path}: {info['embedded']:,} row(s){note}")


def _apply(args: argparse.Namespace) -> int:
    from engine import console
    from engine.runner import ready_to_send
    from engine.state.plans import load_plan

    ctx = Context(args)
    syncs = {s.name: s for s in ctx.syncs()}
    with ctx.state("apply") as state:
        plan = load_plan(state, args.plan_id)
        ready_to_send(state, plan, _fingerprints_now(ctx, plan, syncs), args.allow_guard)
        if plan.has_changes and not args.yes:
            if sys.stdin.isatty():
                console.print_plan(plan)
            if not confirm("apply", f"Send plan {plan.plan_id} to Braze?"):
                console.print_lines(["Not applied."])
                return 1
        return _send(ctx, state, plan, syncs, args.allow_guard)


def _fingerprints_now(ctx: Context, plan: Any, syncs: dict[str, Any]) -> dict[str, str]:
    """Each planned sync's fingerprint now (spec, model definition, destination): a plan whose differ is stale."""
    from engine.planner import current_fingerprint

    warehouse = ctx.warehouse()
    make = ctx.destination_for(need_key=False)
    return {sp.name: current_fingerprint(ctx.project, syncs[sp.name], warehouse, make(syncs[sp.name]))
            for sp in plan.syncs if sp.name in syncs}


def _send(ctx: Context, state: Any, plan: Any, syncs: dict[str, Any], allow: Sequence[str]) -> int:
    from engine import console
    from engine.runner import apply_plan

    stop = threading.Event()
    quiet = not plan.has_changes
    with Interrupts(stop), console.progress("sending") as progress:
        result = apply_plan(state, plan, syncs, ctx.destination_for(need_key=not quiet, stop=stop), stop=stop,
                            progress=progress, allow_guards=allow, mirrors=ctx.mirrors(state, plan))
    if quiet and not result.failed:
        console.print_lines([f"Plan {plan.plan_id}: no changes; nothing to send."])
    else:
        console.print_apply(result)
    return result.exit_code


def _run(args: argparse.Namespace) -> int:
    from engine import console
    from engine.errors import GuardError
    from engine.planner import build_plan
    from engine.runner import ready_to_send

    ctx = Context(args)
    syncs = ctx.syncs(args.select)
    if args.dbt_build:
        ctx.dbt_build(syncs)
    by_name = {s.name: s for s in syncs}
    with ctx.state("run") as state:
        with console.progress("planning") as progress:
            plan = build_plan(ctx.project, syncs, state, ctx.warehouse(), ctx.destination_for(need_key=False),
                              progress=progress, project_syncs=[s.name for s in ctx.syncs()])
        if args.json:
            console.print_json(plan.to_json())
        else:
            console.print_plan(plan)
        for failure in plan.failed:
            console.error(f"sync '{failure.sync}' was not planned: {failure.message}")
        try:
            ready_to_send(state, plan, {s.name: s.fingerprint for s in plan.syncs}, args.allow_guard)
        except GuardError:
            if plan.failed:         # the most serious outcome: a sync failed
                console.error("guard blocked the plan")
                return 1
            raise
        return _send(ctx, state, plan, by_name, args.allow_guard)


def _check_connection(args: argparse.Namespace) -> int:
    from engine import console
    from engine.destinations.braze.check import check_project
    from engine.destinations.braze.destination import USER_AGENT

    ctx = Context(args)
    report = check_project(ctx.project, ctx.syncs(), user_agent=USER_AGENT)
    console.print_check(report)
    return 0 if report.ok else 1


def _status(args: argparse.Namespace) -> int:
    from engine import console
    from engine.errors import LockError

    ctx = Context(args)
    syncs = ctx.syncs()
    rows = []
    try:
        with ctx.state("status", read_only=True) as state:
            for s in syncs:
                runs = state.runs(s.name, limit=1)
                # as apply's summary counts them: rejected by Braze, and pending (invalid, not sent, unknown)
                rejected = state.rejected_count(s.name)
                rows.append(_status_row(s.name, runs[0] if runs else None, state.snapshot_rows(s.name), rejected,
                                        state.pending_count(s.name) - rejected, state.pending_reason(s.name)))
    except LockError as exc:
        view = _live_view(ctx, exc)
        for s in syncs:
            last = next((r for r in view.runs if r["sync"] == s.name), None)
            counts = view.syncs.get(s.name, {})
            rows.append(_status_row(s.name, last, counts.get("snapshot_rows", 0), counts.get("rejected", 0),
                                    counts.get("pending", 0), counts.get("why_pending")))
        console.print_lines(console.live_lines(view))
    console.print_lines(console.table(rows, ["sync", "snapshot rows", "rejected", "pending", "last run", "outcome",
                                             "why pending"]))
    return 0


def _status_row(sync: str, last: dict[str, Any] | None, snapshot_rows: int, rejected: int, pending: int,
                why: str | None) -> dict[str, Any]:
    return {"sync": sync, "snapshot rows": snapshot_rows, "rejected": rejected, "pending": pending,
            "last run": f"{last['started_at']:%Y-%m-%d %H:%M:%S}" if last else "never",
            "outcome": last["status"] if last else "-", "why pending": why}


def _live_view(ctx: Context, busy: Exception) -> Any:
    """While another Reflow run holds the state (DuckDB lets no one else open it): the status file that run
    keeps current (engine/state/live.py). Raises `busy` (the LockError, which names the holder) when there
    is none (e.g. an older Reflow holds it)."""
    from engine.state.live import read_live

    view = read_live(ctx.project.state_path)
    if view is None or not view.published:
        raise busy
    return view


def _history(args: argparse.Namespace) -> int:
    from engine import console
    from engine.errors import LockError

    ctx = Context(args)
    try:
        with ctx.state("history", read_only=True, working_copy=args.working_copy) as state:
            runs = state.runs(args.sync, limit=args.limit)
        live = None
    except LockError as exc:
        live = _live_view(ctx, exc)
        runs = [r for r in live.runs if not args.sync or r["sync"] == args.sync][:args.limit]
    if args.json:
        console.print_json([console.run_json(r) for r in runs])
        return 0
    if live is not None:
        console.print_lines(console.live_lines(live))
    console.print_table(console.history_rows(runs), console.HISTORY_COLUMNS)
    return 0


def _errors(args: argparse.Namespace) -> int:
    from engine import console
    from engine.state.runs import row_errors

    ctx = Context(args)
    with ctx.state("errors", read_only=True) as state:
        rows = row_errors(state, args.sync, args.run_id, args.limit)
    fmt = "json" if args.json else (args.format or "table")
    if fmt == "json":
        console.print_json([console.error_json(r) for r in rows])
    elif fmt == "jsonl":
        console.print_jsonl(console.error_json(r) for r in rows)
    elif fmt == "csv":
        console.print_csv(("run_id", "sync", "key", "reason", "payload", "at"),
                          ([r["run_id"], r["sync"], r["key"], r["reason"], r["item"] or "",
                            console.error_json(r)["at"]] for r in rows))
    else:
        console.print_blocks(console.errors_blocks(rows, args.limit))
    return 0


def _show(args: argparse.Namespace) -> int:
    from engine import console
    from engine.show import CSV_COLUMNS, count_rows, csv_record, iter_plan_rows, json_record
    from engine.state.plans import load_plan

    ctx = Context(args)
    filters = {"sync": args.sync, "op": args.op, "key": args.key, "field": args.field}
    with ctx.state("show", read_only=True) as state:
        plan = load_plan(state, args.plan_id)
        if args.html:
            _write_html(state, plan, Path(args.html), **filters)
            return 0
        rows = iter_plan_rows(state, plan, limit=args.limit or None, **filters)
        if args.format == "json":
            console.print_json([json_record(r) for r in rows])
        elif args.format == "jsonl":
            console.print_jsonl(json_record(r) for r in rows)
        elif args.format == "csv":
            console.print_csv(CSV_COLUMNS, (csv_record(r) for r in rows))
        else:
            shown = list(rows)
            matching = count_rows(state, plan, **filters) if len(shown) >= (args.limit or 0) else len(shown)
            console.print_blocks(console.show_blocks(plan.plan_id, shown, matching))
    return 0


def _reset(args: argparse.Namespace) -> int:
    from engine import console

    ctx = Context(args)
    [sync] = ctx.syncs([args.sync])
    if not args.yes and not confirm("reset", f"Forget what Braze holds for '{sync.name}'? The next plan "
                                             "re-sends every row in full."):
        return 1
    with ctx.state("reset") as state:
        marked = state.reset(sync.name)
    console.print_lines([f"{sync.name}: forgot the values of {marked:,} row(s) Braze holds; the next plan sends every "
                         "row again in full (nulls included) and still removes rows that left the model."])
    return 0


def _state_help(args: argparse.Namespace) -> int:
    raise UserError("reflow state needs a command: `reflow state backup [FILE]`, `reflow state restore FILE`, "
                    "`reflow state rename OLD NEW`, `reflow state forget SYNC`; for a remote state also "
                    "`reflow state push`, `reflow state pull --force`, `reflow state unlock --force LOCK_ID`")


def _state_rename(args: argparse.Namespace) -> int:
    from engine import console

    ctx = Context(args)
    with ctx.state("state rename") as state:
        state.rename_sync(args.old, args.new)
    console.print_lines([f"renamed the state of sync '{args.old}' to '{args.new}': what Braze holds is kept."])
    return 0


def _state_forget(args: argparse.Namespace) -> int:
    from engine import console

    ctx = Context(args)
    if not args.yes and not confirm("forget", f"Drop the state of '{args.sync}'?"):
        return 1
    with ctx.state("state forget") as state:
        rows = state.forget_sync(args.sync)
    console.print_lines([f"dropped the state of sync '{args.sync}' ({rows:,} rows); Braze is not changed."])
    return 0


def _state_backup(args: argparse.Namespace) -> int:
    from engine import console
    from engine.state.backup import backup_state

    ctx = Context(args)
    remote = ctx.remote()
    if remote is not None:          # a consistent copy of the stored state, taken under its lock
        from engine.state import State

        dest = Path(args.file) if args.file else None
        with State.open(ctx.project.state_path, command="state backup", memory_limit=ctx.project.memory_limit,
                        remote=remote, lock_timeout=args.lock_timeout) as state:
            done = backup_state(ctx.project.state_path, dest, memory_limit=ctx.project.memory_limit, state=state)
        console.print_lines([f"backed up {remote.url} to {done.path} ({done.bytes:,} bytes, state schema "
                             f"{done.schema_version}); it holds customer data: store it like the state"])
        return 0
    done = backup_state(ctx.project.state_path, Path(args.file) if args.file else None,
                        memory_limit=ctx.project.memory_limit)
    console.print_lines([f"backed up {ctx.project.state_path} to {done.path} ({done.bytes:,} bytes, "
                         f"state schema {done.schema_version}); it holds customer data: store it like the state file"])
    return 0


def _state_restore(args: argparse.Namespace) -> int:
    from engine import console
    from engine.state.backup import restore_state

    ctx = Context(args)
    remote = ctx.remote()
    target = remote.url if remote else ctx.project.state_path
    if not args.yes and not confirm("restore", f"Replace {target} with {args.file}?"):
        return 1
    if remote is not None:          # under the remote lock: the backup becomes the stored state
        with remote.session("state restore", lock_timeout=args.lock_timeout, replacing=True) as copy:
            done = restore_state(copy, Path(args.file))
            remote.upload()
            remote.finished()
        console.print_lines([f"restored {args.file} to {remote.url} (state schema {done.schema_version}). Run "
                             "`reflow plan`: rows delivered since the backup are planned again (events and "
                             "purchases among them would reach Braze twice)."])
        return 0
    done = restore_state(ctx.project.state_path, Path(args.file))
    kept = f"; the previous state file is kept as {done.replaced}" if done.replaced else ""
    console.print_lines([f"restored {args.file} to {done.path} (state schema {done.schema_version}){kept}. "
                         "Run `reflow plan`: rows delivered since the backup are planned again (events and "
                         "purchases among them would reach Braze twice)."])
    return 0


def _state_push(args: argparse.Namespace) -> int:
    from engine import console

    ctx = Context(args)
    remote = ctx.require_remote("state push")
    if Path(str(remote.copy) + ".wal").exists():       # a killed run's last commits: into the file first
        from engine.state import State

        with State.open(remote.copy, command="state push", memory_limit=ctx.project.memory_limit):
            pass
    done = remote.push(force=args.force, lock_timeout=args.lock_timeout)
    replaced = f", replacing version {done.replaced}" if done.replaced else ""
    console.print_lines([f"uploaded the working copy {remote.copy} to {done.url} ({done.bytes:,} bytes{replaced})."])
    return 0


def _state_pull(args: argparse.Namespace) -> int:
    from engine import console

    ctx = Context(args)
    remote = ctx.require_remote("state pull")
    if not args.force:
        raise UserError(f"`reflow state pull --force` drops the working copy {remote.copy} (what it holds and "
                        f"{remote.url} does not is lost: those rows are planned again); pass --force to do it")
    from engine.state.lock import StateLock

    lock = StateLock(remote.copy, "state pull")     # no run on this machine is using the working copy
    lock.acquire()
    try:
        had = remote.pull()
    finally:
        lock.release()
    console.print_lines([f"dropped the working copy {remote.copy}; the next run starts from {remote.url}."
                         if had else f"there was no working copy; the next run starts from {remote.url}."])
    return 0


def _state_unlock(args: argparse.Namespace) -> int:
    from engine import console
    from engine.state.remote_lock import describe

    ctx = Context(args)
    remote = ctx.require_remote("state unlock")
    if not args.force:
        raise UserError("`reflow state unlock --force LOCK_ID` removes another run's lock: make sure that run is dead "
                        "(two runs sending at once would send rows twice), then pass --force")
    holder = remote.unlock(args.lock_id)
    console.print_lines([f"removed the lock of {remote.url} ({describe(holder)}). Its run's acknowledgements since "
                         "its last upload are planned again by the next run."])
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from engine.sandbox.cli import run

    return int(run(args))


def _example(args: argparse.Namespace) -> int:
    from engine import console
    from engine.example import build_warehouse, mutate_warehouse

    ctx = Context(args)
    path = ctx.project.root / ctx.project.warehouse.path
    if args.action == "build":
        counts = build_warehouse(path, customers=args.customers)
        console.print_lines([f"built {ctx.project.warehouse.path}: "
                             + ", ".join(f"{k} {v:,}" for k, v in counts.items())])
    else:
        summary = mutate_warehouse(path, step=args.step)
        console.print_lines([f"mutated {ctx.project.warehouse.path}: "
                             + ", ".join(f"{k} {v:,}" for k, v in summary.items())])
    return 0


def _dbt_help(args: argparse.Namespace) -> int:
    args.dbt_parser.print_help(sys.stderr)
    return 2


def _dbt_exposures(args: argparse.Namespace) -> int:
    from engine import console
    from engine.dbt_exposures import exposures_yaml, write_exposures

    ctx = Context(args)
    if ctx.project.warehouse.type != "dbt":
        raise UserError("`reflow dbt exposures` needs a dbt project (warehouse: {type: dbt} in reflow_project.yml)")
    syncs = ctx.syncs()
    warehouse = ctx.warehouse()
    if args.write:
        path = write_exposures(ctx.project, syncs, warehouse)
        console.note(f"wrote {path} ({len(syncs)} exposure(s))")
    else:
        sys.stdout.write(exposures_yaml(ctx.project, syncs, warehouse))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from engine.demo import run_demo

    return run_demo(Path(args.project_dir) if args.project_dir else None, keep=args.keep)
