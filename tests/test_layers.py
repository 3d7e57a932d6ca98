"""The engine's layering, as docs/architecture.md draws it, checked on the source (an import-linter in
a page): a module imports only modules of its own layer or below, and no import cycle exists (imports
inside functions count; `if TYPE_CHECKING:` imports do not, they are never executed).

    7  integrations: the orchestrators' shapes (Dagster assets, an Airflow operator) over the Python API
    6  cli, the Python API (api), the context both open projects with, commands that compose everything
       (demo, example, scaffold, dbt exposures), the sandbox
    5  core: planner, runner, and the review outputs (console, show, reports)
    4  state, destinations, warehouse, diff, plan values
    3  specs, models
    2  project, dbt_project
    1  templates
    0  leaves: errors, yamlfile, and data-only helpers that import nothing of Reflow above them
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the layer of each module, by longest matching prefix
LAYERS: dict[str, int] = {
    "engine": 0, "engine.errors": 0, "engine.sql": 0, "engine.formatting": 0, "engine.yamlfile": 0, "engine.isodata": 0, "engine.strict_json": 0,
    "engine.interrupts": 0, "engine.destinations.braze.instances": 0, "engine.known_valid": 0,
    "engine.templates": 1,
    "engine.project": 2, "engine.dbt_project": 2,
    "engine.specs": 3, "engine.models": 3,
    "engine.state": 4,
    "engine.destinations": 4, "engine.warehouse": 4, "engine.diff": 4, "engine.plan": 4, "engine.locations": 4,
    "engine.row_secrets": 4,
    "engine.planner": 5, "engine.runner": 5, "engine.console": 5, "engine.show": 5,
    "engine.report_html": 5, "engine.report_markdown": 5,
    "engine.cli": 6, "engine.context": 6, "engine.demo": 6, "engine.example": 6, "engine.scaffold": 6, "engine.dbt_exposures": 6,
    "engine.sandbox": 6, "engine.__main__": 6, "engine.api": 6,
    "engine.integrations": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        found = LAYERS.get(".".join(parts[:n]))
        if found is not None:
            return found
    raise AssertionError(f"{module} has no layer in tests/test_layers.py: give it one")


def is_module(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports(path: Path) -> set[str]:
    """The engine modules `path` imports when it runs (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "engine":
            subs = [f"{node.module}.{a.name}" for a in node.names]
            found.update(s for s in subs if is_module(s))
            if not all(is_module(s) for s in subs):
                found.add(node.module)          # names from the module itself (not only submodules)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "engine")
    return found


def with_packages(names: set[str]) -> set[str]:
    """Importing engine.a.b runs engine/__init__.py and engine/a/__init__.py first: they are imported too."""
    out = set(names)
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[:n]) for n in range(1, len(parts)))
    return out


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in (ROOT / "engine").rglob("*.py")}
    return {m: {d for d in with_packages(imports(p)) if d in modules and d != m and not m.startswith(d + ".")}
            for m, p in modules.items()}


def bare_package(name: str, edges: dict[str, set[str]]) -> bool:
    """A package whose __init__ imports nothing of Reflow (a docstring): passing through it is free."""
    return (ROOT.joinpath(*name.split(".")) / "__init__.py").exists() and not edges[name]


def test_every_module_imports_only_its_layer_or_below() -> None:
    edges = graph()
    upward = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
              for m, deps in sorted(edges.items()) for d in sorted(deps)
              if layer(d) > layer(m) and not bare_package(d, edges)]
    assert not upward, "\n".join(upward)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    """The two checks above would fail on a tree that had either (they are not vacuous)."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert layer("engine.state") > layer("engine.specs") > layer("engine.templates") > layer("engine.errors")
    assert "engine.templates" in imports(ROOT / "engine" / "project.py")


# the state file's tables (engine/state/store.py `_MIGRATIONS`; snapshots are snap_<id>)
STATE_TABLES = ("meta", "syncs", "plans", "plan_syncs", "plan_rows", "runs", "pending", "row_errors", "acks",
                "uncertain", "frontier", r"snap_(?:\d+|\{\})")
_TABLE_AFTER = (r"\s*(?:\{\}\.|\"?main\"?\.)?\"?(?:" + "|".join(STATE_TABLES) + r")(?![A-Za-z0-9_])")
_KEYWORDS = r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|DESCRIBE|COPY)|table_info\('"
STATE_SQL = re.compile(r"rstate\.|(?:" + _KEYWORDS + ")" + _TABLE_AFTER)           # SQL keywords in capitals
SQL_START = re.compile(r"\s*(?:select|insert|delete|update|with|create|drop|alter|copy|describe|pragma)\b", re.I)
LOWER_SQL = re.compile("(?:" + _KEYWORDS + ")" + _TABLE_AFTER, re.I)      # ... or a string that starts as SQL


def names_state_table(text: str) -> bool:
    return bool(STATE_SQL.search(text) or (SQL_START.match(text) and LOWER_SQL.search(text)))


# names that hand out the state's tables: only engine/state/ imports them
STATE_NAMES = {"DB", "TABLE", "LOCAL", "COLUMNS"}


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal of a module but docstrings, f-strings with each placeholder as `{}`."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found = []
    inside = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                           for v in node.values)
            found.append((node.lineno, text))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and id(node) not in inside):
            found.append((node.lineno, node.value))
    return found


def state_sql(source: str) -> list[tuple[int, str]]:
    """Lines of `source` that name a state table in SQL or import what hands the tables out."""
    tree = ast.parse(source)
    hits = [(n, " ".join(text.split())[:100]) for n, text in _strings(tree) if names_state_table(text)]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine.state"):
            names = {a.name for a in node.names} & STATE_NAMES
            if names:
                hits.append((node.lineno, f"imports {', '.join(sorted(names))} from {node.module}"))
    return hits


def state_sql_outside_the_state_package() -> list[str]:
    found = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        if (ROOT / "engine" / "state") in path.parents:
            continue
        found += [f"{path.relative_to(ROOT)}:{n}: {what}" for n, what in state_sql(path.read_text())]
    return found


def test_only_the_state_package_names_state_tables() -> None:
    """SQL against the state file's tables lives in engine/state/ (the planner, runner and review read and
    write them through it); the diff reads the snapshot relation the state hands it (`SyncState.table`)."""
    assert state_sql_outside_the_state_package() == []


@pytest.mark.parametrize("line", [
    'con.execute(f"SELECT count(*) FROM {DB}.plan_rows")',
    'con.execute("DELETE FROM pending WHERE sync = ?")',
    "from engine.state import DB, State",
    "from engine.state.plan_rows import (\n    TABLE,\n    SyncRows,\n)",
    'x.execute("select * from rstate.main.runs")',
    'con.execute("select * from plan_rows")',
    'con.execute("""SELECT key\n  FROM\n    plan_rows""")',
    'con.execute(f"SELECT * FROM snap_{sid}")',
    'con.execute("SELECT * FROM main.plan_rows")',
    'con.execute(\'SELECT * FROM "plan_rows"\')',
    'con.execute("PRAGMA table_info(\'runs\')")',
    'con.execute("DESCRIBE row_errors")',
])
def test_the_state_table_check_sees_a_query(line: str) -> None:
    assert state_sql(line), line


@pytest.mark.parametrize("line", ['"""Rows from pending are planned again."""\n',
                                  'note = "the update runs once"', "# SELECT * FROM plan_rows"])
def test_the_state_table_check_leaves_prose_alone(line: str) -> None:
    assert not state_sql(line), line
