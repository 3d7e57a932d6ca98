"""`reflow ...` in-process, as a user runs it: one runner for every test that drives the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main


class Cli:
    """Runs `reflow ARGS` on `project` (with `--target` for dbt projects): (exit code, stdout, stderr)."""

    def __init__(self, project: Path, capsys: pytest.CaptureFixture[str], target: str | None = None) -> None:
        self.project = project
        self.capsys = capsys
        self.target = target

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        extra = ["--target", self.target] if self.target else []
        code = main(["--project-dir", str(self.project), *extra, *args])
        out, err = self.capsys.readouterr()
        return code, out, err
