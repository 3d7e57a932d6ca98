"""Keep-alive HTTP/1.1 connections to Braze, one per sending thread, on the standard library's
`http.client`.

Why not `requests` (the project's card): issue 15 moved this transport onto a `requests` Session per
sending thread (a pre-built PreparedRequest through Session.send, no retries, no redirects, the
adapter's pool looked up once; in this branch's history) and measured it against this one under 64 sending
threads on one pinned core: 0.34-0.39 ms of client CPU per 75-object request against 0.18-0.24 ms here
(urllib3's urlopen alone costs 0.25 ms or more), and +0.2 ms on the whole send path, which takes it
over the 1 ms budget (docs/benchmarks.md, "Send"). So the transport stays here, kept small: the
security-sensitive parts are the standard library's (ssl verifies certificates and host names,
http.client builds the CONNECT tunnel); this module only picks the bundle and the proxy.

TLS verifies certificates: a CA bundle from REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE / SSL_CERT_FILE, else
certifi's (a declared dependency), else the system store. A bundle that cannot be read is a TLS
failure naming it. HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY are honoured (HTTPS through a
CONNECT tunnel to an http:// proxy; a proxy without a port is on 80, as in requests); nothing is read
from ~/.netrc.

A request that gets no HTTP answer raises a TransportError that says what happened and where, and
whether the server may have processed it:

    phase     failure                                           raises             sent
    connect   DNS, refused, unreachable, proxy tunnel refused   TransportBroken    False
    connect   no connection within the timeout                  TransportTimeout   False
    connect   certificate not trusted, TLS handshake failed     TransportTLS       False
    send      the request could not be written whole            TransportBroken    False
    answer    no answer within the timeout                      TransportTimeout   True
    answer    connection closed or reset, garbled answer        TransportBroken    True
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import urllib.request
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class TransportError(Exception):
    """A request got no HTTP answer. `message` says what happened, short and naming the host
    ("cannot connect to rest.iad-01.braze.com:443: connection refused"); `sent` says whether the whole
    request had been handed to the network, so that the server may have processed it."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.sent = sent


class TransportTimeout(TransportError):
    """No connection, or no answer, within the timeout."""


class TransportBroken(TransportError):
    """The connection could not be made, or failed or closed before a whole answer arrived."""


class TransportTLS(TransportError):
    """The TLS handshake or the certificate check failed (the request was never sent)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Any                        # http.client's HTTPMessage: .get() is case-insensitive
    body: bytes


class Transport:
    """Sends requests to one base URL over per-thread keep-alive connections. Thread-safe."""

    def __init__(self, base_url: str, *, timeout: float) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None       # made at the first connection (it reads the bundle)
        self._proxy = _proxy_for(base_url)
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._open)      # sockets never outlive a forgotten transport

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None and _dropped(conn.sock):
            self._drop(conn)                 # closed by Braze while idle: reconnect, not a failure
            conn = None
        if conn is None:
            host, port = _address(self._proxy) if self._proxy else (self.host, self.port)
            if self.https:
                conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._context)
                if self._proxy:
                    conn.set_tunnel(self.host, self.port)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
            self._local.conn = conn
            with self._lock:
                self._open.append(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)

    @property
    def where(self) -> str:
        """host:port of the server, and the proxy when one is used: for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        via = " through the proxy {}:{}".format(*_address(self._proxy)) if self._proxy else ""
        return f"{host}:{self.port}{via}"

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> Answer:
        """One request and its whole answer. Raises a TransportError whose `sent` is False when the
        request certainly did not reach the server: no connection (DNS, refused, unreachable, TLS
        handshake, connect timeout) or a failure while writing it."""
        if self.https and self._context is None:
            bundle = _ca_bundle()
            try:
                self._context = _tls_context(bundle)
            except (OSError, ValueError) as exc:          # ssl.SSLError is an OSError
                raise TransportTLS(f"cannot check the TLS certificate of {self.where}: the CA bundle {bundle} "
                                   f"cannot be read ({_cause(exc)})", sent=False) from exc
        conn = self._connection()
        target = self.prefix + path
        if self._proxy and not self.https:
            target = f"http://{self.host}:{self.port}{target}"          # absolute form through an HTTP proxy
        if conn.sock is None:
            try:
                conn.connect()
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                raise self._failure(exc, "connect") from exc
        try:
            conn.request(method, target, body, dict(headers))
        except (OSError, http.client.HTTPException) as exc:
            self._drop(conn)                 # not all of the request was written: it cannot be processed
            raise self._failure(exc, "send") from exc
        try:
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop(conn)
            raise self._failure(exc, "answer") from exc
        if response.will_close:
            self._drop(conn)
        return Answer(response.status, response.headers, data)

    def _failure(self, exc: BaseException, phase: str) -> TransportError:
        """`phase`: connect | send (the request did not reach the server) | answer (it may have)."""
        where, cause = self.where, _cause(exc)
        if phase == "connect":
            if isinstance(exc, ssl.SSLCertVerificationError):
                return TransportTLS(f"the TLS certificate of {where} is not trusted: {cause}", sent=False)
            if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                return TransportTLS(f"TLS handshake with {where} failed: {cause}", sent=False)
            if isinstance(exc, TimeoutError):
                return TransportTimeout(f"cannot connect to {where}: no connection within {self.timeout:g} s",
                                        sent=False)
            return TransportBroken(f"cannot connect to {where}: {cause}", sent=False)
        if phase == "send":
            return TransportBroken(f"connection to {where} failed while sending the request: {cause}", sent=False)
        if isinstance(exc, TimeoutError):
            return TransportTimeout(f"no answer from {where} within {self.timeout:g} s", sent=True)
        if isinstance(exc, http.client.RemoteDisconnected):
            return TransportBroken(f"{where} closed the connection without answering", sent=True)
        return TransportBroken(f"connection to {where} lost after sending the request: {cause}", sent=True)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        with self._lock:
            _close_all(self._open)


def _cause(exc: BaseException) -> str:
    """What went wrong, in a few lower-case words."""
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc.reason or exc)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "the TLS connection was closed"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).lower().replace("_", " ")
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "connection closed by the server"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection"
    if isinstance(exc, http.client.HTTPException):
        return f"not a valid HTTP answer ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]          # "network is unreachable"
    return str(exc) or type(exc).__name__                           # e.g. "Tunnel connection failed: 407 …"


def _dropped(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed (or answered out of turn) by the peer."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _close_all(conns: list[http.client.HTTPConnection]) -> None:
    while conns:
        conns.pop().close()


def _ca_bundle() -> str | None:
    """The CA bundle to trust: the one the environment names (requests' variables, then OpenSSL's), else
    certifi's."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if bundle:
        return bundle
    try:
        import certifi
    except ImportError:                  # declared, but a hand-made environment may lack it: the system store
        return None
    return str(certifi.where())


def _tls_context(bundle: str | None = None) -> ssl.SSLContext:
    """Certificates and host names checked, against `bundle` (None: the system store)."""
    return ssl.create_default_context(cafile=bundle)


def _address(proxy: Any) -> tuple[str, int]:
    """A proxy's host and port; the port defaults as in requests (80, 443 for an https:// proxy)."""
    return proxy.hostname or "", proxy.port or (443 if proxy.scheme == "https" else 80)


def _proxy_for(base_url: str) -> Any:
    parts = urlsplit(base_url)
    if urllib.request.proxy_bypass_environment(parts.hostname or ""):  # type: ignore[attr-defined]
        return None
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    return urlsplit(proxy if "//" in proxy else "http://" + proxy) if proxy else None
