"""docs/deploy.md is copied into production as it is: its examples must match the code. The GitHub Actions
workflows in docs/github-actions/ are the ones the page shows; every YAML block parses; every `reflow …`
command line is accepted by the CLI's parser; every extra installed exists; the Python examples compile and
pass only arguments the functions take. (tests/integrations/ loads the Dagster and Airflow examples in
their own environments.)"""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "deploy.md"
WORKFLOWS = sorted((ROOT / "docs" / "github-actions").glob("*.yml"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"(?:^|[\s/])reflow ((?:plan|run|apply|status|history|errors|state \w+)\b[^\n|>;&#]*)",
                     re.MULTILINE)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(PAGE.read_text()) if lang == kind]


def test_the_page_shows_each_workflow_file_as_it_is():
    assert len(WORKFLOWS) == 2
    shown = blocks("yaml")
    for workflow in WORKFLOWS:
        assert workflow.read_text() in shown, f"{workflow.name} differs from its copy in docs/deploy.md"


def test_every_yaml_block_parses():
    for body in blocks("yaml"):
        assert yaml.safe_load(body.replace("{{ env_var", "{{env_var")) is not None


def test_every_reflow_command_is_accepted_by_the_cli():
    texts = blocks("bash") + blocks("yaml") + blocks("python")
    found = [m.strip() for text in texts for m in COMMAND.findall(text)]
    assert any("--read-only" in c for c in found) and any(c.startswith("run ") for c in found), found
    parser = build_parser()
    for command in found:
        args = [a for a in shlex.split(command.replace("$(date +\\%a)", "Mon")) if a != "\\"]
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"docs/deploy.md: `reflow {command}` is not accepted by the CLI")


def test_every_extra_installed_exists():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = re.findall(r"reflow\[([\w,]+)\]", PAGE.read_text())
    assert named
    for group in named:
        assert set(group.split(",")) <= set(extras), group


def parameters(path: Path, name: str) -> set[str]:
    """The parameters of the function or class `name` (its __init__) defined in `path`."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return {a.arg for a in (*node.args.args, *node.args.kwonlyargs)}
        if isinstance(node, ast.ClassDef) and node.name == name:
            init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
            return {a.arg for a in (*init.args.args, *init.args.kwonlyargs)} | {"task_id"}
    raise AssertionError(f"{name} is not defined in {path}")


CALLABLES = {
    "reflow_assets": ROOT / "engine" / "integrations" / "dagster.py",
    "ReflowRunOperator": ROOT / "engine" / "integrations" / "airflow.py",
    "run": ROOT / "engine" / "api.py",
    "plan": ROOT / "engine" / "api.py",
}


def test_the_python_examples_compile_and_pass_only_known_arguments():
    examples = blocks("python")
    assert len(examples) >= 3
    seen = set()
    for body in examples:
        tree = ast.parse(body)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in CALLABLES and (name in ("reflow_assets", "ReflowRunOperator")
                                      or ast.unparse(node.func).startswith("api.")):
                seen.add(name)
                known = parameters(CALLABLES[name], name)
                unknown = {k.arg for k in node.keywords} - known
                assert not unknown, f"docs/deploy.md: {name}() takes no {unknown}"
    assert seen == set(CALLABLES), seen
