"""Measure the sandbox's throughput for 75-object /users/track requests (not a test; run by hand).

    python -m engine.sandbox.bench [--seconds 5] [--threads 8]

The server runs in its own process (as `reflow sandbox` would); the client uses raw http.client
keep-alive connections with a pre-encoded body so that it costs as little CPU as possible.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

_SERVE = (
    "import argparse, sys\nfrom engine.sandbox import cli\np = argparse.ArgumentParser()\n"
    "cli.add_arguments(p)\nsys.exit(cli.run(p.parse_args(sys.argv[1:])))\n"
)


def body(request_no: int) -> bytes:
    attributes = [
        {"external_id": f"user-{(request_no * 75 + i) % 50000}", "first_name": "Ann", "plan": "pro",
         "seats": i, "tags": ["a", "b"], "email": f"u{i}@example.com"}
        for i in range(75)
    ]
    return json.dumps({"attributes": attributes}).encode()


def worker(host: str, port: int, bodies: list[bytes], until: float, counts: list[int], index: int) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Authorization": "Bearer sandbox-api-key", "Content-Type": "application/json"}
    n = 0
    while time.perf_counter() < until:
        connection.request("POST", "/users/track", body=bodies[n % len(bodies)], headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"unexpected status {response.status}")
        n += 1
    counts[index] = n
    connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", _SERVE, "--port", "0", "--rate-limit", "1000000/1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = urlsplit(server.stdout.readline().split()[-1])
        bodies = [body(i) for i in range(20)]
        counts = [0] * args.threads
        until = time.perf_counter() + args.seconds
        threads = [threading.Thread(target=worker, args=(url.hostname, url.port, bodies, until, counts, i))
                   for i in range(args.threads)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        total = sum(counts)
        print(f"{total} requests of 75 objects in {elapsed:.1f}s: {total / elapsed:.0f} req/s "
              f"({total * 75 / elapsed:.0f} objects/s) with {args.threads} client threads")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
