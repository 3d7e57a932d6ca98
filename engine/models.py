"""Models: finding `models/**/<name>.sql` and rendering one into SQL the warehouse can run
(templates.py renders; this module supplies what a model may call).

    ref('model')          another model in models/: inlined as a parenthesised subquery
    ref('table')          a warehouse table: relation_for(name), else "main"."table"
    source('s', 't')      source_for(s, t), else "s"."t"
    var('x', default)     project vars
    env_var('X', default) environment (not the variables that feed secrets)
    config(...)           captured into RenderedModel.config; renders ''
    is_incremental()      False
    target                the warehouse's target ({name: 'reflow', type: 'duckdb'} on DuckDB)

A name the templates cannot resolve (a dbt macro, `adapter.*`) goes to the warehouse's `compile_inline`
when it has one (dbt), else is a located error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from jinja2 import TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import SecurityError

from engine.dbt_project import dbt_model_dirs, dbt_model_files
from engine.errors import ReflowError, RenderError, contains_secret
from engine.sql import quote
from engine.templates import (
    BudgetExceeded,
    TemplateProblem,
    describe_error,
    env_vars_read,
    guarded_env_var,
    make_var,
    render_within_budget,
    sandbox_environment,
    secret_env_problem,
)

if TYPE_CHECKING:
    from engine.project import Project

MODELS_DIR = "models"
MAX_MODEL_BYTES = 5_000_000
DEFAULT_TARGET: Mapping[str, str] = {"name": "reflow", "type": "duckdb", "schema": "main"}




# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class RenderedModel:
    name: str
    path: Path
    sql: str
    refs: tuple[str, ...]                       # every ref() name used (models and tables), transitively
    sources: tuple[tuple[str, str], ...]        # every source() used, transitively
    config: Mapping[str, object] = field(default_factory=dict)   # config(...) of this model
    file: str = ""                              # `path` as errors name it: relative to the project


def _scan(project: Project) -> dict[str, list[Path]]:
    root = project.root / MODELS_DIR
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    dbt_dirs = dbt_model_dirs(project)      # a dbt project's models are relations, not Reflow models
    for path in sorted(root.rglob("*.sql")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if dbt_dirs and any(path.resolve().is_relative_to(d) for d in dbt_dirs):
            continue
        found.setdefault(path.stem, []).append(path)
    return found


def _rel(project: Project, path: Path) -> str:
    try:
        return path.relative_to(project.root).as_posix()
    except ValueError:
        return str(path)


def _unique(project: Project, name: str, paths: list[Path]) -> Path:
    if len(paths) > 1:
        where = " and ".join(_rel(project, p) for p in paths)
        raise RenderError(f"two models are named '{name}': {where}; model names must be unique")
    return paths[0]


def list_models(project: Project) -> dict[str, Path]:
    """Every model: name (file stem) -> path. Two files with one name → RenderError."""
    return {name: _unique(project, name, paths) for name, paths in _scan(project).items()}


def find_model(project: Project, name: str) -> Path | None:
    """models/**/<name>.sql, or None."""
    paths = _scan(project).get(name)
    return _unique(project, name, paths) if paths else None


class _Config:
    """`config(materialized='view')` records settings; `config.get('x', default)` reads them."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def __call__(self, *args: object, **kwargs: object) -> str:
        for arg in args:
            if isinstance(arg, Mapping):
                self.values.update({str(k): v for k, v in arg.items()})
        self.values.update(kwargs)
        return ""

    def get(self, key: str, default: object = None) -> object:
        return self.values.get(key, default)


