"""The Braze transport's settings: certificate checks on, CA bundle and proxies from the environment."""

from __future__ import annotations

import ssl

import pytest

from engine.destinations.braze.transport import Transport, _proxy_for, _tls_context


def test_tls_checks_certificates_and_host_names(monkeypatch):
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    context = _tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 0          # certifi's bundle (installed with requests)


def test_a_ca_bundle_named_in_the_environment_is_used(monkeypatch, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with pytest.raises(ssl.SSLError):            # it was read: a broken bundle is an error, not ignored
        _tls_context()


@pytest.mark.parametrize(("env", "url", "proxy"), [
    ({}, "https://rest.iad-01.braze.com", None),
    ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "https://rest.iad-01.braze.com", ("proxy.corp", 3128)),
    ({"HTTPS_PROXY": "proxy.corp:3128", "NO_PROXY": ".braze.com"}, "https://rest.iad-01.braze.com", None),
    ({"HTTP_PROXY": "http://proxy.corp:8080"}, "http://127.0.0.1:4010", ("proxy.corp", 8080)),
    ({"HTTP_PROXY": "http://proxy.corp:8080", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:4010", None),
])
def test_proxies_follow_the_environment(monkeypatch, env, url, proxy):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = _proxy_for(url)
    assert (None if found is None else (found.hostname, found.port)) == proxy


def test_an_https_connection_through_a_proxy_tunnels_to_braze(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    transport = Transport("https://rest.fra-02.braze.eu", timeout=5)
    conn = transport._connection()                 # not connected yet: no network here
    assert (conn.host, conn.port) == ("proxy.corp", 3128)
    assert conn._tunnel_host == "rest.fra-02.braze.eu" and conn._tunnel_port == 443
    transport.close()
