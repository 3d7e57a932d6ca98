"""`reflow init`: a small project that validates, plans and applies as it stands."""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import UserError
from engine.project import PROJECT_FILE
from engine.yamlfile import schema_path

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

SCHEMAS = ("project.schema.json", "sync.schema.json")
PROJECT_TEMPLATE = """\
# yaml-language-server: $schema=schemas/project.schema.json
# Reflow project: every key is described in schemas/project.schema.json, a copy of this Reflow
# version's (`reflow init --schemas` refreshes the copies after an upgrade)
name: {name}
warehouse:
  type: duckdb                 # or: {{type: dbt, project_dir: ., target: dev}}
  path: warehouse.duckdb
state_path: .reflow/state.duckdb
vars:
  min_orders: 1
connections:
  braze:
    type: braze
    endpoint: "{{{{ env_var('BRAZE_REST_ENDPOINT', 'https://rest.iad-01.braze.com') }}}}"
    api_key: "{{{{ env_var('BRAZE_API_KEY') }}}}"   # keep the key out of this file
"""

MODEL = """\
-- A model is a SELECT. This one lists its rows inline so the project works before you
-- connect a warehouse; replace the VALUES list with e.g. `from {{ ref('customers') }}`.
select
    cast(customer_id as varchar) as customer_id,
    email,
    first_name,
    lifetime_value
from (values
    (1, 'ada@example.com', 'Ada', 120.50, 3),
    (2, 'grace@example.com', 'Grace', 80.00, 1),
    (3, 'linus@example.com', 'Linus', 0.00, 0)
) as customers(customer_id, email, first_name, lifetime_value, orders)
where orders >= {{ var('min_orders') }}
"""

SYNC_TEMPLATE = """\
# yaml-language-server: $schema=../schemas/sync.schema.json
description: Customers with at least one order, as Braze users
model: braze_users                 # models/braze_users.sql
primary_key: customer_id
destination:
  connection: braze                # reflow_project.yml connections
  object: users
  mode: upsert
  identifier:
    external_id: customer_id
  fields:                          # Braze attribute: model column
    email: email
    first_name: first_name
    lifetime_value: lifetime_value
  on_removed: ignore
guards:
  max_removed: 100
  max_changed_pct: 50
first_run: send_all
"""

GITIGNORE = """\
.reflow/
*.duckdb
*.duckdb.wal
"""


def _default_name(target: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", target.resolve().name).strip("._-") or "reflow_project"
    return name if _NAME.match(name) else f"p_{name}"


def init_project(target: Path, name: str | None = None) -> list[Path]:
    """Write a working minimal project into `target`; returns the files created.

    Refuses (UserError) if any of those files already exists, before writing anything."""
    target = Path(target).expanduser()
    name = name if name is not None else _default_name(target)
    if not _NAME.match(name):
        raise UserError(
            f"project name {name!r} is not valid: use letters, digits, '_', '.' and '-', "
            "starting with a letter, digit or '_'"
        )
    files = {
        target / PROJECT_FILE: PROJECT_TEMPLATE.format(name=name),
        target / "models" / "braze_users.sql": MODEL,
        target / "syncs" / "braze_users.yml": SYNC_TEMPLATE,
        target / ".gitignore": GITIGNORE,
        **{target / "schemas" / name: schema_path(name).read_text(encoding="utf-8") for name in SCHEMAS},
    }
    warehouse = target / "warehouse.duckdb"
    existing = [p for p in (*files, warehouse) if p.exists()]
    if existing:
        listed = ", ".join(str(p) for p in existing)
        raise UserError(f"refusing to overwrite existing files: {listed}")
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a folder")
    created: list[Path] = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as fh:
            fh.write(text)
        created.append(path)
    created.append(_empty_warehouse(warehouse))
    return created


def write_schemas(target: Path) -> list[Path]:
    """Copy this Reflow version's JSON Schemas into `<target>/schemas/`, the relative path the project's
    files name (so the reference holds on any machine the project is checked out on)."""
    target = Path(target).expanduser()
    if not (target / PROJECT_FILE).exists():
        raise UserError(f"{target} has no {PROJECT_FILE}: run `reflow init` there first")
    written = []
    for name in SCHEMAS:
        path = target / "schemas" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(schema_path(name).read_text(encoding="utf-8"), encoding="utf-8")
        written.append(path)
    return written


def _empty_warehouse(path: Path) -> Path:
    """An empty DuckDB file, so the warehouse exists before you add tables to it."""
    import duckdb

    duckdb.connect(str(path)).close()
    return path
