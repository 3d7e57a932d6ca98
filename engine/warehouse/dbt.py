"""The warehouse of a dbt project's profile: models run where dbt builds them.

The only module that imports dbt, and only lazily (`reflow --help` and non-dbt projects never
pay the ~2 s import). dbt *commands* (parse, build, compile --inline) run as subprocesses into
a private target path (`<target-path>/reflow/<target>`), so the user's artifacts are never
overwritten and dbt's global state and the DuckDB file lock stay out of this process.

    dbt-duckdb    the target's DuckDB file is attached read-only to the planner's connection
                  (catalog = the profile's database, i.e. the file stem); the diff reads it there
    dbt-postgres  the adapter's psycopg2 connection COPYs the model's result as CSV straight into
                  DuckDB's reader (pg_copy.py), into memory.main.reflow_landed; a result with a
                  type COPY cannot carry as psycopg2 renders it streams through a named cursor
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import yaml

from engine.dbt_project import DbtProject, fingerprint, load_dbt_project
from engine.errors import ProjectError, RenderError, WarehouseError, contains_secret, scrub
from engine.models import RenderedModel, render_model
from engine.project import PROJECT_FILE, Project
from engine.sql import quote
from engine.warehouse import pg_copy
from engine.warehouse.base import Meter, ReadCost, attach_read_only, describe_in_process, land_in_process
from engine.warehouse.dialects import Dialect, dialect_for
from engine.warehouse.guard import check_model_sql
from engine.warehouse.manifest import REFABLE, Macro, Manifest, Node, read_manifest

if TYPE_CHECKING:
    from engine.specs import SyncSpec

INSTALL_HINT = ("this project reads a dbt project (warehouse.type: dbt) but dbt-core is not installed; "
                "install reflow[dbt] (`pip install 'reflow[dbt]'`, plus reflow[postgres] for dbt-postgres)")
LANDED = "memory.main.reflow_landed"
BATCH = 20_000
STAMP = "reflow_fingerprint.txt"
COMPILED = "reflow_compiled.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STAMPED = re.compile(r"^\d\d:\d\d:\d\d\s+")
_ENV_VAR = re.compile(r"""env_var\(\s*['"]([^'"]+)['"]""")
_VAR = re.compile(r"""(?<![\w.])var\(\s*['"]([^'"]+)['"]""")
_VAR_DYNAMIC = re.compile(r"""(?<![\w.])var\(\s*[^'"\s)]""")




def dbt_installed() -> bool:
    return importlib.util.find_spec("dbt") is not None and importlib.util.find_spec("dbt.cli") is not None


def dbt_executable() -> list[str]:
    """The `dbt` of this Python environment (its console script, else dbt's click entry point)."""
    script = Path(sys.executable).parent / "dbt"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from dbt.cli.main import cli; sys.exit(cli())"]


def _dbt_output(text: str, limit: int = 25) -> str:
    """dbt's console output without colours and timestamps, the last `limit` meaningful lines."""
    lines = [_STAMPED.sub("", _ANSI.sub("", line)).rstrip() for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    return "\n".join(lines[-limit:])


class DbtWarehouse:
    """Warehouse protocol (engine/warehouse/base.py) over a dbt project's target."""

    def __init__(self, project: Project) -> None:
        if not dbt_installed():
            raise ProjectError(INSTALL_HINT)
        self.project = project
        self.dbt: DbtProject = load_dbt_project(project)
        self.name = self.dbt.target
        self.parse_seconds: float | None = None       # how long the last `dbt parse` took (None: up to date)
        self._manifest: Manifest | None = None
        self._config: Any = None
        self._adapter: Any = None
        self._handle: Any = None
        self._cursors = 0
        self.cost = ReadCost()

    # ------------------------------------------------------------------ dbt commands (subprocess)

    def _command(self, command: Sequence[str]) -> list[str]:
        private = self.dbt.private_dir
        return [*dbt_executable(), "--no-use-colors", *command,
                "--project-dir", str(self.dbt.root), "--profiles-dir", str(self.dbt.profiles_dir),
                "--target", self.dbt.target, "--target-path", str(private),
                "--log-path", str(private / "logs"), "--no-send-anonymous-usage-stats"]

    def _run(self, command: Sequence[str], *, what: str, timeout: float | None = None) -> str:
        self.dbt.private_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        try:
            done = subprocess.run(self._command(command), cwd=self.dbt.root, env=env, capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise WarehouseError(f"`dbt {what}` did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise WarehouseError(f"cannot run dbt: {exc}") from None
        if done.returncode != 0:
            raise WarehouseError(scrub(f"`dbt {what}` failed (exit {done.returncode}) for target "
                                       f"'{self.dbt.target}':\n{_dbt_output(done.stdout + done.stderr)}"))
        return done.stdout

    def _exclude(self) -> tuple[Path, ...]:
        root = self.project.root
        return (root / "syncs", root / PROJECT_FILE, self.project.state_path.parent, root / ".reflow")

    def manifest(self, *, reparse: bool = False) -> Manifest:
        """The target's manifest, re-parsed (`dbt parse`, subprocess) only when project files changed
        (or when `reparse`: a file's content no longer matches its checksum, see definition())."""
        if self._manifest is not None and not reparse:
            return self._manifest
        private = self.dbt.private_dir
        path, stamp = private / "manifest.json", private / STAMP
        current = fingerprint(self.dbt, exclude=self._exclude())
        fresh = (not reparse and path.is_file() and stamp.is_file()
                 and stamp.read_text(encoding="utf-8").strip() == current)
        if not fresh:
            started = time.monotonic()
            self._run(["parse", "--quiet"], what="parse", timeout=1800)
            self.parse_seconds = time.monotonic() - started
            stamp.write_text(current + "\n", encoding="utf-8")
        self._manifest = read_manifest(path)
        return self._manifest

    def build(self, models: Iterable[str]) -> float:
        """`dbt build --select +<model> ...` on this target (subprocess); WarehouseError if dbt fails."""
        selected = sorted(set(models))
        if not selected:
            return 0.0
        started = time.monotonic()
        current = fingerprint(self.dbt, exclude=self._exclude())    # before: an edit during the build re-parses
        self._run(["build", "--select", *[f"+{m}" for m in selected]], what=f"build --select +{' +'.join(selected)}")
        self._manifest = None
        (self.dbt.private_dir / STAMP).write_text(current + "\n", encoding="utf-8")
        return time.monotonic() - started

    def compile_inline(self, template: str, where: str) -> str:
        """A template that needs dbt (macros, adapter, packages) compiled by `dbt compile --inline`."""
        self.manifest()
        cache_file = self.dbt.private_dir / COMPILED
        key = hashlib.sha256((fingerprint(self.dbt, exclude=self._exclude()) + "\0" + template).encode()).hexdigest()
        try:
            cache = json.loads(cache_file.read_text(encoding="utf-8")) if cache_file.is_file() else {}
        except (OSError, ValueError):
            cache = {}
        if key in cache:
            return str(cache[key])
        try:
            out = self._run(["compile", "--inline", template, "--no-populate-cache", "--no-introspect",
                             "--quiet", "--output", "json"], what="compile --inline", timeout=600)
            compiled = json.loads(out[out.index("{"):])["compiled"]
        except WarehouseError as exc:
            raise RenderError(f"{where}: compiled through dbt, which failed: {exc.message}") from None
        except (ValueError, KeyError):
            raise RenderError(f"{where}: unexpected output from `dbt compile --inline`: {out[:300]}") from None
        if contains_secret(str(compiled)):     # the model is refused (render); and nothing written holds it
            return str(compiled)
        cache[key] = compiled
        cache_file.write_text(json.dumps(dict(list(cache.items())[-200:])), encoding="utf-8")
        return str(compiled)

    # ------------------------------------------------------------------ names

    def relation_for(self, table: str) -> str:
        manifest = self.manifest()
        node = manifest.ref(table)
        if node is None:
            from engine.yamlfile import did_you_mean

            raise RenderError(f"ref('{table}'): no dbt model, seed or snapshot named '{table}' in dbt project "
                              f"'{manifest.project_name}'{did_you_mean(table, manifest.names())}")
        if not node.relation_name:
            raise RenderError(f"ref('{table}'): dbt model '{table}' is {node.materialized or 'not materialized'}; "
                              "Reflow reads built relations: materialize it as a view or a table")
        return node.relation_name

    def source_for(self, schema: str, table: str) -> str:
        node = self.manifest().source(schema, table)
        if node is None or not node.relation_name:
            raise RenderError(f"source('{schema}', '{table}'): not declared in the dbt project's sources")
        return node.relation_name

    def render(self, project: Project, model: str) -> RenderedModel:
        """A model rendered on dbt's names and target; what needs dbt (macros) compiled by dbt."""
        return render_model(project, model, relation_for=self.relation_for, source_for=self.source_for,
                            target=self.target_context(), compile_inline=self.compile_inline)

    def target_context(self) -> dict[str, str]:
        """`target` in Reflow's own templates: the dbt target's name and adapter type."""
        return {"name": self.dbt.target, "type": self.manifest().adapter_type, "profile_name": self.dbt.profile}

    def reads(self, project: Project, spec: SyncSpec) -> list[Node]:
        """The dbt models, seeds, snapshots and sources a sync reads (from its rendered SQL)."""
        sql = self.render(project, spec.model).sql
        return self.manifest().relations_in(sql)

    def definition(self, project: Project, sync: SyncSpec) -> str:
        """A digest of the definition of what the sync reads, not of its data (Warehouse protocol).

        It covers every dbt node the sync's rendered SQL reads (a dbt model directly, or the refs of a
        Reflow model) and all their upstream nodes along depends_on.nodes: per node its unique_id,
        checksum, raw code, relation name and the config that changes its rows (RESULT_CONFIG); the
        macros they call (transitively); the values of the vars and env vars their code names. dbt's
        checksum is the file's text, so any edit counts, a comment too; a seed's checksum is its CSV.
        Compiled code is left out on purpose: the manifest holds it only after a `dbt build`, not
        after `dbt parse`, so it would differ with nothing changed.

        The manifest is re-parsed when the project files changed (manifest()), and again when a node's
        file no longer matches its checksum (an edit that kept the size and the modification time)."""
        nodes, macros = self._closure(project, sync)
        if self._stale(nodes.values()):
            self.manifest(reparse=True)
            nodes, macros = self._closure(project, sync)
        if not nodes:
            return ""
        texts = [n.raw_code for n in nodes.values() if n] + [m.sql for m in macros.values() if m]
        entries: dict[str, Any] = {
            "nodes": [[uid, None] if n is None else
                      [uid, n.resource_type, n.checksum, n.raw_code, n.relation_name, dict(n.settings)]
                      for uid, n in sorted(nodes.items())],
            "macros": [[uid, None if m is None else hashlib.sha256(m.sql.encode()).hexdigest()]
                       for uid, m in sorted(macros.items())],
            "vars": self._vars_named(texts),
        }
        entries["env"] = {name: os.environ.get(name)
                          for name in sorted({*_ENV_VAR.findall("\n".join(texts)),
                                              *_ENV_VAR.findall(json.dumps(entries["vars"], default=str))})}
        blob = json.dumps(entries, sort_keys=True, default=str, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _closure(self, project: Project, sync: SyncSpec) -> tuple[dict[str, Node | None], dict[str, Macro | None]]:
        manifest = self.manifest()
        nodes = manifest.upstream(n.unique_id for n in self.reads(project, sync))
        return nodes, manifest.macros_of(n for n in nodes.values() if n is not None)

    def _stale(self, nodes: Iterable[Node | None]) -> bool:
        """Does a file of this dbt project no longer hold what the manifest's checksum says?

        dbt's checksum is sha256 of the file's text, stripped (dbt.parser.read_files)."""
        project_name = self.manifest().project_name
        for node in nodes:
            if (node is None or node.package_name != project_name or not node.checksum.startswith("sha256:")
                    or Path(node.path).suffix not in (".sql", ".py", ".csv")):
                continue
            try:
                text = (self.dbt.root / node.path).read_bytes().decode("utf-8").strip()
            except (OSError, UnicodeDecodeError):
                return True
            if "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest() != node.checksum:
                return True
        return False

    def _vars_named(self, texts: Sequence[str]) -> dict[str, Any]:
        """The dbt_project.yml vars that the code names with var('...') (all of them if a name is not
        a literal): global values and package-scoped ones."""
        joined = "\n".join(texts)
        names = set(_VAR.findall(joined))
        dynamic = _VAR_DYNAMIC.search(joined) is not None
        if not names and not dynamic:
            return {}
        try:
            data = yaml.safe_load((self.dbt.root / "dbt_project.yml").read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return {"unreadable dbt_project.yml": True}
        declared = data.get("vars") if isinstance(data, dict) else None
        if not isinstance(declared, dict):
            return {}
        if dynamic:
            return declared
        found: dict[str, Any] = {}
        for name in sorted(names):
            found[name] = [declared.get(name), {scope: value[name] for scope, value in sorted(declared.items())
                                                if isinstance(value, dict) and name in value}]
        return found

    def downstream_of(self, model: str) -> set[str] | None:
        """unique_ids of a dbt model and everything built from it; None if there is no such model."""
        manifest = self.manifest()
        node = manifest.ref(model)
        return None if node is None else manifest.downstream([node.unique_id])

    # ------------------------------------------------------------------ profile / adapter (in-process dbt)

    def _runtime_config(self) -> Any:
        if self._config is not None:
            return self._config
        from argparse import Namespace

        try:
            from dbt.config.runtime import RuntimeConfig  # noqa: TID251 - the one dbt owner
            from dbt.flags import set_from_args  # noqa: TID251
            from dbt_common.context import set_invocation_context
        except ImportError:
            raise ProjectError(INSTALL_HINT) from None
        set_invocation_context(os.environ)      # without it env_var() in profiles.yml stays unrendered
        args = Namespace(project_dir=str(self.dbt.root), profiles_dir=str(self.dbt.profiles_dir),
                         target=self.dbt.target, profile=None, threads=None, vars={})
        try:
            set_from_args(args, {})
            self._config = RuntimeConfig.from_args(args)
        except Exception as exc:  # dbt's profile/project errors; their text never holds the password
            first = str(exc).strip().splitlines()
            raise WarehouseError(scrub(f"dbt profile '{self.dbt.profile}' target '{self.dbt.target}' "
                                       f"({self.dbt.profiles_dir}): {' '.join(first[:4])}")) from None
        return self._config

    @property
    def adapter_type(self) -> str:
        return str(self._runtime_config().credentials.type)

    def _duckdb_files(self) -> list[tuple[str, Path]]:
        creds = self._runtime_config().credentials
        files = []
        for alias, path in [(creds.database, creds.path),
                            *[(a.alias or Path(a.path).stem, a.path) for a in (getattr(creds, "attach", None) or [])]]:
            if not path or path == ":memory:" or ":" in str(path).split("/")[0]:
                if alias == creds.database:
                    raise WarehouseError(f"dbt target '{self.dbt.target}' uses DuckDB path '{path}'; "
                                         "Reflow reads a DuckDB file (set path: to a file in profiles.yml)")
                continue
            file = Path(str(path)).expanduser()
            files.append((str(alias), file if file.is_absolute() else self.dbt.root / file))
        return files

    def _pg_handle(self) -> Any:
        if self._handle is not None:
            return self._handle
        try:
            from dbt.adapters.factory import get_adapter, register_adapter, reset_adapters  # noqa: TID251
            from dbt.mp_context import get_mp_context  # noqa: TID251
            from dbt_common.events.base_types import EventLevel
        except ImportError:
            raise ProjectError(INSTALL_HINT) from None
        config = self._runtime_config()
        try:
            reset_adapters()
            register_adapter(config, get_mp_context(), adapter_registered_log_level=EventLevel.DEBUG)
            self._adapter = get_adapter(config)
            self._handle = self._adapter.acquire_connection("reflow").handle
        except Exception as exc:  # connection refused, auth, missing adapter plugin
            self._adapter = None
            first = str(exc).strip().splitlines()
            raise WarehouseError(scrub(f"cannot connect to dbt target '{self.dbt.target}': "
                                       f"{' '.join(first[:3])}")) from None
        return self._handle

    # ------------------------------------------------------------------ Warehouse protocol

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        if self.adapter_type != "duckdb":
            return
        attached = {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
        for alias, file in self._duckdb_files():
            if alias in attached:
                continue
            if not file.exists():
                raise WarehouseError(f"the DuckDB file of dbt target '{self.dbt.target}' ({file}) does not exist; "
                                     "build the dbt project first (`dbt build`, or pass --dbt-build)")
            attach_read_only(con, file, alias, what=str(file), hint="is dbt writing to it right now?")

    def relation(self, con: duckdb.DuckDBPyConnection, sql: str, *, model: str) -> str:
        built = [n for n in self.manifest().relations_in(sql) if n.resource_type in REFABLE]
        if self.adapter_type == "duckdb":
            self.attach(con)
            self._check_built(built, self._duckdb_exists(con))
            check_model_sql(con, sql, model=model)     # it runs next to Reflow's state: one read-only query
            return f"(\n{sql}\n)"
        if self.adapter_type != "postgres":
            raise WarehouseError(f"dbt adapter '{self.adapter_type}' is not supported yet "
                                 "(supported: duckdb, postgres)")
        handle = self._pg_handle()
        self._check_built(built, self._postgres_exists(handle))
        land(con, handle, sql, model=model, target=self.dbt.target, meter=self.cost.add)
        return LANDED

    @property
    def in_process(self) -> bool:
        return self.adapter_type == "duckdb"

    @property
    def dialect(self) -> Dialect | None:
        if self.adapter_type == "duckdb":
            return None
        if self.adapter_type == "postgres" and self._pg_version() < 110000:
            return None        # no hashtextextended before PostgreSQL 11: the diff runs locally, with a note
        return dialect_for(self.adapter_type)

    @property
    def mirror_writable(self) -> bool:
        # the mirror's checksum is a stored generated column: PostgreSQL 12 or later
        return self.adapter_type == "postgres" and self._pg_version() >= 120000

    def _pg_version(self) -> int:
        """The PostgreSQL server's version number (150004 for 15.4), as the connection reports it."""
        return int(getattr(self._pg_handle(), "server_version", 0))

    def columns(self, con: duckdb.DuckDBPyConnection, sql: str, *, model: str) -> list[tuple[str, str]]:
        """The model's columns and the types they land as, from a LIMIT 0 query on PostgreSQL."""
        if self.adapter_type == "duckdb":
            return describe_in_process(con, self.relation(con, sql, model=model))
        handle = self._pg_ready(sql)
        import psycopg2

        cur = handle.cursor()
        try:
            cur.execute(f"SELECT * FROM (\n{sql.rstrip().rstrip(';')}\n) AS reflow_model LIMIT 0")
            return [(str(d.name), _landing_type(d.type_code)[0]) for d in cur.description]
        except psycopg2.Error as exc:
            raise _model_failed(exc, model, self.dbt.target) from None
        finally:
            cur.close()
            if not handle.autocommit:
                handle.rollback()

    def land_query(self, con: duckdb.DuckDBPyConnection, sql: str, table: str, *, model: str) -> int:
        if self.adapter_type == "duckdb":
            self.attach(con)
            return land_in_process(con, sql, table, self.cost)
        return land(con, self._pg_ready(sql), sql, model=model, target=self.dbt.target, table=table,
                    meter=self.cost.add)

    def write(self, steps: Sequence[tuple[str, Any]]) -> None:
        """Statements writing to PostgreSQL in one transaction: ("sql", (text, params)) or ("copy", (COPY
        … FROM STDIN text, a file of CSV)); committed at the end, rolled back on any error."""
        import psycopg2

        handle = self._pg_handle()
        cur = handle.cursor()
        try:
            for kind, (text, arg) in steps:
                if kind == "copy":
                    cur.copy_expert(text, arg)
                else:
                    cur.execute(text, arg)
            handle.commit()
        except psycopg2.Error as exc:
            handle.rollback()
            raise WarehouseError(scrub(f"cannot write Reflow's mirror on dbt target '{self.dbt.target}': "
                                       f"{_pg_first_line(exc)} (diff: warehouse needs "
                                       "CREATE and write access to warehouse.mirror_schema)")) from None
        finally:
            cur.close()

    def query(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A small read on PostgreSQL (the mirror's bookkeeping): its rows; an error is a WarehouseError."""
        import psycopg2

        handle = self._pg_handle()
        cur = handle.cursor()
        try:
            cur.execute(text, list(params))
            return list(cur.fetchall())
        except psycopg2.Error as exc:
            raise WarehouseError(scrub(f"dbt target '{self.dbt.target}': {_pg_first_line(exc)}")) from None
        finally:
            cur.close()
            if not handle.autocommit:
                handle.rollback()

    def _pg_ready(self, sql: str) -> Any:
        handle = self._pg_handle()
        built = [n for n in self.manifest().relations_in(sql) if n.resource_type in REFABLE]
        self._check_built(built, self._postgres_exists(handle))
        return handle

    def _check_built(self, nodes: Sequence[Node], exists: Callable[[Node], bool]) -> None:
        missing = [n for n in nodes if not exists(n)]
        if missing:
            names = " ".join(n.name for n in missing)
            raise WarehouseError(
                f"dbt {'model' if len(missing) == 1 else 'models'} {', '.join(repr(n.name) for n in missing)} "
                f"not built on target '{self.dbt.target}' ({', '.join(str(n.relation_name) for n in missing)}): "
                f"run `dbt build --select {names}` or pass `--dbt-build`")

    @staticmethod
    def _duckdb_exists(con: duckdb.DuckDBPyConnection) -> Callable[[Node], bool]:
        rows = con.execute("SELECT database_name, schema_name, table_name FROM duckdb_tables() UNION ALL "
                           "SELECT database_name, schema_name, view_name FROM duckdb_views()").fetchall()
        present = {tuple(str(x).lower() for x in r) for r in rows}
        return lambda n: (str(n.database).lower(), str(n.schema).lower(), str(n.alias).lower()) in present

    @staticmethod
    def _postgres_exists(handle: Any) -> Callable[[Node], bool]:
        def exists(node: Node) -> bool:
            cur = handle.cursor()
            try:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{quote(str(node.schema))}.{quote(str(node.alias))}"])
                row = cur.fetchone()
            finally:
                cur.close()
                if not handle.autocommit:
                    handle.rollback()
            return bool(row and row[0])

        return exists

    def close(self) -> None:
        if self._adapter is not None:
            try:
                self._adapter.release_connection()
                self._adapter.cleanup_connections()
            except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                pass
        self._adapter = self._handle = None


# ------------------------------------------------------------------ PostgreSQL → DuckDB landing

# PostgreSQL type OIDs -> (DuckDB type, converter for the Python value psycopg2 returns)
_FLOAT: Callable[[Any], Any] = float
_PG: dict[int, tuple[str, Callable[[Any], Any] | None]] = {
    16: ("BOOLEAN", None), 17: ("BLOB", bytes), 20: ("BIGINT", None), 21: ("SMALLINT", None),
    23: ("INTEGER", None), 26: ("BIGINT", None), 25: ("VARCHAR", None), 1042: ("VARCHAR", None),
    1043: ("VARCHAR", None), 19: ("VARCHAR", None), 18: ("VARCHAR", None),
    700: ("DOUBLE", _FLOAT), 701: ("DOUBLE", _FLOAT), 1700: ("DOUBLE", _FLOAT),
    1082: ("DATE", None), 1083: ("TIME", None), 1114: ("TIMESTAMP", None), 1184: ("TIMESTAMPTZ", None),
    1186: ("INTERVAL", None), 114: ("JSON", None), 3802: ("JSON", None), 2950: ("VARCHAR", str),
}
_PG_ARRAYS: dict[int, tuple[str, Callable[[Any], Any] | None]] = {
    1000: ("BOOLEAN", None), 1005: ("SMALLINT", None), 1007: ("INTEGER", None), 1016: ("BIGINT", None),
    1009: ("VARCHAR", None), 1015: ("VARCHAR", None), 1014: ("VARCHAR", None), 2951: ("VARCHAR", str),
    1021: ("DOUBLE", _FLOAT), 1022: ("DOUBLE", _FLOAT), 1231: ("DOUBLE", _FLOAT),
    1182: ("DATE", None), 1115: ("TIMESTAMP", None), 1185: ("TIMESTAMPTZ", None),
}
_JSON_ARRAYS = (199, 3807)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _landing_type(oid: int) -> tuple[str, str, Callable[[Any], Any] | None]:
    """(DuckDB column type, type the Python list binds as, per-value converter) for a PostgreSQL OID."""
    if oid in _PG:
        duck, conv = _PG[oid]
        return duck, ("VARCHAR" if duck == "JSON" else duck), conv
    if oid in _PG_ARRAYS:
        elem, conv = _PG_ARRAYS[oid]
        item = None if conv is None else (lambda v, c=conv: [None if x is None else c(x) for x in v])
        return f"{elem}[]", f"{elem}[]", item
    if oid in _JSON_ARRAYS:
        return "JSON", "VARCHAR", lambda v: json.dumps(v, default=str)
    return "VARCHAR", "VARCHAR", _text


def _column(values: Iterable[Any], conv: Callable[[Any], Any] | None) -> list[Any]:
    if conv is None:
        return list(values)
    return [None if v is None else conv(v) for v in values]


def land(con: duckdb.DuckDBPyConnection, handle: Any, sql: str, *, model: str, target: str,
         batch: int = BATCH, table: str = LANDED, meter: Meter | None = None) -> int:
    """Land the result of `sql` on PostgreSQL in `table`; returns the row count. `meter` counts the rows
    and bytes that crossed the wire.

    Through COPY (engine/warehouse/pg_copy.py: the server's CSV read by DuckDB as it streams), or,
    for a result with a type only psycopg2 can render (pg_copy.plan is None) or a row longer than
    DuckDB's CSV buffer, row batches through a named cursor (land_rows). Memory stays flat either way."""
    import psycopg2
    import psycopg2.extensions as ext

    sql = sql.rstrip().rstrip(";")
    casts = ext.string_types
    try:
        cur = handle.cursor()
        try:
            cur.execute(f"SELECT * FROM (\n{sql}\n) AS reflow_model LIMIT 0")
            description = cur.description
        finally:
            cur.close()
        columns = pg_copy.plan(description, pg_types=_PG, pg_arrays=_PG_ARRAYS,
                               casters=lambda oid: oid in casts or oid in handle.string_types)
        if columns is not None and hasattr(os, "mkfifo"):      # no FIFOs on Windows: the row path
            return pg_copy.land(con, handle, sql, columns, table, meter)
    except pg_copy.RowTooLong:
        pass
    except psycopg2.Error as exc:
        raise _model_failed(exc, model, target) from None
    except duckdb.Error as exc:
        raise WarehouseError(scrub(f"model '{model}': cannot land its rows in DuckDB: "
                                   f"{str(exc).splitlines()[0]}")) from None
    finally:
        if not handle.autocommit:
            handle.rollback()
    return land_rows(con, handle, sql, model=model, target=target, batch=batch, table=table, meter=meter)


def _pg_first_line(exc: Any) -> str:
    """The first line of PostgreSQL's message for a psycopg2 error (its class name when there is none)."""
    text = (exc.pgerror or str(exc)).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _model_failed(exc: Any, model: str, target: str) -> WarehouseError:
    return WarehouseError(scrub(f"model '{model}' failed on dbt target '{target}': {_pg_first_line(exc)}"))


def land_rows(con: duckdb.DuckDBPyConnection, handle: Any, sql: str, *, model: str, target: str,
              batch: int = BATCH, table: str = LANDED, meter: Meter | None = None) -> int:
    """Stream `sql` from PostgreSQL through a named cursor into `table`; returns the row count (the
    bytes told to `meter` are the values' text lengths: psycopg2 does not say what crossed the wire).

    The fallback of land() for the types COPY cannot carry as psycopg2 renders them. Memory stays
    flat: `batch` rows at a time cross into DuckDB as one list per column."""
    import psycopg2
    import psycopg2.extensions as ext

    raw_json = ext.new_type((114, 3802), "REFLOW_RAW_JSON", lambda value, cur: value)
    cur = handle.cursor(name=f"reflow_{os.getpid()}_{id(con)}", withhold=bool(handle.autocommit))
    cur.itersize = batch
    ext.register_type(raw_json, cur)
    count = 0
    try:
        cur.execute(sql)
        rows = cur.fetchmany(batch)
        columns = [(d.name, *_landing_type(d.type_code)) for d in cur.description]
        con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(f"CREATE TABLE {table} ("
                    + ", ".join(f"{quote(name)} {duck}" for name, duck, _, _ in columns) + ")")
        select = ", ".join(
            f"unnest(?::{bind}[])" + ("::JSON" if duck == "JSON" else "") for _, duck, bind, _ in columns)
        while rows:
            values = [_column(col, conv) for col, (_, _, _, conv) in zip(zip(*rows, strict=True), columns, strict=True)]
            con.execute(f"INSERT INTO {table} SELECT {select}", values)
            count += len(rows)
            if meter is not None:
                meter(len(rows), sum(len(str(v)) for row in rows for v in row if v is not None))
            rows = cur.fetchmany(batch)
    except psycopg2.Error as exc:
        raise _model_failed(exc, model, target) from None
    except duckdb.Error as exc:
        raise WarehouseError(f"model '{model}': cannot land its rows in DuckDB: {str(exc).splitlines()[0]}") from None
    finally:
        try:
            cur.close()
        except psycopg2.Error:
            pass
        if not handle.autocommit:
            handle.rollback()
    return count


def dbt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbt-core")
    except PackageNotFoundError:
        return ""
