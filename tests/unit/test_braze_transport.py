"""The Braze transport's settings, seen from the wire: certificates checked against certifi's bundle or
the one the environment names, proxies from the environment (NO_PROXY honoured, HTTPS tunnelled), no
credentials from ~/.netrc, no redirect followed, no cookies."""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripted_http import ScriptedServer, reply

from engine.destinations.braze.transport import (
    Transport,
    TransportBroken,
    TransportTLS,
    _ca_bundle,
    _proxy_for,
    _tls_context,
)

PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "no_proxy",
                   "all_proxy")
BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
BODY = b'{"attributes":[]}'
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-live-KEY",
           "Content-Length": str(len(BODY))}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*PROXY_VARIABLES, *BUNDLE_VARIABLES):
        monkeypatch.delenv(name, raising=False)


def post(transport: Transport) -> object:
    try:
        return transport.request("POST", "/users/track", BODY, HEADERS)
    finally:
        transport.close()


# -- certificates ----------------------------------------------------------------------------------

def test_certificates_and_host_names_are_checked_against_certifi_unless_the_environment_names_a_bundle(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import certifi

    assert _ca_bundle() == certifi.where()
    context = _tls_context(_ca_bundle())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0
    for name in BUNDLE_VARIABLES:
        monkeypatch.setenv(name, str(tmp_path / f"{name}.pem"))
    assert _ca_bundle() == str(tmp_path / "REQUESTS_CA_BUNDLE.pem")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert _ca_bundle() == str(tmp_path / "CURL_CA_BUNDLE.pem")
    monkeypatch.delenv("CURL_CA_BUNDLE")
    assert _ca_bundle() == str(tmp_path / "SSL_CERT_FILE.pem")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A TLS server on 127.0.0.1 with a self-signed certificate: (its URL, the certificate)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "22")
            self.end_headers()
            self.wfile.write(b'{"message": "success"}')

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def test_an_untrusted_certificate_is_refused_before_anything_is_sent(tls_server: tuple[str, Path]) -> None:
    url, _ = tls_server
    with pytest.raises(TransportTLS) as info:
        post(Transport(url, timeout=5))
    assert info.value.sent is False
    assert info.value.message.startswith(f"the TLS certificate of {url.removeprefix('https://')} is not trusted: ")


