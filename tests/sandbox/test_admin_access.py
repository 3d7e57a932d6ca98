"""Who may read /_sandbox/: the admin token, and the warning when bound beyond loopback."""

from __future__ import annotations

import argparse

import pytest
import requests

from engine.sandbox import cli
from engine.sandbox.options import OptionError, SandboxOptions

TOKEN = "admin-token-5678"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("path", ["/_sandbox/stats", "/_sandbox/users", "/_sandbox/users?external_id=u1",
                                  "/_sandbox/events", "/_sandbox/applied_then_failed"])
def test_token_required_when_set(make_client, path):
    client = make_client(admin_token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Bearer {client.handle.api_key}"}):
        r = requests.get(client.handle.url + path, headers=headers, timeout=5)
        assert r.status_code == 401, headers
        assert "u1" not in r.text
    r = requests.get(client.handle.url + "/_sandbox/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 200


def test_reset_and_save_need_the_token(make_client):
    client = make_client(admin_token=TOKEN)
    client.track(attributes=[{"external_id": "u1"}])
    assert requests.post(client.handle.url + "/_sandbox/reset", timeout=5).status_code == 401
    assert client.handle.user("u1") is not None
    r = requests.post(client.handle.url + "/_sandbox/reset", headers=client.handle.admin_headers, timeout=5)
    assert r.status_code == 200 and client.handle.user("u1") is None


def test_handle_keeps_working_with_a_token(make_client):
    client = make_client(admin_token=TOKEN)
    client.track(attributes=[{"external_id": "u1", "plan": "pro"}])
    handle = client.handle
    assert handle.admin_headers == {"Authorization": f"Bearer {TOKEN}"}
    assert handle.user("u1")["custom_attributes"] == {"plan": "pro"} and handle.stats()["users"] == 1
    r = requests.get(handle.url + "/_sandbox/users?external_id=u1", headers=handle.admin_headers, timeout=5)
    assert r.status_code == 200 and r.json()["external_id"] == "u1"


def test_the_token_does_not_open_braze_paths(make_client):
    client = make_client(admin_token=TOKEN)
    r = requests.post(client.handle.url + "/users/track", json={"attributes": [{"external_id": "u1"}]},
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 401


def test_no_token_by_default(sandbox):
    assert sandbox.admin_headers == {}
    assert requests.get(sandbox.url + "/_sandbox/stats", timeout=5).status_code == 200


def test_empty_token_is_refused():
    with pytest.raises(OptionError):
        SandboxOptions.build(admin_token="")


def test_admin_token_flag_and_environment(monkeypatch):
    monkeypatch.delenv("REFLOW_SANDBOX_ADMIN_TOKEN", raising=False)
    assert cli.options_from_args(parse()).admin_token is None
    assert cli.options_from_args(parse("--admin-token", "t1")).admin_token == "t1"
    monkeypatch.setenv("REFLOW_SANDBOX_ADMIN_TOKEN", "from-env")
    assert cli.options_from_args(parse()).admin_token == "from-env"
    assert cli.options_from_args(parse("--admin-token", "t1")).admin_token == "t1"


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True),
                                                ("::1", True), ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.5", False), ("example.org", False)])
def test_loopback_hosts(host, loopback):
    assert cli.is_loopback(host) is loopback


def test_warns_on_stderr_when_bound_beyond_loopback(capsys):
    import threading
    import time

    stop = threading.Event()
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", cli.run(parse("--host", "0.0.0.0", "--port", "0"),
                                                                                stop=stop)))
    thread.start()
    deadline = time.time() + 5
    out = err = ""
    while "listening" not in out and time.time() < deadline:
        captured = capsys.readouterr()
        out, err = out + captured.out, err + captured.err
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=5)
    err += capsys.readouterr().err
    assert result["code"] == 0
    assert err.count("\n") == 1 and err.startswith("reflow sandbox: warning: listening on 0.0.0.0, not loopback")
    assert "without authentication" in err and "--admin-token" in err


def test_warning_text_with_a_token():
    text = cli.exposure_warning("0.0.0.0", SandboxOptions.build(admin_token=TOKEN))
    assert text is not None and "needs the admin token" in text and TOKEN not in text
    assert cli.exposure_warning("127.0.0.1", SandboxOptions.build()) is None


def test_no_warning_on_loopback(capsys):
    import threading

    stop = threading.Event()
    stop.set()
    assert cli.run(parse("--port", "0"), stop=stop) == 0
    assert capsys.readouterr().err == ""
