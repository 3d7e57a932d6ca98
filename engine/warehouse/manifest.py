"""dbt's manifest.json read as plain JSON (schema v12 for dbt-core 1.8–1.12): no dbt import."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import WarehouseError

REFABLE = ("model", "seed", "snapshot")


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


@dataclass(frozen=True)
class Manifest:
    project_name: str
    dbt_version: str
    adapter_type: str
    nodes: Mapping[str, Node]
    sources: Mapping[tuple[str, str], Node]
    child_map: Mapping[str, tuple[str, ...]]

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

    def relations_in(self, sql: str) -> list[Node]:
        """Models, seeds, snapshots and sources whose relation name appears in `sql`."""
        every = [*self.nodes.values(), *self.sources.values()]
        return [n for n in every if n.relation_name and n.relation_name in sql]


def _node(uid: str, raw: Mapping[str, Any]) -> Node:
    config = raw.get("config") or {}
    return Node(
        unique_id=uid, name=str(raw.get("name", "")), resource_type=str(raw.get("resource_type", "")),
        package_name=str(raw.get("package_name", "")), database=raw.get("database"), schema=raw.get("schema"),
        alias=raw.get("alias") or raw.get("identifier"), relation_name=raw.get("relation_name"),
        materialized=config.get("materialized"), path=str(raw.get("original_file_path", "")),
        meta=dict(config.get("meta") or raw.get("meta") or {}),
        tags=tuple(config.get("tags") or raw.get("tags") or ()), source_name=raw.get("source_name"),
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
    return Manifest(project_name=str(meta.get("project_name", "")), dbt_version=str(meta.get("dbt_version", "")),
                    adapter_type=str(meta.get("adapter_type", "")), nodes=nodes, sources=sources,
                    child_map=children)
