"""`reflow --help` and non-dbt projects never import dbt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECK = """
import sys
from engine.cli import main
{body}
leaked = sorted(m for m in sys.modules if m == "dbt" or m.startswith(("dbt.", "dbt_")))
assert not leaked, leaked
print("no dbt")
"""


def run(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHECK.format(body=body)], capture_output=True, text=True,
                          check=False, timeout=120)


def test_help_does_not_import_dbt() -> None:
    body = "\n".join(f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass"
                     for argv in (["--help"], ["plan", "--help"], ["dbt", "exposures", "--help"]))
    done = run(body)
    assert done.returncode == 0 and "no dbt" in done.stdout, done.stderr


@pytest.mark.e2e
def test_plan_of_a_duckdb_project_does_not_import_dbt(example_project: Path) -> None:
    done = run(f"assert main(['--project-dir', {str(example_project)!r}, 'plan', '--json']) == 0")
    assert done.returncode == 0 and "no dbt" in done.stdout, done.stderr