def _template_line(exc: BaseException, filename: str) -> int | None:
    line = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class _ModelRenderer:
    def __init__(
        self,
        project: Project,
        relation_for: Callable[[str], str] | None,
        source_for: Callable[[str, str], str] | None,
        target: Mapping[str, str] | None,
        compile_inline: Callable[[str, str], str] | None,
    ) -> None:
        self.project = project
        self.models = _scan(project)
        self.relation_for = relation_for
        self.source_for = source_for
        self.target = dict(target or DEFAULT_TARGET)
        self.compile_inline = compile_inline
        self.env = sandbox_environment()         # one budget for the model and everything it ref()s
        self.env.output_name = "SQL"
        self.env_var = guarded_env_var(project.secret_env_vars, "a model")
        self.refs: list[str] = []
        self.sources: list[tuple[str, str]] = []

    def render(self, name: str, stack: tuple[str, ...]) -> tuple[Path, str, dict[str, object]]:
        paths = self.models.get(name)
        if not paths and not stack and self.relation_for is not None:
            dbt_file = dbt_model_files(self.project).get(name)
            if dbt_file is not None:         # a sync reading a dbt model: read the relation dbt built
                return dbt_file, f"select * from {self.relation_for(name)}", {}
        if not paths:
            raise RenderError(f"no model '{name}' in {MODELS_DIR}/ (expected {MODELS_DIR}/{name}.sql)")
        path = _unique(self.project, name, paths)
        rel = _rel(self.project, path)
        if name in stack:
            raise RenderError(f"{rel}: ref() cycle: {' -> '.join((*stack, name))}")
        source = self._read(path, rel)
        config = _Config()
        context = {
            "ref": lambda *args, **kwargs: self._ref((*stack, name), *args, **kwargs),
            "source": self._source,
            "var": make_var(self.project.vars),
            "env_var": self.env_var,
            "config": config,
            "is_incremental": lambda: False,
            "target": self.target,
        }
        filename = str(path.resolve())
        try:
            tree = self.env.parse(source, rel, filename)
            if "env_var" in source:
                self._refuse_secret_env_vars(tree, rel)
            code = self.env.compile(tree, name=rel, filename=filename)
            template = self.env.template_class.from_code(self.env, code, self.env.make_globals(None))
            text = render_within_budget(self.env, template, context)
        except ReflowError:
            raise  # from a ref()'d model (already located), or from relation_for/source_for
        except TemplateSyntaxError as exc:
            raise RenderError(f"{rel}:{exc.lineno}: template syntax error: {exc.message}") from None
        except UndefinedError as exc:
            compile_inline = self.compile_inline
            if compile_inline is None:         # a dbt warehouse compiles what needs dbt (macros, adapter.*)
                line = _template_line(exc, filename)
                raise RenderError(f"{f'{rel}:{line}' if line else rel}: {exc.message}") from None
            text = compile_inline(source, rel)
            if contains_secret(text):          # dbt rendered it: Reflow's env_var() guard did not run
                raise RenderError(f"{rel}: the SQL dbt compiled contains a secret (the value of a secret setting "
                                  "or environment variable); a model cannot read secrets") from None
        except BudgetExceeded as exc:
            exc.line = exc.line or _template_line(exc, filename)
            raise RenderError(exc.located(rel)) from None
        except Exception as exc:  # a user template can fail in any way
            line = _template_line(exc, filename)
            where = f"{rel}:{line}" if line else rel
            if isinstance(exc, TemplateProblem):
                message = exc.message
            elif isinstance(exc, SecurityError):
                message = f"unsafe template access refused: {exc}"
            elif isinstance(exc, UndefinedError):
                message = str(exc.message)
            else:
                message = describe_error(exc)
            raise RenderError(f"{where}: {message}") from None
        sql = text.strip()
        while sql.endswith(";"):
            sql = sql[:-1].rstrip()
        if not sql:
            raise RenderError(f"{rel}: the model renders to empty SQL")
        return path, sql, config.values

    def _refuse_secret_env_vars(self, tree: nodes.Template, rel: str) -> None:
        """Before anything runs: an env_var('NAME') naming a secret, even in a branch never taken.
        (Names computed while rendering are refused by the guarded env_var itself.)"""
        for use in env_vars_read(tree):
            problem = use.name and secret_env_problem(use.name, self.project.secret_env_vars, "a model")
            if problem:
                raise RenderError(f"{rel}:{use.line}: {problem}")

    def _read(self, path: Path, rel: str) -> str:
        try:
            if path.stat().st_size > MAX_MODEL_BYTES:
                raise RenderError(f"{rel}: model file is larger than 5 MB")
            return path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise RenderError(f"{rel}: not valid UTF-8 text") from None
        except OSError as exc:
            raise RenderError(f"{rel}: cannot read model: {exc.strerror or exc}") from None

    def _ref(self, stack: tuple[str, ...], *args: object, **kwargs: object) -> str:
        kwargs.pop("version", None)
        kwargs.pop("v", None)
        if kwargs or not 1 <= len(args) <= 2 or not all(isinstance(a, str) and a for a in args):
            raise TemplateProblem("ref() takes a model or table name, e.g. ref('customers')")
        name = str(args[-1])
        if name not in self.refs:
            self.refs.append(name)
        if name in self.models:
            _, sql, _ = self.render(name, stack)
            return f"(\n{sql}\n)"
        if self.relation_for is not None:
            return self.relation_for(name)
        return f"{quote('main')}.{quote(name)}"

    def _source(self, *args: object) -> str:
        if len(args) != 2 or not all(isinstance(a, str) and a for a in args):
            raise TemplateProblem("source() takes a source and a table name, e.g. source('shop', 'orders')")
        schema, table = str(args[0]), str(args[1])
        if (schema, table) not in self.sources:
            self.sources.append((schema, table))
        if self.source_for is not None:
            return self.source_for(schema, table)
        return f"{quote(schema)}.{quote(table)}"


def render_model(
    project: Project,
    name: str,
    *,
    relation_for: Callable[[str], str] | None = None,
    source_for: Callable[[str, str], str] | None = None,
    target: Mapping[str, str] | None = None,
    compile_inline: Callable[[str, str], str] | None = None,
) -> RenderedModel:
    """Render models/**/<name>.sql into SQL the warehouse can run. The warehouse supplies how tables
    and sources are named, its `target`, and (dbt) `compile_inline` for what only it can render."""
    renderer = _ModelRenderer(project, relation_for, source_for, target, compile_inline)
    renderer.env.start()
    try:
        path, sql, config = renderer.render(name, ())
    except RecursionError:
        raise RenderError(f"model '{name}': ref() nesting is too deep") from None
    return RenderedModel(
        name=name,
        path=path,
        sql=sql,
        refs=tuple(renderer.refs),
        sources=tuple(renderer.sources),
        config=dict(config),
        file=_rel(project, path),
    )
