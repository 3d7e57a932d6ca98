"""The project: finding it, `reflow_project.yml`, warehouse and connection settings.

Value classes first (the contract the engine reads), loading below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_FILE = "reflow_project.yml"


class Secret:
    """A secret value (API key). Its str/repr never show it; `.reveal()` does."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class WarehouseConfig:
    type: str = "duckdb"                 # duckdb | dbt
    path: str = "warehouse.duckdb"       # duckdb: file, relative to the project root
    project_dir: str = "."               # dbt
    profiles_dir: str | None = None      # dbt (DBT_PROFILES_DIR, then ~/.dbt)
    target: str | None = None            # dbt


@dataclass(frozen=True)
class ConnectionConfig:
    """A Braze connection. `api_key` is None until resolved (reading env vars lazily, so that
    `validate`/`plan` work without the key); use `Project.api_key(name)`."""

    name: str
    type: str = "braze"
    endpoint: str | None = None          # full URL; or `instance`
    instance: str | None = None          # iad-01, fra-02, au-01, us-10, ...
    api_key_template: str | None = field(default=None, repr=False)
    rate_limit: float | None = None      # requests per second for /users/track (default 1000)
    concurrency: int | None = None
    timeout: float = 30.0
    max_retries: int = 5
    legacy_limits: bool = False
    allow_http: bool = False             # permit plain http:// to a non-loopback host
    extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    warehouse: WarehouseConfig
    state_path: Path                     # absolute
    vars: Mapping[str, object] = field(default_factory=dict)
    connections: Mapping[str, ConnectionConfig] = field(default_factory=dict)
    owner: Mapping[str, str] = field(default_factory=dict)
    memory_limit: str = "1GB"
    file: str = PROJECT_FILE
