"""The transport tells a request that certainly did not reach the server from one that may have, and
says what happened to which host."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from scripted_http import RESET, TIMEOUT, ScriptedServer, reply

from engine.destinations.braze.transport import Transport, TransportBroken, TransportError, TransportTimeout

HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer([reply(201, {"message": "success"})], hang=0.8)
    yield s
    s.close()


def failure(transport: Transport, body: bytes = b"{}") -> TransportError:
    with pytest.raises(TransportError) as info:
        transport.request("POST", "/users/track", body, {**HEADERS, "Content-Length": str(len(body))})
    transport.close()
    return info.value


def test_refused_connection_was_not_sent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = failure(Transport(f"http://127.0.0.1:{port}", timeout=0.5))
    assert type(err) is TransportBroken and err.sent is False
    assert err.message == f"cannot connect to 127.0.0.1:{port}: connection refused"


def test_dns_failure_was_not_sent() -> None:
    err = failure(Transport("https://rest.iad-01.braze.invalid", timeout=0.5))
    assert type(err) is TransportBroken and err.sent is False
    assert err.message.startswith("cannot connect to rest.iad-01.braze.invalid:443: DNS lookup failed (")


def test_no_answer_after_sending_may_have_been_processed(server: ScriptedServer) -> None:
    server.answer(TIMEOUT)
    err = failure(Transport(server.url, timeout=0.3))
    assert type(err) is TransportTimeout and err.sent is True
    assert err.message == f"no answer from {server.url.removeprefix('http://')} within 0.3 s"
    assert len(server.calls) == 1


def test_a_connection_closed_after_reading_the_request_may_have_been_processed(server: ScriptedServer) -> None:
    server.answer(RESET)
    err = failure(Transport(server.url, timeout=0.5))
    assert type(err) is TransportBroken and err.sent is True
    assert err.message == f"{server.url.removeprefix('http://')} closed the connection without answering"


def test_a_connection_reset_while_writing_was_not_sent() -> None:
    """The server takes the connection, reads nothing and resets it: the request never arrived whole."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def reset_after_accepting() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        threading.Event().wait(0.1)
        conn.close()                                   # RST

    thread = threading.Thread(target=reset_after_accepting, daemon=True)
    thread.start()
    try:
        err = failure(Transport(f"http://127.0.0.1:{port}", timeout=2.0), body=b"x" * (64 << 20))
    finally:
        thread.join(timeout=5)
        listener.close()
    assert type(err) is TransportBroken and err.sent is False
    assert err.message.startswith(f"connection to 127.0.0.1:{port} failed while sending the request: ")


def test_the_proxy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    err = failure(Transport("https://rest.iad-01.braze.com", timeout=0.5))
    assert err.sent is False
    assert err.message == (f"cannot connect to rest.iad-01.braze.com:443 through the proxy 127.0.0.1:{port}: "
                           "connection refused")
