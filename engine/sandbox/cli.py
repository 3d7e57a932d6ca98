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
from .options import (
    ADMIN_TOKEN_ENV,
    API_KEY_ENV,
    CATALOG_POST_EXISTING,
    DELETED_COUNTS,
    PROCESS_THEN_FAIL_KINDS,
    PROCESSED_COUNTS,
    OptionError,
    SandboxOptions,
    parse_list,
    parse_rate_limit,
)
from .server import SandboxServer, make_server, start_in_thread

DEFAULT_PORT = 9700


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (0 = any free port; default {DEFAULT_PORT})")
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--api-key", default=None, help=f"REST API key clients must send (default: ${API_KEY_ENV} or sandbox-api-key)")
    add("--state", default=None, metavar="FILE", help="persist the store as JSON: load on start, save on shutdown")
    add("--legacy-limits", action="store_true", help="75 objects per array instead of 75 in total")
    add("--max-array-length", type=int, default=25, help="max elements of an array attribute (FIFO; default 25)")
    add("--latency-ms", type=int, default=0, help="delay every Braze response by N milliseconds")
    add("--fail-5xx-rate", type=float, default=0.0, metavar="F", help="answer 500/502/503/504 with probability F")
    add("--fail-429-first", type=int, default=0, metavar="N", help="answer 429 to the first N Braze requests")
    add("--fail-423-first", type=int, default=0, metavar="N",
        help="answer 423 Resource locked to the first N partner cohort requests")
    add("--partner-api-key", default="sandbox-partner-api-key", help="partner_api_key cohort import requests must carry")
    add("--data-import-key", default="sandbox-data-import-key",
        help="client_secret (the data import key) cohort import requests must carry")
    add("--cohort-partners", default=None, metavar="A,B", help="partners enabled for cohort import (default: any)")
    add("--drop-connection-rate", type=float, default=0.0, metavar="F",
        help="close the socket without answering with probability F")
    add("--seed", type=int, default=None, help="seed of the fault-injection random generator")
    add("--reject-external-ids", default="", metavar="A,B", help="external ids Braze treats as blocklisted")
    add("--permissions", default=None, metavar="P,Q", help="API key permissions (default: all)")
    add("--rate-limit", default=None, metavar="N/SECONDS", help="/users/track limit (default 3000/3)")
    add("--ratelimit-headers", choices=("epoch", "mau"), default="epoch",
        help="x-ratelimit-reset as epoch seconds (default) or MAU-plan seconds remaining")
    add("--error-codes", action="store_true", help="errors[].type as enum codes (EMAIL_BAD_FORMAT) not messages")
    add("--subscription-groups", default=None, metavar="ID,ID", help="known subscription group ids (default: any UUID)")
    add("--long-strings", choices=("reject", "truncate"), default="reject",
        help="custom attribute strings over 255 characters: reject the object (default) or truncate")
    add("--process-then-fail-rate", type=float, default=0.0, metavar="F",
        help="apply a request, then answer 500/504 or drop the connection, with probability F")
    add("--process-then-fail-kind", choices=PROCESS_THEN_FAIL_KINDS, default="mixed",
        help="what follows the apply: 500, 504, drop, or any of them (mixed, default)")
    add("--visibility-delay-ms", type=int, default=0, metavar="N",
        help="profiles created by /users/track stay unknown to other endpoints for N ms")
    add("--processed-counts", choices=PROCESSED_COUNTS, default="all",
        help="*_processed counts every valid object (all, default) or only those that reached a profile")
    add("--catalog-post-existing", choices=CATALOG_POST_EXISTING, default="overwrite",
        help="POST of an existing catalog item: overwrite (default), error (400), or ignore it")
    add("--deleted-counts", choices=DELETED_COUNTS, default="deleted",
        help="/users/delete 'deleted': profiles really deleted (default) or identifiers sent")
    add("--admin-token", default=None, metavar="TOKEN",
        help=f"/_sandbox/ needs 'Authorization: Bearer TOKEN' (default: ${ADMIN_TOKEN_ENV}, else no auth)")


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
