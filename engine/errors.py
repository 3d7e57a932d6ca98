"""Every error Reflow raises on purpose.

    ReflowError                      base; carries a message a person can act on
    ├── UserError                    bad input: the CLI prints it and exits 1, no traceback
    │   ├── ProjectError             reflow_project.yml missing or invalid
    │   ├── SpecError                one or more problems in sync specs (all at once)
    │   ├── RenderError              a model template failed to render
    │   ├── WarehouseError           the model query failed on the warehouse
    │   ├── KeyCheckError            null or duplicate primary keys in a model result
    │   ├── StateError               the state file is unusable (newer version, corrupt, read-only)
    │   │   ├── LockError            another run holds the state lock
    │   │   ├── StateGoneError       the state file (or its lock) was deleted or replaced while held
    │   │   └── RemoteStateError     a remote state (s3://…) cannot be reached, or moved on under this run
    │   ├── PlanError                no plan, unknown plan id, stale plan, plan already applied
    │   └── GuardError               a guard blocked the plan (exit code 4)
    ├── DestinationError             the destination refused the whole sync (bad key, permission, …)
    └── Interrupted                  SIGINT/SIGTERM during apply (exit code 130)

Messages never contain secrets: every ReflowError and every Problem passes through `scrub()`, which
replaces each value given to `register_secret()` (the project registers every secret setting as it
loads) with `***`. `contains_secret()`, `scrub_value()` and `registered_secrets()` serve the other
outputs (plan rows, reports, payloads) that must check or clean what they write; `scrubbed_output()`
puts the scrubber between every command and its stdout/stderr (console lines, JSON, CSV, progress,
`--debug` tracebacks).
"""

from __future__ import annotations

import contextlib
import html
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote


@dataclass(frozen=True)
class Problem:
    """One located problem in an input file: `file:line:col: path: message`."""

    file: str
    line: int | None
    col: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return scrub(text)


class ReflowError(Exception):
    """Base of every error Reflow raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))

    @property
    def message(self) -> str:
        return scrub(str(self.args[0]))      # again: a secret may have been registered since

    def __str__(self) -> str:
        return self.message


class UserError(ReflowError):
    """Bad input or a refused action; shown without a traceback."""


class ProjectError(UserError):
    pass


class SpecError(UserError):
    """All problems found in specs, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.col or 0, p.path))
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} found"
        super().__init__("\n".join(str(p) for p in self.problems) + f"\n{head}")


class RenderError(UserError):
    pass


class WarehouseError(UserError):
    pass


class KeyCheckError(UserError):
    pass


class StateError(UserError):
    pass


class LockError(StateError):
    pass


class StateGoneError(StateError):
    """The state file or a lock file was deleted or replaced (by path) while a run held them: what the
    run records from then on reaches no later run, so it stops."""


class RemoteStateError(StateError):
    """A remote state (`state_path: s3://…`) cannot be used (credentials, bucket, endpoint), or the stored
    state or its lock moved on under this run: the run stops, its acknowledgements kept in the working copy."""


class PlanError(UserError):
    pass


class GuardError(UserError):
    exit_code = 4


class DestinationError(ReflowError):
    """The destination refused the whole sync (bad key, missing permission, unknown endpoint)."""


class Interrupted(ReflowError):
    exit_code = 130


MIN_SECRET_LENGTH = 4                # shorter values would scrub ordinary words

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()       # longest first, so a secret inside another is not half-replaced


def register_secret(value: str | None) -> None:
    """Remember a secret so that `scrub` removes it from every message: the value as given, stripped,
    and as it appears inside JSON strings, URLs, HTML and SQL (quotes doubled in a literal or an
    identifier, as DuckDB spells an enum's labels and a struct's field names in a type, and in errors)."""
    global _secrets
    if not value:
        return
    forms = {value, value.strip(), json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             quote(value, safe=""), html.escape(value), value.replace("'", "''"), value.replace('"', '""')}
    forms = {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
    with _lock:
        if forms <= set(_secrets):
            return
        _secrets = tuple(sorted({*_secrets, *forms}, key=lambda s: (-len(s), s)))


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    for secret in _secrets:          # the tuple is replaced, never changed: safe while another thread registers
        if secret in text:
            text = text.replace(secret, "***")
    return text


def registered_secrets() -> tuple[str, ...]:
    """Every registered secret (each form), longest first: for outputs that search where `scrub` cannot
    run, e.g. as parameters of a DuckDB `contains(value, ?)` over rows that never reach Python."""
    return _secrets


def contains_secret(text: str) -> bool:
    """Does `text` hold a registered secret? (For outputs that must refuse rather than mask.)"""
    return any(secret in text for secret in _secrets)


def scrub_value(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with every string scrubbed, keys too."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_value(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v) for v in value)
    return value


class ScrubbedStream:
    """A text stream that writes through `scrub`: whole lines as they complete, the rest when flushed
    (so a secret split across two writes of one line is still found). Everything else (isatty,
    encoding, fileno) is the wrapped stream's."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        end = self._pending.rfind("\n")
        if end >= 0:
            self.stream.write(scrub(self._pending[: end + 1]))
            self._pending = self._pending[end + 1:]
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._pending:
            self.stream.write(scrub(self._pending))
            self._pending = ""
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def scrubbed_output() -> Iterator[None]:
    """While a command runs, its stdout and stderr pass through the scrubber (defence in depth: every
    message is scrubbed where it is made, and any output a secret still reaches is masked here)."""
    before = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbedStream(before[0]), ScrubbedStream(before[1])   # type: ignore[assignment]
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = before
