"""The project: finding it, `reflow_project.yml`, warehouse and connection settings.

Value classes first (the contract the engine reads), loading below.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine import known_valid
from engine.dbt_project import profile_secrets
from engine.destinations.braze.instances import EndpointProblem, resolve_endpoint
from engine.errors import Problem, ProjectError, register_secret
from engine.templates import (
    TemplateProblem,
    env_var,
    env_vars_read,
    guarded_env_var,
    is_secret_env_name,
    is_template,
    make_var,
    render_text,
)
from engine.yamlfile import Document, dotted, load_schema, read_yaml, schema_errors, validate

PROJECT_FILE = "reflow_project.yml"

SECRET_FIELDS: tuple[str, ...] = ("api_key", "partner_api_key", "data_import_key")
"""Setting names whose values are secrets, wherever they sit in reflow_project.yml outside `vars`:
connections.<name>.api_key today; partner_api_key and data_import_key are reserved for when a
connection takes them; add a state store's key settings here when one lands. The one list to extend.

For each such setting, as soon as the project loads, whatever the command: its value is registered
with the error scrubber (rendered now when its environment variables are set), the environment
variables it reads (`env_var('NAME')`, which must name them with a string) are recorded in
`Project.secret_env_vars`, and no other template (models, other settings) may read those
variables, nor any REFLOW_SECRET_* or DBT_ENV_SECRET_* one."""


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
    diff: str = "local"                  # local | hashes | warehouse (specs.DiffLocation), a sync may override
    mirror_schema: str = "reflow_mirror"  # diff: warehouse: the warehouse schema of the snapshot mirrors


@dataclass(frozen=True)
class CohortImport:
    """Braze's partner cohort import (`cohort_import:` of a connection): the partner name in
    /partners/{partner}/..., and the templates of its two secrets (rendered when a send needs them)."""

    partner: str
    partner_api_key_template: str | None = field(default=None, repr=False)
    data_import_key_template: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ConnectionConfig:
    """A Braze connection. `api_key` is None until resolved (reading env vars lazily, so that
    `validate`/`plan` work without the key); use `Project.api_key(name)`."""

    name: str
    type: str = "braze"
    endpoint: str | None = None          # the REST base URL; or `instance`
    instance: str | None = None          # US-01, iad-01, EU-02, fra-02, ...: resolved into `endpoint` by
                                         # load_project (instances.resolve_endpoint), so a loaded
                                         # connection carries the URL alone
    api_key_template: str | None = field(default=None, repr=False)
    rate_limit: float | None = None      # requests per second for /users/track (default 1000)
    concurrency: int | None = None
    timeout: float = 30.0
    max_retries: int = 5
    max_unknown_sends: int = 3           # events/purchases sent this often without an answer: not sent again
    export_rate_limit: float | None = None   # requests per second for /users/export/ids (default 250/min)
    profile_wait: float = 30.0           # seconds to wait for a just-created profile to become visible
    array_max: int = 25                  # the workspace's longest array attribute (Braze keeps the newest N)
    legacy_limits: bool = False
    allow_http: bool = False             # permit plain http:// to a non-loopback host
    cohort_import: CohortImport | None = None    # partner cohort import (cohorts with method: partner)
    extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Project:
    root: Path
    name: str
    warehouse: WarehouseConfig
    state_path: Path                     # absolute: the state file, or a remote state's working copy
    vars: Mapping[str, object] = field(default_factory=dict)
    connections: Mapping[str, ConnectionConfig] = field(default_factory=dict)
    owner: Mapping[str, str] = field(default_factory=dict)
    memory_limit: str = "1GB"
    file: str = PROJECT_FILE
    warnings: tuple[str, ...] = ()       # located notes for the user (e.g. an inline API key)
    secret_env_vars: Mapping[str, str] = field(default_factory=dict)   # env var -> the secret setting it feeds
    state_url: str | None = None         # state_path as an object-store URL (s3://…): `state_path` is its copy
    remote_state: Mapping[str, float] = field(default_factory=dict)   # upload_every, lock_expiry (seconds)

    def api_key(self, name: str, *, required: bool = True) -> str | None:
        """The API key of connection `name`, read from the environment now."""
        return resolve_api_key(self.connections[name], required=required)


# ---------------------------------------------------------------- loading

DEFAULT_STATE_PATH = ".reflow/state.duckdb"
REMOTE_STATE_SCHEMES = ("s3://", "gs://", "az://")
REMOTE_WORKING_DIR = ".reflow/remote"
# the object stores' standard credential variables that hold secrets (read by the object-store library,
# never by the project file): registered with the scrubber, and no model or setting may read them
STORE_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_TOKEN", "AWS_SSE_CUSTOMER_KEY_BASE64",
                    "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_MASTER_KEY",
                    "AZURE_STORAGE_SAS_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_TOKEN",
                    "AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET", "AZURE_FABRIC_SESSION_TOKEN",
                    "GOOGLE_SERVICE_ACCOUNT_KEY", "GOOGLE_BEARER_TOKEN")   # obstore's aliases included
SCHEMA = "project.schema.json"


def find_project(project_dir: str | Path | None = None) -> Path:
    """The folder holding reflow_project.yml: `project_dir` itself, else the cwd or a parent."""
    if project_dir is not None:
        given = Path(project_dir).expanduser()
        if given.name == PROJECT_FILE and given.is_file():
            return given.resolve().parent
        if (given / PROJECT_FILE).is_file():
            return given.resolve()
        raise ProjectError(
            f"no {PROJECT_FILE} in {given}; run `reflow init {given}` or pass the folder that holds it as --project-dir"
        )
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise ProjectError(
        f"no {PROJECT_FILE} found in {cwd} or any parent; run `reflow init` or pass --project-dir"
    )


def _fail(problems: list[Problem]) -> ProjectError:
    problems = sorted(problems, key=lambda p: (p.line or 0, p.col or 0, p.path))
    n = len(problems)
    return ProjectError("\n".join(str(p) for p in problems) + f"\n{n} problem{'s' if n != 1 else ''} in {PROJECT_FILE}")


Path_ = tuple[str | int, ...]


def is_secret_field(path: Path_) -> bool:
    """Is this setting of reflow_project.yml a secret (SECRET_FIELDS)?"""
    return len(path) >= 2 and path[0] != "vars" and path[-1] in SECRET_FIELDS


def _secret_settings(value: Any, path: Path_ = ()) -> list[tuple[Path_, str]]:
    """Every secret setting holding a string: (path, raw value)."""
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _secret_settings(v, (*path, k))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in _secret_settings(v, (*path, i))]
    return [(path, value)] if isinstance(value, str) and is_secret_field(path) else []


def _read_secret_settings(doc: Document, problems: list[Problem], warnings: list[str]) -> dict[str, str]:
    """Register literal secrets, and map each env var a secret setting reads to that setting's path."""

    secret_env: dict[str, str] = {}
    for path, raw in _secret_settings(doc.data):
        where = dotted(path)
        if not is_template(raw):
            register_secret(raw)
            line, col = doc.value_mark(path)
            what = "the API key" if path[-1] == "api_key" else "a secret"
            warnings.append(
                f"{doc.file}:{line}:{col}: {where}: {what} is written in the project file; "
                "use \"{{ env_var('BRAZE_API_KEY') }}\" to keep it out of version control"
            )
            continue
        try:
            uses = env_vars_read(raw)
        except TemplateProblem as exc:
            problems.append(doc.problem(path, exc.message))
            continue
        for use in uses:
            if use.name is None:
                problems.append(doc.problem(path, "env_var() in a secret setting must name its variable with a "
                                                  "quoted string (env_var('BRAZE_API_KEY')), so that models can "
                                                  "be kept from reading it"))
            else:
                secret_env.setdefault(use.name, where)
    return secret_env


