"""Jinja templates: the sandbox every model and templated setting renders in, and the functions
templates may call (`env_var`, `var`). Imports nothing of Reflow but errors.

Templates run in a `SandboxedEnvironment` with `StrictUndefined`: an unknown name, a missing var or env
var, or an attempt to reach Python internals stops rendering with a located message.

Secrets: an environment variable that feeds a secret setting of the project (`Project.secret_env_vars`,
e.g. BRAZE_API_KEY for connections.braze.api_key), or whose name starts with REFLOW_SECRET_ or
DBT_ENV_SECRET_, cannot be read by a model (`guarded_env_var`); only the secret setting itself reads it.

Budgets: a render stops after REFLOW_RENDER_TIMEOUT seconds (default 10) and when it has produced
more than 50 MB. The deadline is checked inside the sandbox (every call, attribute and item lookup,
operator, filter or test applied per item, long loop's iteration and buffer join), not with signals,
so it works off the main thread too.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.utils import generate_lorem_ipsum

from engine.errors import RenderError

_MAX_REPEAT = 10_000_000        # longest string/list a template may build with `*`
_MAX_EXPONENT = 1024
_MAX_LIPSUM = 100               # paragraphs lipsum() may generate (one call, no budget check inside)
_SMALL_LOOP = 1024              # a loop over a list/tuple/dict/range/str this short is not wrapped
_LOOP_FILTER = "reflow loop budget"   # wraps every {% for %} iterable; a name no template can write
_MISSING: Any = object()

SECRET_ENV_PREFIXES = ("REFLOW_SECRET_", "DBT_ENV_SECRET_")   # env vars only secret settings may read
RENDER_TIMEOUT_ENV = "REFLOW_RENDER_TIMEOUT"
DEFAULT_RENDER_TIMEOUT = 10.0   # seconds per render (a model with everything it ref()s, or one setting)
MAX_RENDERED_BYTES = 50_000_000  # of SQL (UTF-8) per model, and of any text a template builds


class TemplateProblem(Exception):
    """A template function refused (missing var or env var, bad argument); not yet located."""

    def __init__(self, message: str, *, env_var: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.env_var = env_var


class BudgetExceeded(TemplateProblem):
    """A render ran out of time or produced too much. `message` says which and what to do; the
    caller adds the file (the line where it stopped is in `line`, when known)."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line

    def located(self, where: str) -> str:
        """`where: message`, with the line it stopped at inside the message (the budget is the whole
        render's, so the line is where it ran out, not necessarily the culprit)."""
        if self.line is None:
            return f"{where}: {self.message}"
        head, _, rest = self.message.partition(";")
        return f"{where}: {head} (stopped at line {self.line});{rest}"


