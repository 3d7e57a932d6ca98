"""The fixed cost of a command (issue 14 point 6), guarded without timing anything: a no-change
`reflow plan` of an unchanged project, in a fresh process, imports only what it uses. No schema
validator (its spec files were found valid before), no rich (its output is no terminal), no HTTP stack
and no send path (it sends nothing), no sandbox, no remote state, no review reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.scaffold import init_project

pytestmark = pytest.mark.e2e

# modules a no-change plan of a local DuckDB project must not import (each a prefix: `rich` covers `rich.*`)
UNUSED = (
    "jsonschema", "referencing",                                # validation of unchanged files: engine/known_valid.py
    "rich",                                                      # plain output to a pipe or a log
    "requests", "urllib3", "http.client", "ssl",                 # the HTTP stack: only to send
    "engine.runner", "engine.destinations.braze.client", "engine.destinations.braze.transport",
    "engine.destinations.braze.profiles", "concurrent.futures",
    "engine.destinations.braze.sql_users", "engine.destinations.braze.sql_cohorts",   # only to write plan rows
    "engine.sandbox",                                            # `reflow sandbox`'s options, the server
    "engine.state.remote", "engine.state.objects",               # a remote state (s3://…)
    "engine.report_html", "engine.report_markdown", "engine.show",
    "dbt",
)

CHECK = """
import sys
from engine.cli import main
code = main({argv!r})
unused = {unused!r}
print("imported:", sorted(m for m in sys.modules if any(m == u or m.startswith(u + ".") for u in unused)))
raise SystemExit(code)
"""


def reflow(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *argv], env=env, capture_output=True, text=True,
                          check=False, timeout=120)


def test_a_no_change_plan_imports_only_what_it_uses(tmp_path: Path, sandbox: Any) -> None:
    root = tmp_path / "project"
    init_project(root)
    env = {**os.environ, "BRAZE_REST_ENDPOINT": sandbox.url, "BRAZE_API_KEY": sandbox.api_key,
           "REFLOW_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_COMPATIBLE", None)
    for argv in (["plan"], ["apply", "--yes"]):         # the first sync: everything sent and acknowledged
        done = reflow(env, "--project-dir", str(root), *argv)
        assert done.returncode == 0, done.stdout + done.stderr

    argv = ["--project-dir", str(root), "plan"]
    done = subprocess.run([sys.executable, "-c", CHECK.format(argv=argv, unused=UNUSED)], env=env,
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No changes (plan " in done.stdout, done.stdout
    assert "imported: []" in done.stdout, done.stdout


def test_a_changed_spec_is_validated_again(tmp_path: Path) -> None:
    """The other side of the same cache: an edited sync file is checked (and refused) at once."""
    root = tmp_path / "project"
    init_project(root)
    env = {**os.environ, "REFLOW_CACHE_DIR": str(tmp_path / "cache")}
    done = reflow(env, "--project-dir", str(root), "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    spec = root / "syncs" / "braze_users.yml"
    spec.write_text(spec.read_text().replace("on_removed: ignore", "on_removed: forget"))
    done = reflow(env, "--project-dir", str(root), "plan")
    assert done.returncode == 1
    assert "syncs/braze_users.yml:" in done.stderr and "on_removed" in done.stderr, done.stderr
