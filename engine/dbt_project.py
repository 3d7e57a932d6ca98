"""A dbt project beside Reflow, read as plain files (never imports dbt).

What the core needs to know about a dbt project without paying for dbt: where it is,
which folders hold its models, which profile/target Reflow runs against, where Reflow's
private dbt artifacts go (`<target-path>/reflow/<target>`, never the user's target/), and a
fingerprint of the project's files so `dbt parse` runs again only after they changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engine.errors import ProjectError, register_secret
from engine.sql import first_line
from engine.templates import TemplateProblem, env_var, env_vars_read, is_template, render_text

if TYPE_CHECKING:
    from engine.project import Project

DBT_PROJECT_FILE = "dbt_project.yml"
PROFILES_FILE = "profiles.yml"
FINGERPRINTED = {".sql", ".yml", ".yaml", ".csv", ".py", ".md", ".jinja"}
_ENV_VAR = re.compile(r"""env_var\(\s*['"]([^'"]+)['"]""")


@dataclass(frozen=True)
class DbtProject:
    root: Path                       # folder holding dbt_project.yml
    name: str
    profile: str
    profiles_dir: Path
    target: str                      # resolved: --target / project file / DBT_TARGET / profile default
    model_paths: tuple[str, ...]
    seed_paths: tuple[str, ...]
    snapshot_paths: tuple[str, ...]
    target_path: str                 # dbt's target-path (default "target")
    log_path: str

    @property
    def private_dir(self) -> Path:
        """Reflow's own dbt artifacts for this target (manifest, partial parse, logs)."""
        return self.root / self.target_path / "reflow" / self.target


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"cannot read {what} {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path}: not valid YAML: {first_line(exc)}") from None
    return data if isinstance(data, dict) else {}


def _paths(data: dict[str, Any], key: str, default: str) -> tuple[str, ...]:
    value = data.get(key, [default])
    if isinstance(value, str):
        value = [value]
    return tuple(str(v) for v in value) if isinstance(value, list) and value else (default,)


def _render(text: str) -> str:
    """A profiles.yml value with env_var() rendered (Reflow's own renderer; dbt renders the same)."""

    if not is_template(text):
        return text
    try:
        return render_text(text, {"env_var": _env_var_any}).strip()
    except TemplateProblem as exc:
        raise ProjectError(f"{PROFILES_FILE}: target: {exc.message}") from None


def _env_var_any(name: str, default: object = None) -> str:

    return env_var(name) if default is None else env_var(name, default)


# settings of a dbt profile's targets whose values are secrets (dbt adapters' passwords, tokens, keys)
PROFILE_SECRET_FIELDS = ("password", "pass", "token", "private_key", "private_key_passphrase", "keyfile_json",
                         "client_secret", "refresh_token", "access_token", "secret")


def profile_secrets(project: Project) -> dict[str, str]:
    """The secret settings of the dbt profile's targets (PROFILE_SECRET_FIELDS, every target: --target may
    choose any): each value is registered with the scrubber now (env_var() rendered when set), and the
    env vars they read are returned (name -> the setting), so that models cannot read them either. A
    profile that cannot be read registers nothing: the command that needs it says why."""

    try:
        dbt = load_dbt_project(project)
        entry = _load(dbt.profiles_dir / PROFILES_FILE, PROFILES_FILE).get(dbt.profile)
    except ProjectError:
        return {}
    outputs = entry.get("outputs") if isinstance(entry, dict) else None
    found: dict[str, str] = {}
    for target, settings in (outputs or {}).items():
        if not isinstance(settings, dict):
            continue
        for name, raw in settings.items():
            if name not in PROFILE_SECRET_FIELDS or not isinstance(raw, str | dict):
                continue
            text = raw if isinstance(raw, str) else json.dumps(raw)
            where = f"{PROFILES_FILE}: {dbt.profile}.outputs.{target}.{name}"
            if not is_template(text):
                register_secret(text)
                continue
            try:
                found.update({use.name: where for use in env_vars_read(text) if use.name})
                register_secret(render_text(text, {"env_var": _env_var_any}).strip())
            except TemplateProblem:
                pass                      # not set here: dbt says so when it connects
    return found


def dbt_root(project: Project) -> Path:
    return (project.root / project.warehouse.project_dir).expanduser().resolve()


def profiles_dir_of(project: Project) -> Path:
    """profiles_dir from the project file, else DBT_PROFILES_DIR, else the dbt project folder if
    it holds profiles.yml (dbt's own rule for the current folder), else ~/.dbt."""
    given = project.warehouse.profiles_dir or os.environ.get("DBT_PROFILES_DIR")
    if given:
        path = Path(given).expanduser()
        return (path if path.is_absolute() else project.root / path).resolve()
    root = dbt_root(project)
    if (root / PROFILES_FILE).is_file():
        return root
    return Path("~/.dbt").expanduser()