def render_timeout() -> float:
    """The render time budget in seconds: REFLOW_RENDER_TIMEOUT, else DEFAULT_RENDER_TIMEOUT."""
    raw = os.environ.get(RENDER_TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_RENDER_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise RenderError(f"{RENDER_TIMEOUT_ENV} must be a number of seconds greater than 0, not {raw!r}")
    return seconds


def _seconds(value: float) -> str:
    return f"{value:g}"


class _Loop:
    """A `{% for %}` iterable whose iteration checks the render deadline (len() kept for `loop.length`)."""

    __slots__ = ("_env", "_iterable")

    def __init__(self, env: _Sandbox, iterable: Any) -> None:
        self._env = env
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        return self._env.each(self._iterable)

    def __len__(self) -> int:
        return len(self._iterable)


class _Sandbox(SandboxedEnvironment):
    """The Jinja sandbox, also refusing huge `*` repetitions and `**` exponents, and keeping the time
    and size budget: every hook below checks the deadline first.

    Anything that repeats work goes through a hook: a macro or function call (`call`), a filter or
    test applied per item by map/select/reject (`call_filter`, `call_test`), a loop. Loops have no
    hook of their own, so each `{% for %}` iterable is passed through `budget_iter` (as a private
    filter, called directly by the compiled code) in the template's syntax tree before it is
    compiled (`_generate`). A filter written directly is one pass over a bounded
    input (ranges, repetitions and ref()s are capped). `concat` (the join of set blocks, macros and
    call blocks) checks the size."""

    intercepted_binops = frozenset({"*", "**"})
    output_name = "text"            # what the size error calls the output: "SQL" for models

    def __init__(self, *, timeout: float, max_bytes: int = MAX_RENDERED_BYTES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.deadline = monotonic() + timeout
        self.globals["lipsum"] = _bounded_lipsum(generate_lorem_ipsum)
        self.filters[_LOOP_FILTER] = self.budget_iter
        self.concat = self._concat      # type: ignore[method-assign,assignment]

    def start(self) -> None:
        """Start the time budget now."""
        self.deadline = monotonic() + self.timeout

    # -- budget

    def tick(self) -> None:
        if monotonic() > self.deadline:
            raise BudgetExceeded(
                f"rendering took longer than {_seconds(self.timeout)} s; look for a loop or macro that runs "
                f"too long, or set {RENDER_TIMEOUT_ENV} to allow more seconds")

    def too_big(self) -> BudgetExceeded:
        size = f"{self.max_bytes // 1_000_000} MB"
        return BudgetExceeded(f"the rendered {self.output_name} is larger than {size}; look for a loop that writes "
                              "too much")

    def each(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            if monotonic() > self.deadline:
                self.tick()
            yield item

    def budget_iter(self, iterable: Any) -> Any:
        """A loop's iterable: short built-in sequences as they are, anything else checking the deadline
        at every item (a loop over a short sequence is bounded; entering it checks the deadline)."""
        if monotonic() > self.deadline:
            self.tick()
        if type(iterable) in (list, tuple, dict, range, str) and len(iterable) <= _SMALL_LOOP:
            return iterable
        return _Loop(self, iterable)

    def _concat(self, parts: Iterable[str]) -> str:
        if isinstance(parts, list) and sum(map(len, parts)) > self.max_bytes:   # characters <= bytes
            raise self.too_big()
        self.tick()
        return "".join(parts)

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        for loop in _walk(source, nodes.For):
            loop.iter = nodes.Filter(loop.iter, _LOOP_FILTER, [], [], None, None, lineno=loop.iter.lineno)
        return super()._generate(source, name, filename, defer_init)

    # -- sandbox hooks (the deadline test is inlined: these run for every lookup)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if monotonic() > self.deadline:
            self.tick()
        if isinstance(obj, LoopContext) and args:           # loop(children) in a recursive loop
            args = (self.budget_iter(args[0]), *args[1:])
        return _call(self, context, obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if monotonic() > self.deadline:
            self.tick()
        return _getattr(self, obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if monotonic() > self.deadline:
            self.tick()
        return _getitem(self, obj, argument)

    def call_filter(self, name: str, value: Any, args: Any = None, kwargs: Any = None, context: Any = None,
                    eval_ctx: Any = None) -> Any:
        if monotonic() > self.deadline:
            self.tick()
        return _call_filter(self, name, value, args, kwargs, context, eval_ctx)

    def call_test(self, name: str, value: Any, args: Any = None, kwargs: Any = None, context: Any = None,
                  eval_ctx: Any = None) -> Any:
        if monotonic() > self.deadline:
            self.tick()
        return _call_test(self, name, value, args, kwargs, context, eval_ctx)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > _MAX_REPEAT:
                    raise SecurityError("repetition result is too large")
        return super().call_binop(context, operator, left, right)


# the base hooks, called directly: `super()` in a hook that runs for every lookup costs more than the check
_call = SandboxedEnvironment.call
_getattr = SandboxedEnvironment.getattr
_getitem = SandboxedEnvironment.getitem
_call_filter = SandboxedEnvironment.call_filter
_call_test = SandboxedEnvironment.call_test


def _walk(tree: nodes.Node, kind: type[Any]) -> Iterator[Any]:
    """Every node of `kind` in `tree` (Node.find_all's recursive generators cost more)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, kind):
            yield node
        stack.extend(node.iter_child_nodes())


def _bounded_lipsum(lipsum: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(lipsum)
    def bounded(n: int = 5, *args: Any, **kwargs: Any) -> str:
        if not isinstance(n, int) or n > _MAX_LIPSUM:
            raise SecurityError(f"lipsum() generates at most {_MAX_LIPSUM} paragraphs")
        return lipsum(n, *args, **kwargs)

    return bounded


def sandbox_environment(timeout: float | None = None) -> _Sandbox:
    return _Sandbox(
        timeout=render_timeout() if timeout is None else timeout,
        undefined=StrictUndefined,
        extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"],
        autoescape=False,
        keep_trailing_newline=True,
    )


def render_within_budget(env: _Sandbox, template: Any, context: Mapping[str, object]) -> str:
    """template.render(context), stopping when the output passes the size budget."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk) if chunk.isascii() else len(chunk.encode("utf-8", "surrogatepass"))
        if size > env.max_bytes:
            raise env.too_big()
        parts.append(chunk)
    return "".join(parts)


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


def is_secret_env_name(name: str) -> bool:
    return name.startswith(SECRET_ENV_PREFIXES)


def secret_env_problem(name: str, secrets: Mapping[str, str], reader: str) -> str | None:
    """Why `reader` ('a model', ...) may not read env var `name`, or None when it may.

    `secrets`: env var name -> the secret setting it feeds (Project.secret_env_vars)."""
    if name in secrets:
        return f"env_var('{name}') feeds a secret ({secrets[name]}) and cannot be read by {reader}"
    for prefix in SECRET_ENV_PREFIXES:
        if name.startswith(prefix):
            return f"env_var('{name}') is a secret (its name starts with {prefix}) and cannot be read by {reader}"
    return None


def guarded_env_var(secrets: Mapping[str, str], reader: str) -> Callable[..., str]:
    """`env_var()` for templates that must not read secrets (models, every non-secret setting)."""

    def env_var_(name: object = _MISSING, default: Any = _MISSING) -> str:
        if isinstance(name, str):
            problem = secret_env_problem(name, secrets, reader)
            if problem:
                raise TemplateProblem(problem)
        return env_var(name, default)

    return env_var_


@dataclass(frozen=True)
class EnvVarUse:
    """An `env_var(...)` call in a template: the variable's name when written as a string, else None."""

    name: str | None
    line: int


def env_vars_read(template: str | nodes.Template) -> list[EnvVarUse]:
    """Every `env_var(...)` call in a template (TemplateProblem on a syntax error)."""
    if isinstance(template, str):
        try:
            template = sandbox_environment(DEFAULT_RENDER_TIMEOUT).parse(template)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error: {exc.message}") from None
    uses: list[EnvVarUse] = []
    for call in _walk(template, nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == "env_var"):
            continue
        arg: nodes.Expr | None = call.args[0] if call.args else next(
            (kw.value for kw in call.kwargs if kw.key == "name"), None)
        name = arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None
        uses.append(EnvVarUse(name, call.lineno))
    return sorted(uses, key=lambda u: u.line)


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
    env = sandbox_environment()
    try:
        template = env.from_string(text)
        env.start()
        return render_within_budget(env, template, functions)
    except TemplateProblem:
        raise
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"unsafe template access refused: {exc}") from None
    except UndefinedError as exc:
        raise TemplateProblem(str(exc.message)) from None
    except Exception as exc:  # a user template can fail in any way
        raise TemplateProblem(describe_error(exc)) from None


def check_syntax(text: str) -> None:
    """Parse a template without rendering it; TemplateProblem on a syntax error."""
    try:
        sandbox_environment(DEFAULT_RENDER_TIMEOUT).parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}") from None


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "template recursion is too deep"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
