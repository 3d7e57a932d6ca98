"""Keep-alive HTTP/1.1 connections to Braze on `requests`: one Session per sending thread, whose
adapter keeps one connection (urllib3 replaces it when Braze closed it while idle).

Settings come from the environment once, when the transport is made, with requests' own rules:
proxies from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY unless NO_PROXY names the host (HTTPS through a
CONNECT tunnel); certificates are always checked, against the CA bundle named by REQUESTS_CA_BUNDLE /
CURL_CA_BUNDLE / SSL_CERT_FILE, else requests' own (certifi). The sessions themselves do not read the
environment (`trust_env` off): no per-request proxy or bundle look-up, and no credentials from
~/.netrc, which requests would otherwise put in place of the API key. The adapter never retries (the
client owns retries) and no redirect is followed (a 3xx is an answer for the client to sort).

A request that gets no HTTP answer raises a TransportError that says what happened and where, and
whether the server may have processed it:

    phase     failure                                           raises             sent
    connect   DNS, refused, unreachable, proxy tunnel refused   TransportBroken    False
    connect   no connection within the timeout                  TransportTimeout   False
    connect   certificate not trusted, TLS handshake failed     TransportTLS       False
    send      the request could not be written whole            TransportBroken    False
    answer    no answer within the timeout                      TransportTimeout   True
    answer    connection closed or reset, garbled answer        TransportBroken    True

The phase is told by the connection itself (`_Phases`), not guessed from urllib3's exceptions: urllib3
swallows a reset or a broken pipe while the request is written (so that an early answer can still be
read) and reports it when reading the answer, where it looks like a reset after sending.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies, prepend_scheme_if_needed, select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


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
    headers: Mapping[str, str]          # requests' CaseInsensitiveDict: .get() is case-insensitive
    body: bytes


class Transport:
    """Sends requests to one base URL over per-thread keep-alive connections. Thread-safe."""

    def __init__(self, base_url: str, *, timeout: float) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        proxy = select_proxy(base_url, get_environ_proxies(base_url))      # NO_PROXY honoured
        self._proxies = {parts.scheme: proxy} if proxy else {}
        self.proxy = urlsplit(prepend_scheme_if_needed(proxy, "http")) if proxy else None
        self.verify: bool | str = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                                   or os.environ.get("SSL_CERT_FILE") or True)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._sessions)      # sockets never outlive a forgotten transport

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = _Session()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    @property
    def where(self) -> str:
        """host:port of the server, and the proxy when one is used: for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        via = ""
        if self.proxy is not None:
            port = self.proxy.port or (443 if self.proxy.scheme == "https" else 80)
            via = f" through the proxy {self.proxy.hostname}:{port}"
        return f"{host}:{self.port}{via}"

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> Answer:
        """One request and its whole answer. Raises a TransportError whose `sent` is False when the
        request certainly did not reach the server: no connection (DNS, refused, unreachable, TLS
        handshake, connect timeout) or a failure while writing it."""
        if self.https and isinstance(self.verify, str) and not os.path.exists(self.verify):
            raise TransportTLS(f"cannot check the TLS certificate of {self.where}: the CA bundle {self.verify} "
                               "does not exist", sent=False)
        session = self._session()
        prepared = requests.PreparedRequest()       # built by hand: nothing of the session's to merge
        prepared.method = method
        prepared.url = self.base_url + path
        prepared.headers = CaseInsensitiveDict(headers)
        prepared.body = body
        _phase.now = CONNECT
        try:
            response = session.send(prepared, timeout=self.timeout, verify=self.verify, proxies=self._proxies,
                                    cert=None, stream=False, allow_redirects=False)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, http.client.HTTPException) as exc:
            self._drop(session)
            raise self._failure(exc, _phase.now) from exc
        return Answer(response.status_code, response.headers, response.content)

    def _drop(self, session: requests.Session) -> None:
        """After a failure: a new session (and connection) next time, as no state of it is trusted."""
        session.close()
        self._local.session = None
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    def _failure(self, exc: BaseException, phase: str) -> TransportError:
        """`phase`: connect | send (the request did not reach the server) | answer (it may have)."""
        where, root = self.where, _root(exc)
        cause = _cause(root)
        if phase == CONNECT:
            if isinstance(root, ssl.SSLCertVerificationError):
                return TransportTLS(f"the TLS certificate of {where} is not trusted: {cause}", sent=False)
            if isinstance(root, ssl.SSLError) and not isinstance(root, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                return TransportTLS(f"TLS handshake with {where} failed: {cause}", sent=False)
            if isinstance(root, TimeoutError) or isinstance(exc, requests.ConnectTimeout):
                return TransportTimeout(f"cannot connect to {where}: no connection within {self.timeout:g} s",
                                        sent=False)
            return TransportBroken(f"cannot connect to {where}: {cause}", sent=False)
        if phase == SEND:
            return TransportBroken(f"connection to {where} failed while sending the request: {cause}", sent=False)
        if isinstance(root, TimeoutError) or isinstance(exc, requests.Timeout):
            return TransportTimeout(f"no answer from {where} within {self.timeout:g} s", sent=True)
        if isinstance(root, http.client.RemoteDisconnected):
            return TransportBroken(f"{where} closed the connection without answering", sent=True)
        return TransportBroken(f"connection to {where} lost after sending the request: {cause}", sent=True)

    def open_connections(self) -> int:
        """Sessions open, one per sending thread that has sent (each holds at most one connection)."""
        with self._lock:
            return len(self._sessions)

    def close(self) -> None:
        with self._lock:
            _close_all(self._sessions)


# -- how far a request got, told by the connection ----------------------------------------------

CONNECT, SEND, ANSWER = "connect", "send", "answer"
_phase = threading.local()          # per sending thread: urllib3 works on the caller's thread


class _Phases:
    """Marks the thread's request `send` once the connection is up (DNS, TCP, proxy tunnel and TLS
    handshake done) and `answer` once the whole request was written."""

    def connect(self) -> None:
        super().connect()                                   # type: ignore[misc]
        _phase.now = SEND

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:                           # type: ignore[attr-defined]
            _phase.now = SEND                               # a kept-alive connection
        super().request(*args, **kwargs)                    # type: ignore[misc]
        _phase.now = ANSWER


class _Connection(_Phases, HTTPConnection):
    pass


class _TLSConnection(_Phases, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS: dict[str, type[HTTPConnectionPool]] = {"http": _Pool, "https": _TLSPool}


class _Adapter(HTTPAdapter):
    """One connection, no retries (Retry(0, read=False): a failure is raised at once), and connections
    that tell how far a request got."""

    def __init__(self) -> None:
        super().__init__(pool_connections=1, pool_maxsize=1, max_retries=0)
        self._pool: Any = None

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: bool | str | None,
                                        proxies: Any = None, cert: Any = None) -> Any:
        """The pool, looked up once: the session sends to one base URL with settings fixed at start."""
        if self._pool is None or self._pool.pool is None:          # none yet, or closed
            self._pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            super().cert_verify(self._pool, request.url or "", verify, cert)
        return self._pool

    def cert_verify(self, conn: Any, url: str, verify: bool | str | None, cert: Any) -> None:
        return None                                                 # done once, with the pool

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is urllib3.poolmanager.pool_classes_by_scheme:   # not SOCKS
            manager.pool_classes_by_scheme = _POOLS
        return manager


class _Session(requests.Session):
    """A session that reads nothing from the environment and follows no redirect."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        adapter = _Adapter()
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


# -- messages ------------------------------------------------------------------------------------

def _root(exc: BaseException) -> BaseException:
    """The socket, TLS or HTTP parsing error under requests' and urllib3's wrappers (or `exc`)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        package = type(err).__module__.partition(".")[0]
        if isinstance(err, OSError | http.client.HTTPException) and package not in ("requests", "urllib3"):
            return err
        inner = [*err.args, getattr(err, "reason", None), err.__cause__, err.__context__]
        todo.extend(e for e in inner if isinstance(e, BaseException))
    return exc


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
    if isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError | requests.Timeout):
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


def _close_all(sessions: list[requests.Session]) -> None:
    while sessions:
        sessions.pop().close()
