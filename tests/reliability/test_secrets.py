"""The API key is read from the environment and written nowhere: not to stdout/stderr (even with
--debug tracebacks), the state file, the lock file, plan exports, HTML reports or error messages.
Plain http:// goes only to loopback sandboxes unless a connection explicitly allows it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from engine.sandbox.testing import running_sandbox

pytestmark = pytest.mark.e2e

KEY = "SECRETKEY-1234567890abcdef"


def reflow(project: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "engine", "--project-dir", str(project), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_the_api_key_is_written_nowhere(example_project, tmp_path):
    from engine.demo import PRODUCTS_CATALOG

    with running_sandbox(api_key=KEY) as sandbox:
        r = requests.post(f"{sandbox.url}/catalogs", json=PRODUCTS_CATALOG, headers=sandbox.headers, timeout=10)
        assert r.status_code == 201
        env = {**os.environ, "BRAZE_REST_ENDPOINT": sandbox.url, "BRAZE_API_KEY": KEY}
        exports = tmp_path / "exports"
        exports.mkdir()
        outputs: list[str] = []

        def step(expect: int, *args: str) -> None:
            code, out, err = reflow(example_project, env, *args)
            outputs.extend([out, err])
            assert code == expect, (args, out, err)

        step(0, "plan", "--html", str(exports / "plan1.html"))
        step(0, "apply", "--yes")
        step(0, "example", "mutate")
        step(0, "plan", "--json")
        step(0, "plan", "--format", "markdown")
        step(0, "show", "--format", "json", "--limit", "0")
        step(0, "show", "--format", "jsonl", "--limit", "0")
        step(0, "show", "--html", str(exports / "show.html"))
        step(0, "apply", "--yes")
        step(0, "errors")
        step(0, "errors", "--json")
        step(0, "history", "--json")
        step(0, "status")
        step(0, "state", "backup", str(exports / "state-backup.duckdb"))
        step(1, "--debug", "apply", "--yes")           # the plan was applied: PlanError with a traceback
        assert "Traceback" in outputs[-1], outputs[-1]
        # a failure inside the Braze client with --debug: the key lacks a permission (403)
        app = sandbox.sandbox
        app.options = dataclasses.replace(app.options, permissions=app.options.permissions - {"users.track"})
        step(0, "example", "mutate", "--step", "2")
        step(1, "--debug", "run")
        assert "lacks users.track" in outputs[-2] + outputs[-1], outputs[-2:]
        # a wrong key (401) with --debug: the message names the connection, not the key
        code, out, err = reflow(example_project, {**env, "BRAZE_API_KEY": KEY + "-wrong"}, "--debug", "run")
        outputs.extend([out, err])
        assert code == 1 and "rejected the API key (401)" in out + err, out + err

    assert sandbox.stats()["requests_total"] > 0
    assert not any(KEY in text for text in outputs), "the API key appeared in the output"
    written = [p for p in (*example_project.rglob("*"), *exports.rglob("*")) if p.is_file()]
    assert any(p.name == "state.duckdb" for p in written) and any(p.suffix == ".html" for p in written)
    leaked = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert not leaked, f"the API key was written to {leaked}"


def test_a_key_written_in_the_project_file_is_scrubbed_and_warned_about(example_project):
    file = example_project / "reflow_project.yml"
    text = file.read_text()
    file.write_text(text.replace("api_key: \"{{ env_var('BRAZE_API_KEY') }}\"", f'api_key: "{KEY}"'))
    code, out, err = reflow(example_project, {**os.environ, "BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com"},
                            "--debug", "plan", "--select", "no_such_sync")
    assert code == 1
    assert "the API key is written in the project file" in err
    assert KEY not in out + err


@pytest.mark.parametrize(("endpoint", "extra", "allowed"), [
    ("http://braze.example.com", "", False),
    ("http://10.1.2.3:8080", "", False),
    ("ftp://rest.iad-01.braze.com", "", False),
    ("http://braze.example.com", "\n    allow_http: true", True),
    ("http://127.0.0.1:9", "", True),
    ("http://localhost:9", "", True),
    ("https://rest.iad-01.braze.com", "", True),
])
def test_plain_http_only_to_loopback_unless_explicitly_allowed(example_project, endpoint, extra, allowed):
    file = example_project / "reflow_project.yml"
    text = file.read_text().replace(
        "endpoint: \"{{ env_var('BRAZE_REST_ENDPOINT', 'https://rest.iad-01.braze.com') }}\"",
        f'endpoint: "{endpoint}"{extra}')
    file.write_text(text)
    code, out, err = reflow(example_project, {**os.environ, "BRAZE_API_KEY": KEY}, "validate")
    if allowed:
        assert code == 0, err
    else:
        assert code == 1 and "Traceback" not in err
        assert "connections.braze.endpoint" in err, err
    assert KEY not in out + err
