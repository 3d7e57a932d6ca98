"""HTTP/1.1 transport: a ThreadingHTTPServer (keep-alive, daemon threads) in front of `Sandbox.handle`.

No per-request logging. Bodies over the size cap are not read; the connection closes after the 413.
Responses go out in one write with TCP_NODELAY: otherwise Nagle + delayed ACK add ~40 ms per request.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .app import Sandbox
from .options import SandboxOptions

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, host: str, port: int, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.connections_opened = 0
        super().__init__((host, port), _Handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
                self.connections_opened += 1
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """End keep-alive connections so that no handler thread answers after shutdown."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        """Stop serving (from another thread), close the listener and open connections."""
        self.shutdown()
        self.server_close()
        self.close_connections()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = host if isinstance(host, str) else host.decode()
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxServer
    wbufsize = 1 << 16                   # headers and body leave in one send (flushed per request)

    def version_string(self) -> str:
        return "BrazeSandbox"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # no Nagle/delayed-ACK stalls
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def _serve(self) -> None:
        sandbox = self.server.sandbox
        length = self._content_length()
        body: bytes | None = b""
        if length < 0:
            self.send_error(400, "Bad Content-Length")
            return
        if length > sandbox.options.max_body_bytes:
            body = None
            self.close_connection = True
        elif length:
            body = self.rfile.read(length)
        response = sandbox.handle(self.command, self.path, self.headers, body, length, self.server.url)
        if response.drop_connection:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = response.encoded()
        self.send_response(response.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        try:
            return int(raw)
        except ValueError:
            return -1

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


def make_server(options: SandboxOptions, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Bind (raises OSError when the port is taken); call `serve_forever` or `start_in_thread`."""
    return SandboxServer(host, port, Sandbox(options))


def start_in_thread(server: SandboxServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              name="braze-sandbox", daemon=True)
    thread.start()
    return thread
