"""`reflow sandbox` through engine.sandbox.cli.add_arguments / run."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import requests

from engine.sandbox import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults():
    args = parse()
    assert (args.port, args.host, args.api_key, args.ratelimit_headers) == (cli.DEFAULT_PORT, "127.0.0.1", None, "epoch")
    options = cli.options_from_args(args)
    assert options.max_objects == 75 and options.rate_limit is None and options.reject_external_ids == frozenset()


def test_flags_reach_the_options():
    args = parse("--legacy-limits", "--latency-ms", "5", "--fail-5xx-rate", "0.1", "--fail-429-first", "2",
                 "--reject-external-ids", "a,b", "--permissions", "users.track,users.delete", "--rate-limit", "10/2",
                 "--drop-connection-rate", "0.2", "--seed", "3", "--error-codes", "--ratelimit-headers", "mau",
                 "--max-array-length", "50", "--api-key", "k1234", "--subscription-groups", "g1,g2")
    o = cli.options_from_args(args)
    assert (o.legacy_limits, o.latency_ms, o.fail_5xx_rate, o.fail_429_first) == (True, 5, 0.1, 2)
    assert o.reject_external_ids == {"a", "b"} and o.permissions == {"users.track", "users.delete"}
    assert (o.rate_limit, o.drop_connection_rate, o.seed, o.error_codes) == ((10, 2.0), 0.2, 3, True)
    assert (o.ratelimit_headers, o.max_array_length, o.api_key, o.subscription_groups) == ("mau", 50, "k1234",
                                                                                           {"g1", "g2"})


def run_in_thread(args):
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", cli.run(args, stop=stop)))
    thread.start()
    return stop, thread, result


def test_run_prints_one_line_serves_and_stops(capsys, tmp_path):
    state = tmp_path / "state.json"
    stop, thread, result = run_in_thread(parse("--port", "0", "--state", str(state)))
    deadline = time.time() + 5
    line = ""
    while not line and time.time() < deadline:
        line = capsys.readouterr().out
        time.sleep(0.02)
    assert line.count("\n") == 1 and line.startswith("Braze sandbox listening on http://127.0.0.1:")
    url = line.split()[-1]
    r = requests.post(url + "/users/track", json={"attributes": [{"external_id": "u1"}]},
                      headers={"Authorization": "Bearer sandbox-api-key"}, timeout=5)
    assert r.status_code == 201
    stop.set()
    thread.join(timeout=5)
    assert result["code"] == 0
    assert len(json.loads(state.read_text())["users"]) == 1       # saved on shutdown


def test_port_taken_is_one_line_error_and_exit_1(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.run(parse("--port", str(port)))
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err == f"reflow sandbox: error: port {port} on 127.0.0.1 is already in use; pick another with --port\n"


def test_bad_option_is_one_line_error(capsys):
    assert cli.run(parse("--port", "0", "--fail-5xx-rate", "2")) == 1
    assert capsys.readouterr().err == "reflow sandbox: error: fail-5xx-rate must be between 0 and 1, got 2.0\n"


def test_bad_rate_limit_is_one_line_error(capsys):
    assert cli.run(parse("--port", "0", "--rate-limit", "fast")) == 1
    err = capsys.readouterr().err
    assert err.startswith("reflow sandbox: error: rate-limit must look like N/SECONDS") and err.count("\n") == 1


def test_corrupt_state_is_one_line_error(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert cli.run(parse("--port", "0", "--state", str(bad))) == 1
    err = capsys.readouterr().err
    assert err.startswith("reflow sandbox: error: cannot read sandbox state file") and err.count("\n") == 1


def test_sigterm_and_sigint_shut_down_gracefully(tmp_path):
    import signal
    import subprocess
    import sys

    script = ("import argparse, sys\nfrom engine.sandbox import cli\np = argparse.ArgumentParser()\n"
              "cli.add_arguments(p)\nsys.exit(cli.run(p.parse_args(sys.argv[1:])))\n")
    for signum in (signal.SIGTERM, signal.SIGINT):
        state = tmp_path / f"{signum}.json"
        proc = subprocess.Popen([sys.executable, "-c", script, "--port", "0", "--state", str(state)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("Braze sandbox listening on http://127.0.0.1:")
            requests.post(line.split()[-1] + "/users/track", json={"attributes": [{"external_id": "u1"}]},
                          headers={"Authorization": "Bearer sandbox-api-key"}, timeout=5)
            proc.send_signal(signum)
            assert proc.wait(timeout=10) == 0
            assert proc.stderr.read() == ""
            assert len(json.loads(state.read_text())["users"]) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()


def test_new_flags_reach_the_options():
    args = parse("--process-then-fail-rate", "0.3", "--process-then-fail-kind", "504", "--visibility-delay-ms", "250",
                 "--processed-counts", "applied", "--catalog-post-existing", "error", "--deleted-counts", "requested",
                 "--admin-token", "tok")
    o = cli.options_from_args(args)
    assert (o.process_then_fail_rate, o.process_then_fail_kind, o.visibility_delay_ms) == (0.3, "504", 250)
    assert (o.processed_counts, o.catalog_post_existing, o.deleted_counts, o.admin_token) == (
        "applied", "error", "requested", "tok")


def test_new_flags_default_to_the_earlier_behaviour(monkeypatch):
    monkeypatch.delenv("REFLOW_SANDBOX_ADMIN_TOKEN", raising=False)
    o = cli.options_from_args(parse())
    assert (o.process_then_fail_rate, o.visibility_delay_ms, o.processed_counts, o.catalog_post_existing) == (
        0.0, 0, "all", "overwrite")
    assert (o.deleted_counts, o.admin_token) == ("deleted", None)
