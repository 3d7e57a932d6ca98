"""Which diff location a sync gets (engine/locations.py `choose`): what it asks, unless the warehouse
cannot, and then a note saying why."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.locations import choose
from engine.project import Project, WarehouseConfig
from engine.specs import DiffLocation, SyncSpec
from engine.state.store import HASH_RECIPE
from engine.warehouse.dialects import Postgres, Snowflake


def project(diff: str = "local") -> Project:
    return Project(root=Path("/p"), name="p", warehouse=WarehouseConfig(type="dbt", diff=diff),
                   state_path=Path("/p/.reflow/state.duckdb"))


def sync(diff: DiffLocation | None = None) -> SyncSpec:
    return SyncSpec(name="users", model="users", primary_key=("id",), destination=Any, diff=diff)  # type: ignore[arg-type]


def warehouse(*, in_process: bool = False, dialect: Any = None, writable: bool = False) -> Any:
    return SimpleNamespace(in_process=in_process, dialect=dialect, mirror_writable=writable)


PG = warehouse(dialect=Postgres(), writable=True)


def test_local_by_default_and_a_sync_overrides_the_project():
    assert choose(project(), sync(), PG, ["BIGINT"], preview=False).used == DiffLocation.LOCAL
    loc = choose(project("warehouse"), sync(DiffLocation.HASHES), PG, ["BIGINT"], preview=False)
    assert (loc.asked, loc.used, loc.recipe, loc.note) == (DiffLocation.HASHES, DiffLocation.HASHES,
                                                           "postgres-hte/v4", None)
    loc = choose(project("warehouse"), sync(), PG, ["VARCHAR"], preview=False)
    assert loc.used == DiffLocation.WAREHOUSE and loc.note is None


@pytest.mark.parametrize(("wh", "asked", "used", "says"), [
    (warehouse(in_process=True), "warehouse", "hashes", "no mirror to keep"),
    (warehouse(in_process=True), "hashes", "hashes", None),
    (warehouse(dialect=Snowflake()), "warehouse", "hashes", "PostgreSQL 12 or later only"),
    (warehouse(), "hashes", "local", "no hash SQL"),
])
def test_what_the_warehouse_cannot_do_falls_back_with_a_note(wh, asked, used, says):
    loc = choose(project(asked), sync(), wh, ["BIGINT"], preview=False)
    assert loc.used == DiffLocation(used)
    assert (loc.note is None) if says is None else (says in (loc.note or ""))
    if wh.in_process:
        assert loc.recipe == HASH_RECIPE       # DuckDB keeps the local recipe: switching re-hashes nothing


def test_keys_spelled_differently_diff_locally():
    loc = choose(project("hashes"), sync(), PG, ["DOUBLE"], preview=False)
    assert loc.used == DiffLocation.LOCAL and "DOUBLE" in (loc.note or "")


def test_a_read_only_plan_never_writes_the_mirror():
    loc = choose(project("warehouse"), sync(), PG, ["BIGINT"], preview=True)
    assert loc.used == DiffLocation.HASHES and "read-only" in (loc.note or "")
    assert dataclasses.replace(loc, note=None).recipe == "postgres-hte/v4"


def test_a_grouped_destination_keeps_its_counts_with_hashes():
    loc = choose(project("warehouse"), sync(), PG, ["BIGINT"], preview=False, grouped=True)
    assert loc.used == DiffLocation.HASHES and "per group" in (loc.note or "")


def test_long_sync_names_get_mirror_tables_of_their_own():
    """PostgreSQL cuts identifiers at 63 bytes: two long sync names sharing their first 60 characters would
    otherwise share one mirror table (correct, thanks to the mirror's row check, but rebuilt in turn)."""
    from engine.warehouse.mirror import table_name

    assert table_name("braze_users") == "reflow_mirror__braze_users"
    a, b = "customers." + "x" * 60 + ".a", "customers." + "x" * 60 + ".b"
    assert table_name(a) != table_name(b)
    assert all(len(table_name(n).encode()) <= 63 for n in (a, b))
    assert table_name(a) == table_name(a)                     # the same name every run
    exactly = "s" * (63 - len("reflow_mirror__"))
    assert table_name(exactly) == "reflow_mirror__" + exactly


def test_a_postgresql_before_12_keeps_no_mirror_and_runs_hashes(monkeypatch):
    """The mirror's checksum is a stored generated column (PostgreSQL 12+): an older server is asked for
    `diff: warehouse`, and gets `hashes` with a note instead of a failing CREATE TABLE."""
    from engine.warehouse.dbt import DbtWarehouse

    monkeypatch.setattr(DbtWarehouse, "adapter_type", property(lambda self: "postgres"))
    wh = object.__new__(DbtWarehouse)
    for version, used in ((110022, DiffLocation.HASHES), (120000, DiffLocation.WAREHOUSE),
                          (150004, DiffLocation.WAREHOUSE)):
        monkeypatch.setattr(DbtWarehouse, "_pg_handle", lambda self, v=version: SimpleNamespace(server_version=v))
        loc = choose(project("warehouse"), sync(), wh, ["VARCHAR"], preview=False)
        assert loc.used == used, version
        assert (loc.note is not None and "PostgreSQL 12 or later" in loc.note) == (used == DiffLocation.HASHES)
    # before 11 (no hashtextextended) neither hashes nor warehouse: the diff runs locally, with a note
    monkeypatch.setattr(DbtWarehouse, "_pg_handle", lambda self: SimpleNamespace(server_version=100023))
    for asked in ("hashes", "warehouse"):
        loc = choose(project(asked), sync(), wh, ["VARCHAR"], preview=False)
        assert loc.used == DiffLocation.LOCAL and loc.note and "diffing locally" in loc.note