def test_the_ca_bundle_named_by_requests_ca_bundle_is_trusted(tls_server: tuple[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, cert = tls_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    answer = post(Transport(url, timeout=5))
    assert answer.status == 201 and answer.body == b'{"message": "success"}'         # type: ignore[attr-defined]


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_ca_bundle_that_cannot_be_read_is_a_tls_failure_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                    content: str | None) -> None:
    bundle = tmp_path / "ca.pem"
    if content is not None:
        bundle.write_text(content)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with pytest.raises(TransportTLS) as info:
        post(Transport("https://rest.iad-01.braze.com", timeout=5))
    assert info.value.sent is False
    assert info.value.message.startswith(f"cannot check the TLS certificate of rest.iad-01.braze.com:443: the CA "
                                         f"bundle {bundle} cannot be read (")


# -- proxies ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "url", "proxy"), [
    ({}, "https://rest.iad-01.braze.com", None),
    ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "https://rest.iad-01.braze.com", ("proxy.corp", 3128)),
    ({"https_proxy": "proxy.corp:3128"}, "https://rest.iad-01.braze.com", ("proxy.corp", 3128)),
    ({"ALL_PROXY": "http://proxy.corp:3128"}, "https://rest.iad-01.braze.com", ("proxy.corp", 3128)),
    ({"HTTPS_PROXY": "proxy.corp:3128", "NO_PROXY": ".braze.com"}, "https://rest.iad-01.braze.com", None),
    ({"HTTPS_PROXY": "proxy.corp:3128", "no_proxy": "localhost,braze.com"}, "https://rest.iad-01.braze.com", None),
    ({"HTTP_PROXY": "http://proxy.corp:8080"}, "http://127.0.0.1:4010", ("proxy.corp", 8080)),
    ({"HTTP_PROXY": "http://proxy.corp:8080", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:4010", None),
    ({"HTTP_PROXY": "http://proxy.corp:8080"}, "https://rest.iad-01.braze.com", None),     # HTTP only
    ({"HTTPS_PROXY": "http://proxy.corp"}, "https://rest.iad-01.braze.com", ("proxy.corp", 80)),  # as requests
])
def test_proxies_follow_the_environment(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str,
                                        proxy: tuple[str, int] | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    transport = Transport(url, timeout=5)
    found = _proxy_for(url)
    assert (None if found is None else (found.hostname, found.port or 80)) == proxy
    assert transport.where.endswith("" if proxy is None else f" through the proxy {proxy[0]}:{proxy[1]}")


class FakeProxy:
    """Takes one connection on 127.0.0.1, records what came before the blank line, answers `answer`."""

    def __init__(self, answer: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.head = b""
        self.thread = threading.Thread(target=self._serve, args=(answer,), daemon=True)
        self.thread.start()

    def _serve(self, answer: bytes) -> None:
        conn, _ = self.listener.accept()
        with conn:
            while b"\r\n\r\n" not in self.head:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                self.head += chunk
            conn.sendall(answer)

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.listener.close()


def test_https_goes_through_a_connect_tunnel_and_a_refusal_names_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = FakeProxy(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    try:
        with pytest.raises(TransportBroken) as info:
            post(Transport("https://rest.fra-02.braze.eu", timeout=5))
    finally:
        proxy.close()
    assert proxy.head.startswith(b"CONNECT rest.fra-02.braze.eu:443 HTTP/1.")     # Braze's name, not resolved here
    assert b"Authorization" not in proxy.head                                          # the key stays in the tunnel
    assert info.value.sent is False
    assert info.value.message == (f"cannot connect to rest.fra-02.braze.eu:443 through the proxy 127.0.0.1:"
                                  f"{proxy.port}: Tunnel connection failed: 403 Forbidden")


def test_http_goes_through_the_proxy_in_absolute_form(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = FakeProxy(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 22\r\n"
                      b"Connection: close\r\n\r\n" + b'{"message": "success"}')
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    try:
        answer = post(Transport("http://sandbox.test:4010", timeout=5))
    finally:
        proxy.close()
    assert proxy.head.startswith(b"POST http://sandbox.test:4010/users/track HTTP/1.1\r\n")
    assert answer.status == 201                                                        # type: ignore[attr-defined]


# -- what the session adds, and what it does not ---------------------------------------------------

@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer([reply(201, {"message": "success"})])
    yield s
    s.close()


def test_netrc_credentials_never_replace_the_api_key(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\ndefault login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    (tmp_path / ".netrc").chmod(0o600)
    post(Transport(server.url, timeout=5))
    assert server.calls[0].headers["Authorization"] == "Bearer sk-live-KEY"


def test_a_redirect_is_an_answer_not_followed(server: ScriptedServer) -> None:
    server.answer(reply(302, {"message": "moved"}, headers={"Location": f"{server.url}/elsewhere"}))
    answer = post(Transport(server.url, timeout=5))
    assert answer.status == 302 and answer.headers.get("LOCATION") == f"{server.url}/elsewhere"  # type: ignore[attr-defined]
    assert [call.path for call in server.calls] == ["/users/track"]


def test_answer_headers_are_case_insensitive_and_the_request_is_sent_as_given(server: ScriptedServer) -> None:
    server.answer(reply(201, {"message": "success"}, headers={"X-RateLimit-Remaining": "7"}))
    answer = post(Transport(server.url + "/", timeout=5))
    assert answer.headers.get("x-ratelimit-remaining") == "7"                         # type: ignore[attr-defined]
    assert answer.headers.get("CONTENT-TYPE") == "application/json"                   # type: ignore[attr-defined]
    call = server.calls[0]
    assert (call.method, call.path, call.body) == ("POST", "/users/track", BODY)
    assert call.headers["Authorization"] == "Bearer sk-live-KEY" and "Cookie" not in call.headers


def test_cookies_set_by_the_server_are_not_sent_back(server: ScriptedServer) -> None:
    server.answer(reply(201, {"message": "success"}, headers={"Set-Cookie": "AWSALB=sticky; Path=/"}))
    transport = Transport(server.url, timeout=5)
    transport.request("POST", "/users/track", BODY, HEADERS)
    transport.request("POST", "/users/track", BODY, HEADERS)
    transport.close()
    assert all("Cookie" not in call.headers for call in server.calls)
