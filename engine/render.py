"""Jinja rendering of models (`models/**/<name>.sql`) and of templated settings.

The only module that imports jinja2. Templates run in a `SandboxedEnvironment` with
`StrictUndefined`: an unknown name, a missing var or env var, or an attempt to reach Python
internals stops rendering with `models/<file>.sql:<line>: <what went wrong>`.

    ref('model')          another model in models/: inlined as a parenthesised subquery
    ref('table')          a warehouse table: relation_for(name), else "main"."table"
    source('s', 't')      source_for(s, t), else "s"."t"
    var('x', default)     project vars
    env_var('X', default) environment
    config(...)           captured into RenderedModel.config; renders ''
    is_incremental()      False
    target                {name: 'reflow', type: 'duckdb'}
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from engine.errors import ReflowError, RenderError

if TYPE_CHECKING:
    from engine.project import Project

MODELS_DIR = "models"
MAX_MODEL_BYTES = 5_000_000
_MAX_REPEAT = 10_000_000        # longest string/list a template may build with `*`
_MAX_EXPONENT = 1024
_MISSING: Any = object()


class TemplateProblem(Exception):
    """A template function refused (missing var or env var, bad argument); not yet located."""

    def __init__(self, message: str, *, env_var: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.env_var = env_var


class _Sandbox(SandboxedEnvironment):
    """The Jinja sandbox, also refusing huge `*` repetitions and `**` exponents."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > _MAX_REPEAT:
                    raise SecurityError("repetition result is too large")
        return super().call_binop(context, operator, left, right)


def _environment() -> _Sandbox:
    return _Sandbox(
        undefined=StrictUndefined,
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
        autoescape=False,
        keep_trailing_newline=True,
    )


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def env_var(name: object, default: Any = _MISSING) -> str:
    """`env_var('X', 'default')`: the environment variable, its default, or a TemplateProblem."""
    if not isinstance(name, str) or not name:
        raise TemplateProblem("env_var() needs the variable name as a string")
    value = os.environ.get(name)
    if value is not None:
        return value
    if default is not _MISSING:
        return str(default)
    raise TemplateProblem(f"environment variable '{name}' is not set and env_var() has no default", env_var=name)


def make_var(values: Mapping[str, object]) -> Callable[..., object]:
    """`var('x', default)` over a mapping of project vars."""

    def var(name: object, default: Any = _MISSING) -> object:
        if not isinstance(name, str):
            raise TemplateProblem("var() needs the variable name as a string")
        if name in values:
            return values[name]
        if default is not _MISSING:
            return default
        raise TemplateProblem(f"var '{name}' is not defined in the project's vars and var() has no default")

    return var


def render_text(text: str, functions: Mapping[str, object]) -> str:
    """Render one templated setting. Raises TemplateProblem with an unlocated message."""
    env = _environment()
    try:
        return env.from_string(text).render(**functions)
    except TemplateProblem:
        raise
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"unsafe template access refused: {exc}") from None
    except UndefinedError as exc:
        raise TemplateProblem(str(exc.message)) from None
    except Exception as exc:  # a user template can fail in any way
        raise TemplateProblem(_describe(exc)) from None


def check_syntax(text: str) -> None:
    """Parse a template without rendering it; TemplateProblem on a syntax error."""
    try:
        _environment().parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "template recursion is too deep"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class RenderedModel:
    name: str
    path: Path
    sql: str
    refs: tuple[str, ...]                       # every ref() name used (models and tables), transitively
    sources: tuple[tuple[str, str], ...]        # every source() used, transitively
    config: Mapping[str, object] = field(default_factory=dict)   # config(...) of this model


def _scan(project: Project) -> dict[str, list[Path]]:
    from engine.dbt_project import dbt_model_dirs

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
    ) -> None:
        self.project = project
        self.models = _scan(project)
        self.relation_for = relation_for
        self.source_for = source_for
        # a dbt warehouse names its own target ({name, type}); anything else it lacks goes to dbt compile
        owner_target = getattr(getattr(relation_for, "__self__", None), "target_context", None)
        self.target = owner_target() if callable(owner_target) else {"name": "reflow", "type": "duckdb",
                                                                       "schema": "main"}
        self.env = _environment()
        self.refs: list[str] = []
        self.sources: list[tuple[str, str]] = []

    def render(self, name: str, stack: tuple[str, ...]) -> tuple[Path, str, dict[str, object]]:
        paths = self.models.get(name)
        if not paths and not stack and self.relation_for is not None:
            from engine.dbt_project import dbt_model_files

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
            "env_var": env_var,
            "config": config,
            "is_incremental": lambda: False,
            "target": self.target,
        }
        filename = str(path.resolve())
        try:
            code = self.env.compile(source, name=rel, filename=filename)
            template = self.env.template_class.from_code(self.env, code, self.env.make_globals(None))
            text = template.render(context)
        except ReflowError:
            raise  # from a ref()'d model (already located), or from relation_for/source_for
        except TemplateSyntaxError as exc:
            raise RenderError(f"{rel}:{exc.lineno}: template syntax error: {exc.message}") from None
        except UndefinedError as exc:
            compile_inline = getattr(getattr(self.relation_for, "__self__", None), "compile_inline", None)
            if compile_inline is None:         # a dbt warehouse compiles what needs dbt (macros, adapter.*)
                line = _template_line(exc, filename)
                raise RenderError(f"{f'{rel}:{line}' if line else rel}: {exc.message}") from None
            text = compile_inline(source, rel)
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
                message = _describe(exc)
            raise RenderError(f"{where}: {message}") from None
        sql = text.strip()
        while sql.endswith(";"):
            sql = sql[:-1].rstrip()
        if not sql:
            raise RenderError(f"{rel}: the model renders to empty SQL")
        return path, sql, config.values

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
) -> RenderedModel:
    """Render models/**/<name>.sql into SQL the warehouse can run."""
    renderer = _ModelRenderer(project, relation_for, source_for)
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
    )
