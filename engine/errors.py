"""Every error Reflow raises on purpose.

    ReflowError                      base; carries a message a person can act on
    ├── UserError                    bad input: the CLI prints it and exits 1, no traceback
    │   ├── ProjectError             reflow_project.yml missing or invalid
    │   ├── SpecError                one or more problems in sync specs (all at once)
    │   ├── RenderError              a model template failed to render
    │   ├── WarehouseError           the model query failed on the warehouse
    │   ├── KeyCheckError            null or duplicate primary keys in a model result
    │   ├── StateError               the state file is unusable (newer version, corrupt, read-only)
    │   │   └── LockError            another run holds the state lock
    │   ├── PlanError                no plan, unknown plan id, stale plan, plan already applied
    │   └── GuardError               a guard blocked the plan (exit code 4)
    ├── DestinationError             the destination refused the whole sync (bad key, permission, …)
    └── Interrupted                  SIGINT/SIGTERM during apply (exit code 130)

Messages never contain secrets: anything that might is passed through `scrub()`.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ReflowError(Exception):
    """Base of every error Reflow raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))

    @property
    def message(self) -> str:
        return str(self.args[0])


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


class PlanError(UserError):
    pass


class GuardError(UserError):
    exit_code = 4


class DestinationError(ReflowError):
    """The destination refused the whole sync (bad key, missing permission, unknown endpoint)."""


class Interrupted(ReflowError):
    exit_code = 130


_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that `scrub` removes it from every message."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text
