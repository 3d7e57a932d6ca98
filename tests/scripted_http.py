"""A scripted HTTP server on 127.0.0.1 for client unit tests: each request gets the next scripted
answer (a status/body/headers reply, a callback, or a fault: no answer within the client's timeout,
or the connection closed without an answer). Every request is recorded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TIMEOUT = "timeout"       # answer nothing for `hang` seconds, then close
RESET = "reset"           # close the connection without answering


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"status": status, "body": json.dumps(body if body is not None else {"message": "x"}),
            "headers": headers or {}}


@dataclass
class ScriptedServer:
    """`script` is consumed in order; its last entry repeats. An entry is a reply dict, TIMEOUT,
    RESET, or a callable taking the Call and returning a reply dict."""

    script: list[Any] = field(default_factory=list)
    hang: float = 1.0
    calls: list[Call] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        server = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server.connections += 1

            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                call = Call(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                with server._lock:
                    server.calls.append(call)
                    entry = server.script[0] if len(server.script) == 1 else server.script.pop(0)
                if callable(entry):
                    entry = entry(call)
                if entry == TIMEOUT:
                    time.sleep(server.hang)
                    self.close_connection = True
                    return
                if entry == RESET:
                    self.close_connection = True
                    return
                data = entry["body"].encode() if isinstance(entry["body"], str) else entry["body"]
                self.send_response(entry["status"])
                for name, value in entry.get("headers", {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if entry.get("close"):          # close the keep-alive connection without saying so
                    self.close_connection = True

            do_POST = do_PATCH = do_DELETE = do_PUT = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def answer(self, *entries: Any) -> None:
        with self._lock:
            self.script[:] = list(entries)
            self.calls.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


ReplyFn = Callable[[Call], dict[str, Any]]
