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


def sandbox_project(name: str, extra: str = "") -> str:
    """A project file on DuckDB (warehouse.duckdb) whose `braze` connection is the Braze named by the
    BRAZE_REST_ENDPOINT / BRAZE_API_KEY environment (the sandbox in tests); `extra` is appended (YAML
    indented as connection settings or further connections)."""
    return (f"name: {name}\n"
            "warehouse: {type: duckdb, path: warehouse.duckdb}\n"
            "connections:\n"
            "  braze:\n"
            "    type: braze\n"
            "    endpoint: \"{{ env_var('BRAZE_REST_ENDPOINT') }}\"\n"
            "    api_key: \"{{ env_var('BRAZE_API_KEY') }}\"\n" + extra)


def warehouse_sql(root: Path, *statements: str) -> None:
    """Run SQL on a test project's warehouse.duckdb (as a user's loader would)."""
    import duckdb

    con = duckdb.connect(str(root / "warehouse.duckdb"))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()