def _register_secret_values(doc: Document, secret_env: Mapping[str, str]) -> None:
    """Register, now, the value of every secret setting and every secret env var that is set, so that
    no command (validate and plan included) can print them, whether or not it uses them."""

    for name, value in os.environ.items():
        if name in secret_env or is_secret_env_name(name) or name in STORE_SECRET_ENV:
            register_secret(value)
    for _, raw in _secret_settings(doc.data):
        if is_template(raw):
            try:
                register_secret(render_text(raw, {"env_var": env_var}).strip())
            except TemplateProblem:
                pass                      # not set: the command that needs it says so (resolve_api_key)


def _render_tree(
    value: Any, path: tuple[str | int, ...], functions: Mapping[str, object], doc: Document,
    problems: list[Problem], templated: set[tuple[str | int, ...]], failed: set[tuple[str | int, ...]],
) -> Any:
    """Render every templated string in `value` (except secret settings, read only when needed)."""

    if isinstance(value, dict):
        return {k: _render_tree(v, (*path, k), functions, doc, problems, templated, failed) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_tree(v, (*path, i), functions, doc, problems, templated, failed) for i, v in enumerate(value)]
    if isinstance(value, str) and is_template(value) and not is_secret_field(path):
        try:
            rendered = render_text(value, functions)
        except TemplateProblem as exc:
            problems.append(doc.problem(path, exc.message))
            failed.add(path)
            return value
        templated.add(path)
        return rendered
    return value