def load_dbt_project(project: Project) -> DbtProject:
    """The dbt project of a `warehouse: {type: dbt}` Reflow project (ProjectError if missing)."""
    root = dbt_root(project)
    file = root / DBT_PROJECT_FILE
    if not file.is_file():
        raise ProjectError(
            f"{project.file}: warehouse.type is dbt but there is no {DBT_PROJECT_FILE} in {root} "
            "(set warehouse.project_dir to the dbt project folder)"
        )
    data = _load(file, DBT_PROJECT_FILE)
    name = str(data.get("name", root.name))
    profile = str(data.get("profile", name))
    profiles_dir = profiles_dir_of(project)
    target = project.warehouse.target or os.environ.get("DBT_TARGET") or _default_target(profiles_dir, profile)
    return DbtProject(
        root=root, name=name, profile=profile, profiles_dir=profiles_dir, target=target,
        model_paths=_paths(data, "model-paths", "models"), seed_paths=_paths(data, "seed-paths", "seeds"),
        snapshot_paths=_paths(data, "snapshot-paths", "snapshots"),
        target_path=str(data.get("target-path", "target")), log_path=str(data.get("log-path", "logs")),
    )


def _default_target(profiles_dir: Path, profile: str) -> str:
    file = profiles_dir / PROFILES_FILE
    if not file.is_file():
        raise ProjectError(
            f"no {PROFILES_FILE} in {profiles_dir} for dbt profile '{profile}' "
            "(set warehouse.profiles_dir or DBT_PROFILES_DIR)"
        )
    entry = _load(file, PROFILES_FILE).get(profile)
    if not isinstance(entry, dict):
        raise ProjectError(f"{file}: no profile named '{profile}' (the dbt project's `profile:`)")
    target = entry.get("target")
    return _render(str(target)) if target else "default"


@functools.lru_cache(maxsize=64)
def _model_dirs_cached(file: str, mtime: int, project_dir: str) -> tuple[Path, ...]:
    data = _load(Path(file), DBT_PROJECT_FILE)
    root = Path(file).parent
    return tuple((root / p).resolve() for p in _paths(data, "model-paths", "models"))


def dbt_model_dirs(project: Project) -> tuple[Path, ...]:
    """The dbt project's model folders, or () when the warehouse is not dbt (or no dbt_project.yml)."""
    if project.warehouse.type != "dbt":
        return ()
    file = dbt_root(project) / DBT_PROJECT_FILE
    try:
        mtime = file.stat().st_mtime_ns
    except OSError:
        return ()
    return _model_dirs_cached(str(file), mtime, project.warehouse.project_dir)


def dbt_model_files(project: Project) -> dict[str, Path]:
    """dbt model name -> .sql file (plain scan of the model folders; no dbt, no manifest)."""
    found: dict[str, Path] = {}
    for folder in dbt_model_dirs(project):
        if folder.is_dir():
            for path in sorted(folder.rglob("*.sql")):
                if not any(part.startswith(".") for part in path.relative_to(folder).parts):
                    found.setdefault(path.stem, path)
    return found


def dbt_yaml_files(project: Project) -> list[Path]:
    """Every properties YAML file under the dbt model folders (where `config.meta.reflow` may live)."""
    files: list[Path] = []
    for folder in dbt_model_dirs(project):
        if folder.is_dir():
            files += [p for pattern in ("*.yml", "*.yaml") for p in folder.rglob(pattern)
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(set(files))


def fingerprint(dbt: DbtProject, *, exclude: tuple[Path, ...] = ()) -> str:
    """Changes when a dbt project file, the profiles file, the target or an env var they read changes."""
    skip = {(dbt.root / dbt.target_path).resolve(), (dbt.root / dbt.log_path).resolve(),
            *(p.resolve() for p in exclude)}
    entries: list[Any] = [dbt.target, str(dbt.profiles_dir)]
    names: set[str] = set()
    files = [dbt.profiles_dir / PROFILES_FILE]
    for dirpath, dirnames, filenames in os.walk(dbt.root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")) and (here / d).resolve() not in skip)
        files += [here / f for f in sorted(filenames) if Path(f).suffix in FINGERPRINTED and (here / f) not in skip]
    for file in files:
        try:
            stat = file.stat()
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        entries.append([str(file), stat.st_size, stat.st_mtime_ns])
        names.update(_ENV_VAR.findall(text))
    entries.append({n: os.environ.get(n) for n in sorted(names)})
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:20]
