"""`reflow sandbox`'s arguments, apart from the server (the CLI builds every command's parser on each run:
this module imports no more than the options)."""

from __future__ import annotations

import argparse

from .options import (
    ADMIN_TOKEN_ENV,
    API_KEY_ENV,
    CATALOG_POST_EXISTING,
    DELETED_COUNTS,
    PROCESS_THEN_FAIL_KINDS,
    PROCESSED_COUNTS,
)

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
