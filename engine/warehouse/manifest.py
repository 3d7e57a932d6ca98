"""dbt's manifest.json read as plain JSON (schema v12 for dbt-core 1.8–1.12): no dbt import.

Besides names and relations it keeps what defines each node's result (checksum, raw code, the
config that changes the rows, upstream nodes and macros), so a sync's definition can be
fingerprinted without dbt (see DbtWarehouse.definition)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import WarehouseError

REFABLE = ("model", "seed", "snapshot")
# config keys that change what a node's relation holds (relation names cover alias/schema/database);
# docs, tags, meta, grants, persist_docs and the like do not
RESULT_CONFIG = ("enabled", "materialized", "unique_key", "incremental_strategy", "incremental_predicates",
                 "full_refresh", "on_schema_change", "pre-hook", "post-hook", "sql_header", "event_time",
                 "batch_size", "begin", "lookback", "column_types", "quote_columns", "delimiter", "strategy",
                 "updated_at", "check_cols", "hard_deletes", "invalidate_hard_deletes", "dbt_valid_to_current",
                 "snapshot_meta_column_names", "target_schema", "target_database")


@dataclass(frozen=True)
class Node:
    unique_id: str
    name: str
    resource_type: str
    package_name: str
    database: str | None
    schema: str | None
    alias: str | None
    relation_name: str | None          # already quoted; None for ephemeral models
    materialized: str | None
    path: str                          # original_file_path, relative to the dbt project
    meta: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    source_name: str | None = None     # sources only
    checksum: str = ""                 # "sha256:<hex>" of the file's stripped text ("path:..." for big seeds)
    raw_code: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)   # RESULT_CONFIG keys that are set
    depends_on: tuple[str, ...] = ()   # unique_ids of the nodes and sources it reads
    macros: tuple[str, ...] = ()       # unique_ids of the macros it calls


@dataclass(frozen=True)
class Macro:
    unique_id: str
    sql: str
    macros: tuple[str, ...] = ()       # the macros it calls


@dataclass(frozen=True)
class Manifest:
    project_name: str
    dbt_version: str
    adapter_type: str
    nodes: Mapping[str, Node]
    sources: Mapping[tuple[str, str], Node]
    child_map: Mapping[str, tuple[str, ...]]
    macros: Mapping[str, Macro] = field(default_factory=dict)

    def ref(self, name: str, package: str | None = None) -> Node | None:
        """What `ref(name)` / `ref(package, name)` points at: the root package's node first."""
        found = [n for n in self.nodes.values() if n.name == name and n.resource_type in REFABLE
                 and (package is None or n.package_name == package)]
        found.sort(key=lambda n: (n.package_name != self.project_name, REFABLE.index(n.resource_type)))
        return found[0] if found else None

    def source(self, source: str, table: str) -> Node | None:
        return self.sources.get((source, table))

    def names(self) -> list[str]:
        return sorted({n.name for n in self.nodes.values() if n.resource_type in REFABLE})

    def downstream(self, unique_ids: Iterable[str]) -> set[str]:
        """The given nodes and every node built from them (transitively)."""
        seen: set[str] = set()
        todo = list(unique_ids)
        while todo:
            uid = todo.pop()
            if uid in seen:
                continue
            seen.add(uid)
            todo += self.child_map.get(uid, ())
        return seen

    def upstream(self, unique_ids: Iterable[str]) -> dict[str, Node | None]:
        """The given nodes and every node and source they read (transitively, along depends_on.nodes),
        by unique_id; None for an id the manifest does not hold (a disabled node)."""
        sources = {n.unique_id: n for n in self.sources.values()}
        seen: dict[str, Node | None] = {}
        todo = list(unique_ids)
        while todo:
            uid = todo.pop()
            if uid in seen:
                continue
            node = self.nodes.get(uid) or sources.get(uid)
            seen[uid] = node
            if node is not None:
                todo += node.depends_on
        return seen

    def macros_of(self, nodes: Iterable[Node]) -> dict[str, Macro | None]:
        """The macros the nodes call, and the macros those call (transitively), by unique_id."""
        seen: dict[str, Macro | None] = {}
        todo = [m for n in nodes for m in n.macros]
        while todo:
            uid = todo.pop()
            if uid in seen:
                continue
            macro = self.macros.get(uid)
            seen[uid] = macro
            if macro is not None:
                todo += macro.macros
        return seen

    def relations_in(self, sql: str) -> list[Node]:
        """Models, seeds, snapshots and sources whose relation name appears in `sql`."""
        every = [*self.nodes.values(), *self.sources.values()]
        return [n for n in every if n.relation_name and n.relation_name in sql]


def _ids(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
    depends = raw.get("depends_on") or {}
    return tuple(str(x) for x in (depends.get(key) or ()) if x)


def _node(uid: str, raw: Mapping[str, Any]) -> Node:
    config = raw.get("config") or {}
    checksum = raw.get("checksum") or {}
    return Node(
        unique_id=uid, name=str(raw.get("name", "")), resource_type=str(raw.get("resource_type", "")),
        package_name=str(raw.get("package_name", "")), database=raw.get("database"), schema=raw.get("schema"),
        alias=raw.get("alias") or raw.get("identifier"), relation_name=raw.get("relation_name"),
        materialized=config.get("materialized"), path=str(raw.get("original_file_path", "")),
        meta=dict(config.get("meta") or raw.get("meta") or {}),
        tags=tuple(config.get("tags") or raw.get("tags") or ()), source_name=raw.get("source_name"),
        checksum=f"{checksum.get('name')}:{checksum.get('checksum')}" if checksum.get("checksum") else "",
        raw_code=str(raw.get("raw_code") or raw.get("raw_sql") or ""),
        settings={k: config[k] for k in RESULT_CONFIG if config.get(k) not in (None, "", [], {})},
        depends_on=_ids(raw, "nodes"), macros=_ids(raw, "macros"),
    )


def read_manifest(path: Path) -> Manifest:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise WarehouseError(f"cannot read dbt manifest {path}: {exc}") from None
    meta = data.get("metadata") or {}
    nodes = {uid: _node(uid, raw) for uid, raw in (data.get("nodes") or {}).items()}
    sources = {}
    for uid, raw in (data.get("sources") or {}).items():
        node = _node(uid, raw)
        sources[(str(raw.get("source_name", "")), node.name)] = node
    children = {uid: tuple(kids) for uid, kids in (data.get("child_map") or {}).items()}
    macros = {uid: Macro(uid, str(raw.get("macro_sql") or ""), _ids(raw, "macros"))
              for uid, raw in (data.get("macros") or {}).items()}
    return Manifest(project_name=str(meta.get("project_name", "")), dbt_version=str(meta.get("dbt_version", "")),
                    adapter_type=str(meta.get("adapter_type", "")), nodes=nodes, sources=sources,
                    child_map=children, macros=macros)
