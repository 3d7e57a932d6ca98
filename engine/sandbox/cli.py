"""`reflow sandbox`: the local Braze emulator as a command (the main CLI calls these two functions).

Bound to anything but loopback, it warns on stderr: /_sandbox/ (the inspection API) serves every
profile, without authentication unless --admin-token (or $REFLOW_SANDBOX_ADMIN_TOKEN) is set.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import signal
import sys
import threading
from types import FrameType

from .app import StateFileError
from .arguments import DEFAULT_PORT, add_arguments  # noqa: F401 - `reflow sandbox`'s arguments
from .options import (
    ADMIN_TOKEN_ENV,
    OptionError,
    SandboxOptions,
    parse_list,
    parse_rate_limit,
)
from .server import SandboxServer, make_server, start_in_thread


def options_from_args(args: argparse.Namespace) -> SandboxOptions:
    return SandboxOptions.build(
        api_key=args.api_key,
        state=args.state,
        legacy_limits=args.legacy_limits,
        max_array_length=args.max_array_length,
        latency_ms=args.latency_ms,
        fail_5xx_rate=args.fail_5xx_rate,
        fail_429_first=args.fail_429_first,
        fail_423_first=args.fail_423_first,
        partner_api_key=args.partner_api_key,
        data_import_key=args.data_import_key,
        cohort_partners=parse_list(args.cohort_partners) if args.cohort_partners else None,
        drop_connection_rate=args.drop_connection_rate,
        seed=args.seed,
        reject_external_ids=parse_list(args.reject_external_ids),
        permissions=parse_list(args.permissions) if args.permissions is not None else None,
        rate_limit=parse_rate_limit(args.rate_limit) if args.rate_limit else None,
        ratelimit_headers=args.ratelimit_headers,
        error_codes=args.error_codes,
        subscription_groups=parse_list(args.subscription_groups) if args.subscription_groups else None,
        long_strings=args.long_strings,
        process_then_fail_rate=args.process_then_fail_rate,
        process_then_fail_kind=args.process_then_fail_kind,
        visibility_delay_ms=args.visibility_delay_ms,
        processed_counts=args.processed_counts,
        catalog_post_existing=args.catalog_post_existing,
        deleted_counts=args.deleted_counts,
        admin_token=args.admin_token if args.admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV) or None,
    )


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1); anything else reaches other machines."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, options: SandboxOptions) -> str | None:
    """The stderr warning for a sandbox bound beyond loopback; None on loopback."""
    if is_loopback(host):
        return None
    guard = ("it needs the admin token" if options.admin_token is not None
             else "without authentication; set --admin-token to require a token")
    return (f"reflow sandbox: warning: listening on {host}, not loopback: /_sandbox/ serves every profile "
            f"to anyone who can reach this port ({guard})")


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or until `stop` is set); 0 on a clean shutdown, 1 on bad input."""
    try:
        options = options_from_args(args)
        server = make_server(options, args.host, args.port)
    except OptionError as exc:
        return _fail(str(exc))
    except StateFileError as exc:
        return _fail(str(exc))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return _fail(f"port {args.port} on {args.host} is already in use; pick another with --port")
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    stop = stop or threading.Event()
    previous = _install_signal_handlers(stop)
    warning = exposure_warning(args.host, options)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    thread = start_in_thread(server)
    print(f"Braze sandbox listening on {server.url}", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        _shutdown(server, thread)
        _restore_signal_handlers(previous)
    return 0


def _shutdown(server: SandboxServer, thread: threading.Thread) -> None:
    server.stop()
    thread.join(timeout=5)
    server.sandbox.save_state()


def _fail(text: str) -> int:
    print(f"reflow sandbox: error: {text}", file=sys.stderr, flush=True)
    return 1


Handlers = dict[int, object]


def _install_signal_handlers(stop: threading.Event) -> Handlers:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: Handlers = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    return previous


def _restore_signal_handlers(previous: Handlers) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]