def _coerce(text: str) -> Any:
    """A rendered template read as a YAML scalar: '32' -> 32, 'true' -> True."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, bool | int | float) else text


def _coerce_types(data: Any, templated: set[tuple[str | int, ...]], schema: Mapping[str, Any]) -> None:
    """Templates always render to strings; read them as numbers/booleans where the schema wants one
    (nothing to do without templates, or when the data is known valid as it is: engine/known_valid.py)."""
    if not templated or known_valid.seen(schema, data):
        return
    for err in schema_errors(schema, data):
        path = tuple(err.absolute_path)
        if err.validator != "type" or path not in templated or not path:
            continue
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = _coerce(parent[path[-1]])


def _connection(name: str, raw: Mapping[str, Any], doc: Document, problems: list[Problem], warnings: list[str]) -> ConnectionConfig:

    base: tuple[str | int, ...] = ("connections", name)
    endpoint: str | None = None
    try:
        resolved = resolve_endpoint(endpoint=raw.get("endpoint"), instance=raw.get("instance"),
                                    allow_http=bool(raw.get("allow_http", False)))
    except EndpointProblem as problem:
        problems.append(doc.problem((*base, problem.key), problem.message))
    else:
        endpoint = resolved.url
        if resolved.warning:
            key = "instance" if raw.get("instance") else "endpoint"
            warnings.append(str(doc.problem((*base, key), resolved.warning)))
    api_key = raw.get("api_key")            # checked and registered by _read_secret_settings
    rate = raw.get("rate_limit")
    extra: dict[str, object] = {}
    rate_limit: float | None = None
    if isinstance(rate, dict):
        rate_limit = float(rate["requests"]) / float(rate["seconds"])
        extra = {"rate_limit_requests": int(rate["requests"]), "rate_limit_seconds": float(rate["seconds"])}
    elif rate is not None:
        rate_limit = float(rate)
    return ConnectionConfig(
        name=name,
        type=str(raw.get("type", "braze")),
        endpoint=endpoint,
        api_key_template=api_key,
        rate_limit=rate_limit,
        concurrency=int(raw["concurrency"]) if "concurrency" in raw else None,
        timeout=float(raw.get("timeout", 30.0)),
        max_retries=int(raw.get("max_retries", 5)),
        max_unknown_sends=int(raw.get("max_unknown_sends", 3)),
        export_rate_limit=float(raw["export_rate_limit"]) if "export_rate_limit" in raw else None,
        profile_wait=float(raw.get("profile_wait", 30.0)),
        array_max=int(raw.get("array_max", 25)),
        legacy_limits=bool(raw.get("legacy_limits", False)),
        allow_http=bool(raw.get("allow_http", False)),
        cohort_import=_cohort_import(raw.get("cohort_import")),
        extra=extra,
    )


def _cohort_import(raw: Any) -> CohortImport | None:
    if not isinstance(raw, dict):
        return None
    return CohortImport(partner=str(raw.get("partner", "")), partner_api_key_template=raw.get("partner_api_key"),
                        data_import_key_template=raw.get("data_import_key"))


def load_project(root: Path) -> Project:
    """Read, render and validate `<root>/reflow_project.yml`. All problems at once (ProjectError)."""
    root = Path(root).expanduser().resolve()
    file = root / PROJECT_FILE
    if not file.is_file():
        raise ProjectError(f"no {PROJECT_FILE} in {root}; run `reflow init` or pass --project-dir")
    doc, problems = read_yaml(file, PROJECT_FILE, kind="project")
    if doc is None:
        raise _fail(problems)
    warnings: list[str] = []
    secret_env = _read_secret_settings(doc, problems, warnings)
    _register_secret_values(doc, secret_env)
    env_var = guarded_env_var(secret_env, "another setting")
    schema = load_schema(SCHEMA)
    data = doc.data
    templated: set[tuple[str | int, ...]] = set()
    failed: set[tuple[str | int, ...]] = set()  # templates that did not render: their schema checks are moot
    if isinstance(data, dict):
        raw_vars = data.get("vars")
        vars_: Any = raw_vars
        if isinstance(raw_vars, dict):
            vars_ = _render_tree(raw_vars, ("vars",), {"env_var": env_var}, doc, problems, templated, failed)
        functions = {"env_var": env_var, "var": make_var(vars_ if isinstance(vars_, dict) else {})}
        rest = {k: v for k, v in data.items() if k != "vars"}
        data = _render_tree(rest, (), functions, doc, problems, templated, failed)
        if "vars" in doc.data:
            data["vars"] = vars_
        _coerce_types(data, templated, schema)
    doc = dataclasses.replace(doc, data=data)
    moot = {dotted(path) for path in failed}
    problems += [p for p in validate(doc, schema) if p.path not in moot]
    if problems:
        raise _fail(problems)

    connections = {
        name: _connection(name, raw, doc, problems, warnings) for name, raw in data["connections"].items()
    }
    wh = data.get("warehouse", {"type": "duckdb"})
    warehouse = WarehouseConfig(
        type=wh["type"],
        path=wh.get("path", "warehouse.duckdb"),
        project_dir=wh.get("project_dir", "."),
        profiles_dir=wh.get("profiles_dir"),
        target=wh.get("target"),
        diff=wh.get("diff", "local"),
        mirror_schema=wh.get("mirror_schema", "reflow_mirror"),
    )
    raw_state = str(data.get("state_path", DEFAULT_STATE_PATH))
    state_url = raw_state if raw_state.lower().startswith(REMOTE_STATE_SCHEMES) else None
    if state_url:
        if "@" in state_url.split("/")[2] or "?" in state_url:
            problems.append(doc.problem(("state_path",), "an object-store URL carries no credentials or options: "
                                        "they come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                                        "AWS_REGION, AWS_ENDPOINT_URL)"))
        for name in STORE_SECRET_ENV:
            secret_env.setdefault(name, "state_path (object-store credentials)")
        state = Path(REMOTE_WORKING_DIR) / hashlib.sha256(state_url.encode()).hexdigest()[:16] / "state.duckdb"
    else:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", raw_state):      # a URL (not a drive letter), mistyped
            problems.append(doc.problem(("state_path",), f"{raw_state!r} is neither a local path nor a state object "
                                        "URL: write s3://BUCKET/PREFIX/state.duckdb (or gs://, az://), or a path"))
        state = Path(os.path.expanduser(raw_state))
    if problems:
        raise _fail(problems)
    if warehouse.type == "dbt":           # the dbt profile's passwords and tokens are secrets too

        partial = Project(root=root, name=data["name"], warehouse=warehouse, state_path=root / DEFAULT_STATE_PATH)
        secret_env = {**profile_secrets(partial), **secret_env}
    return Project(
        root=root,
        name=data["name"],
        warehouse=warehouse,
        state_path=state if state.is_absolute() else root / state,
        vars=dict(data.get("vars", {})),
        connections=connections,
        owner=dict(data.get("owner", {})),
        memory_limit=data.get("memory_limit", default_memory_limit(warehouse)),
        warnings=tuple(warnings),
        secret_env_vars=secret_env,
        state_url=state_url,
        remote_state={k: float(v) for k, v in data.get("remote_state", {}).items()},
    )


def default_memory_limit(warehouse: WarehouseConfig) -> str:
    """DuckDB's memory limit for planning when the project file sets none. A dbt project's process
    already holds dbt and its adapter (~200 MB) and lands remote rows in DuckDB, so its planner gets
    256MB (a 1M-row PostgreSQL model then plans under 450 MB peak); the embedded warehouse gets 1GB."""
    return "256MB" if warehouse.type == "dbt" else "1GB"


def resolve_partner_secret(connection: ConnectionConfig, setting: str) -> str:
    """Render `cohort_import.<setting>` (partner_api_key or data_import_key) of a connection now, and
    register it with the scrubber; ProjectError naming the setting (and its env var) when it is missing."""
    where = f"connections.{connection.name}.cohort_import.{setting}"
    cohort = connection.cohort_import
    template = getattr(cohort, f"{setting}_template", None) if cohort is not None else None
    if not template:
        raise ProjectError(f"connection '{connection.name}' has no {where.split('.', 2)[2]}: cohorts with method: "
                           f"partner need cohort_import: {{partner, partner_api_key, data_import_key}} in {PROJECT_FILE}")
    try:
        value = render_text(template, {"env_var": env_var}).strip() if is_template(template) else template
    except TemplateProblem as exc:
        if exc.env_var:
            raise ProjectError(f"connection '{connection.name}': environment variable {exc.env_var} is not set "
                               f"({where} in {PROJECT_FILE})") from None
        raise ProjectError(f"connection '{connection.name}': {where} in {PROJECT_FILE}: {exc.message}") from None
    if not value:
        raise ProjectError(f"connection '{connection.name}': {where} in {PROJECT_FILE} renders to an empty string")
    register_secret(value)
    return value


def resolve_api_key(connection: ConnectionConfig, *, required: bool) -> str | None:
    """Render the connection's api_key now. Missing → ProjectError naming the env var (if required)."""

    name = connection.name
    template = connection.api_key_template
    if not template:
        if not required:
            return None
        raise ProjectError(
            f"connection '{name}' has no api_key; add api_key: \"{{{{ env_var('BRAZE_API_KEY') }}}}\" "
            f"under connections.{name} in {PROJECT_FILE}"
        )
    if not is_template(template):
        register_secret(template)
        return template
    try:
        value = render_text(template, {"env_var": env_var}).strip()
    except TemplateProblem as exc:
        if not required:
            return None
        if exc.env_var:
            raise ProjectError(
                f"connection '{name}': environment variable {exc.env_var} is not set "
                f"(api_key in {PROJECT_FILE}); export {exc.env_var}=<your Braze REST API key>"
            ) from None
        raise ProjectError(f"connection '{name}': api_key in {PROJECT_FILE}: {exc.message}") from None
    if not value:
        if not required:
            return None
        raise ProjectError(
            f"connection '{name}': api_key in {PROJECT_FILE} renders to an empty string; "
            "is its environment variable set but empty?"
        )
    register_secret(value)
    return value
