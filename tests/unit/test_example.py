"""The example project: its warehouse is realistic and deterministic, the mutation changes it a
little (and within the syncs' guards), and every model runs against it."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import duckdb
import jinja2
import jsonschema
import pytest
import yaml

from engine import example
from engine.errors import WarehouseError
from engine.specs import OBJECTS

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("customers", "products", "orders", "order_items", "gdpr_requests")
MODELS = sorted(p.stem for p in (ROOT / "models").glob("*.sql"))
SYNCS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "syncs").glob("*.yml"))}
ISO_COUNTRIES = {"US", "GB", "CA", "DE", "FR", "ES", "MX", "BR", "JP", "AU", "IT", "NL", "IE", "PT", "SE"}
ISO_LANGUAGES = {"en", "de", "fr", "es", "pt", "ja", "it", "nl", "sv"}
KEYS = (("customers", "customer_id"), ("products", "product_id"), ("orders", "order_id"))
BRAZE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def checksums(path: Path) -> dict[str, tuple[int, int]]:
    """Row count and an order-independent hash of every table's full contents."""
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*), sum(hash(t::VARCHAR)) FROM {t} AS t").fetchone()  # type: ignore[misc]
                for t in TABLES}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("wh") / "warehouse.duckdb"
    return path, example.build_warehouse(path)


@pytest.fixture(scope="module")
def mutated(built: tuple[Path, dict[str, int]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built warehouse after one mutation (step 1)."""
    path = Path(shutil.copy(built[0], tmp_path_factory.mktemp("mutated") / "warehouse.duckdb"))
    example.mutate_warehouse(path)
    return path


@pytest.fixture()
def warehouse(built: tuple[Path, dict[str, int]], tmp_path: Path) -> Path:
    """A private copy of the built warehouse, for tests that change it."""
    return Path(shutil.copy(built[0], tmp_path / "warehouse.duckdb"))


def query(path: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


# -- rendering: the engine's renderer when it exists, else a minimal stand-in with ref/var/config

def _standin_renderer() -> Callable[[str], str]:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "models"), undefined=jinja2.StrictUndefined)
    project_vars = yaml.safe_load((ROOT / "reflow_project.yml").read_text()).get("vars", {})

    def ref(name: str) -> str:
        return f"({render(name)})" if name in MODELS else f'main."{name}"'

    def render(name: str) -> str:
        return env.get_template(f"{name}.sql").render(
            ref=ref, var=lambda k, default=None: project_vars.get(k, default), config=lambda **_: "")

    return render


@functools.cache
def _renderer() -> Callable[[str], str]:
    render = importlib.import_module("engine.models") if importlib.util.find_spec("engine.models") else None
    project = importlib.import_module("engine.project")
    if render is None or not hasattr(render, "render_model") or not hasattr(project, "load_project"):
        return _standin_renderer()
    loaded = project.load_project(ROOT)
    return lambda name: str(render.render_model(loaded, name).sql)


def render_sql(name: str) -> str:
    return _renderer()(name)


def model_result(path: Path, name: str) -> tuple[list[str], list[str], list[tuple]]:
    """Column names, DuckDB types and rows of a model run against the warehouse at `path`."""
    with duckdb.connect(str(path), read_only=True) as con:
        rel = con.sql(render_sql(name))
        return rel.columns, [str(t) for t in rel.types], rel.fetchall()


# -- build

def test_build_returns_the_row_count_of_every_table(built: tuple[Path, dict[str, int]]) -> None:
    path, counts = built
    assert counts == {t: c for t, (c, _) in checksums(path).items()}
    assert counts["customers"] == 2000 and counts["products"] == 100 and counts["gdpr_requests"] == 5
    assert 13_000 <= counts["orders"] <= 17_000
    assert counts["orders"] < counts["order_items"] <= 4 * counts["orders"]


def test_same_seed_gives_identical_data_and_another_seed_does_not(
        built: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    again = tmp_path / "again.duckdb"
    example.build_warehouse(again)
    assert checksums(again) == checksums(built[0])
    small, other = tmp_path / "small.duckdb", tmp_path / "other.duckdb"
    example.build_warehouse(small, customers=100)
    example.build_warehouse(other, customers=100, seed=43)
    assert checksums(small)["customers"] != checksums(other)["customers"]


def test_a_failed_build_leaves_the_old_warehouse_alone(built: tuple[Path, dict[str, int]], warehouse: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, object]]) -> None:
        if table == "orders":
            raise duckdb.IOException("disk full")
        insert(con, table, rows)

    insert = example._insert
    monkeypatch.setattr(example, "_insert", fail)
    with pytest.raises(WarehouseError, match="could not build the example warehouse.*disk full"):
        example.build_warehouse(warehouse, customers=10)
    assert checksums(warehouse) == checksums(built[0])
    assert sorted(p.name for p in warehouse.parent.iterdir()) == ["warehouse.duckdb"]


def test_build_replaces_an_old_warehouse_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    path.write_text("not a database")
    (tmp_path / "warehouse.duckdb.wal").write_text("stale")
    assert example.build_warehouse(path, customers=50)["customers"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warehouse.duckdb"]


def test_customers_carry_values_braze_accepts(built: tuple[Path, dict[str, int]]) -> None:
    rows = query(built[0], "SELECT customer_id, email, phone, country, language, gender, dob, loyalty_tier, "
                           "preferences FROM customers")
    assert len({r[1] for r in rows}) == len(rows), "emails are unique"
    for cid, email, phone, country, language, gender, dob, tier, prefs in rows:
        assert re.fullmatch(r"c_\d{5}", cid)
        assert re.fullmatch(r"[a-z0-9.+]+@example\.(com|net|org)", email), email
        assert phone is None or re.fullmatch(r"\+[1-9]\d{6,14}", phone), phone
        assert country in ISO_COUNTRIES and language in ISO_LANGUAGES
        assert gender in {"M", "F", "O", "N", "P"} and tier in {"bronze", "silver", "gold", "platinum"}
        assert 1950 <= dob.year <= 2010
        assert set(prefs) == {"channel", "categories", "push"} and len(prefs["categories"]) <= 3
    assert 0 < sum(r[2] is None for r in rows) < len(rows) / 4, "some customers have no phone"


def test_products_have_catalog_safe_ids(built: tuple[Path, dict[str, int]]) -> None:
    for product_id, price, currency, tags in query(built[0], "SELECT product_id, price, currency, tags FROM products"):
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,250}", product_id)
        assert price > 0 and currency == "USD" and len(tags) <= 25


def test_orders_add_up_and_belong_to_known_customers(built: tuple[Path, dict[str, int]]) -> None:
    path = built[0]
    assert query(path, """
        SELECT count(*) FROM orders o
        JOIN (SELECT order_id, sum(quantity * unit_price) AS total FROM order_items GROUP BY 1) i USING (order_id)
        WHERE i.total <> o.total""") == [(0,)]
    assert query(path, "SELECT count(*) FROM orders WHERE customer_id NOT IN (SELECT customer_id FROM customers)"
                       " OR ordered_at >= TIMESTAMP '2026-01-01'") == [(0,)]
    assert query(path, "SELECT min(quantity), max(quantity), count(DISTINCT order_id) FROM order_items") == [
        (1, 5, built[1]["orders"])]


def test_gdpr_requests_name_customers_marked_deleted(built: tuple[Path, dict[str, int]]) -> None:
    assert query(built[0], "SELECT bool_and(c.deleted), count(*) FROM gdpr_requests JOIN customers c USING (customer_id)"
                 ) == [(True, 5)]


# -- mutate

def test_mutation_changes_a_little_of_everything(built: tuple[Path, dict[str, int]], warehouse: Path) -> None:
    counts = built[1]
    summary = example.mutate_warehouse(warehouse)
    assert summary == {"changed_customers": 60, "removed_customers": 20, "new_customers": 10,
                       "new_gdpr_requests": 2, "new_orders": summary["new_orders"],
                       "new_order_items": summary["new_order_items"], "repriced_products": 2,
                       "removed_products": 1, "new_products": 1}
    assert summary["new_orders"] == 10 + round(counts["orders"] * 0.02)
    after = {t: c for t, (c, _) in checksums(warehouse).items()}
    assert after == {"customers": 2000 - 20 + 10, "products": 100, "gdpr_requests": 5 + 2,
                     "orders": counts["orders"] + summary["new_orders"],
                     "order_items": counts["order_items"] + summary["new_order_items"]}
    # every changed customer really differs from before, in one or two of the fields it may edit
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"ATTACH '{built[0]}' AS before (READ_ONLY)")
        diffs = con.execute("""
            SELECT (a.loyalty_tier <> b.loyalty_tier)::int + (a.email <> b.email)::int
                   + (a.preferences <> b.preferences)::int + (a.newsletter_opt_in <> b.newsletter_opt_in)::int
            FROM customers a JOIN before.customers b USING (customer_id) WHERE a.updated_at > b.updated_at
              AND NOT a.deleted""").fetchall()
    assert len(diffs) == 60 and all(1 <= d <= 2 for (d,) in diffs)


def test_mutation_is_deterministic_and_each_step_differs(built: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    paths = [Path(shutil.copy(built[0], tmp_path / f"w{i}.duckdb")) for i in range(3)]
    example.mutate_warehouse(paths[0], step=1)
    example.mutate_warehouse(paths[1], step=1)
    example.mutate_warehouse(paths[2], step=2)
    assert checksums(paths[0]) == checksums(paths[1])
    assert checksums(paths[0])["customers"] != checksums(paths[2])["customers"]


def test_repeated_mutations_never_reuse_an_id(warehouse: Path) -> None:
    current = {t: {r[0] for r in query(warehouse, f"SELECT {k} FROM {t}")} for t, k in KEYS}
    ever = {t: set(ids) for t, ids in current.items()}
    ever["customers"] |= {r[0] for r in query(warehouse, "SELECT customer_id FROM orders")}
    for step in (1, 2, 3):
        example.mutate_warehouse(warehouse, step=step)
        for table, key in KEYS:
            ids = [r[0] for r in query(warehouse, f"SELECT {key} FROM {table}")]
            assert len(set(ids)) == len(ids)
            arrived = set(ids) - current[table]
            assert arrived and not arrived & ever[table], f"{table}: a new row reuses an old id"
            current[table] = set(ids)
            ever[table] |= arrived
    assert query(warehouse, "SELECT max(ordered_at) FROM orders")[0][0] < datetime(2026, 1, 5)


def test_mutating_a_missing_warehouse_says_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="build it first"):
        example.mutate_warehouse(tmp_path / "nope.duckdb")


def test_cli_builds_and_mutates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.duckdb"
    assert example.main(["build", "--path", str(path), "--customers", "200"]) == 0
    assert example.main(["mutate", "--path", str(path), "--step", "2"]) == 0
    assert example.main(["mutate", "--path", str(tmp_path / "missing.duckdb")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"build {path}: customers=200, products=100, orders=")
    assert lines[1].startswith(f"mutate {path}: changed_customers=6, removed_customers=2, new_customers=1,")
    assert lines[2].startswith("error: no warehouse at")


# -- models and syncs

def test_there_is_one_sync_per_braze_object() -> None:
    assert sorted(s["destination"]["object"] for s in SYNCS.values()) == sorted(OBJECTS)
    schema = ROOT / "schemas" / "sync.schema.json"
    validator = jsonschema.Draft202012Validator(yaml.safe_load(schema.read_text()))
    for name, spec in SYNCS.items():
        assert (ROOT / "syncs" / f"{name}.yml").read_text().startswith(
            "# yaml-language-server: $schema=../schemas/sync.schema.json\n")
        assert [e.message for e in validator.iter_errors(spec)] == [], name
        assert spec["model"] in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_model_runs_and_uses_braze_safe_column_names(built: tuple[Path, dict[str, int]], name: str) -> None:
    columns, _, rows = model_result(built[0], name)
    assert rows, f"{name} returns rows"
    assert all(BRAZE_NAME.fullmatch(c) for c in columns), columns


def _columns_used(spec: dict) -> set[str]:
    dest = spec["destination"]
    used = {spec["primary_key"], *dest.get("fields", {}).values(), *dest.get("identifier", {}).values()}
    for nested in ("event", "purchase"):
        part = dict(dest.get(nested, {}))
        used |= set(part.pop("properties", {}).values()) | {v for k, v in part.items() if k != "name"}
    return used | {dest[k] for k in ("item_id", "state") if k in dest}


@pytest.mark.parametrize("sync", sorted(SYNCS))
def test_sync_columns_exist_and_keys_are_unique(built: tuple[Path, dict[str, int]], sync: str) -> None:
    spec = SYNCS[sync]
    columns, types, rows = model_result(built[0], spec["model"])
    assert _columns_used(spec) <= set(columns)
    keys = [r[columns.index(spec["primary_key"])] for r in rows]
    assert None not in keys and len(set(keys)) == len(keys)
    numeric = {c: t for c, t in zip(columns, types, strict=True)
               if c in {"lifetime_value", "total", "price"}}
    assert all(t == "DOUBLE" for t in numeric.values()), numeric


def test_braze_users_values(built: tuple[Path, dict[str, int]]) -> None:
    columns, types, rows = model_result(built[0], "braze_users")
    users = [dict(zip(columns, r, strict=True)) for r in rows]
    by_type = dict(zip(columns, types, strict=True))
    assert by_type["preferences"].startswith("STRUCT(") and by_type["favourite_categories"] == "VARCHAR[]"
    assert {u["email_subscribe"] for u in users} == {"opted_in", "subscribed", "unsubscribed"}
    assert all(u["orders_count"] >= 1 for u in users), "min_orders is 1"
    gone = {r[0] for r in query(built[0], "SELECT customer_id FROM customers WHERE deleted")}
    assert not gone & {u["customer_id"] for u in users}
    assert 1800 < len(users) < 2000
    assert all(len(u["favourite_categories"] or []) <= 3 for u in users)


def _diff(before: Path, after: Path, spec: dict) -> tuple[int, int, int, int]:
    """(old rows, added, changed, removed) of a sync's model between two warehouses."""
    key = spec["primary_key"]
    old = {r[0]: r for r in _keyed(before, spec["model"], key)}
    new = {r[0]: r for r in _keyed(after, spec["model"], key)}
    changed = sum(1 for k in old.keys() & new.keys() if old[k] != new[k])
    return len(old), len(new.keys() - old.keys()), changed, len(old.keys() - new.keys())


def _keyed(path: Path, model: str, key: str) -> list[tuple]:
    columns, _, rows = model_result(path, model)
    i = columns.index(key)
    return [(r[i], *map(str, r)) for r in rows]


@pytest.mark.parametrize("sync", sorted(SYNCS))
def test_one_mutation_passes_the_sync_guards_and_changes_something(
        built: tuple[Path, dict[str, int]], mutated: Path, sync: str) -> None:
    spec = SYNCS[sync]
    old, added, changed, removed = _diff(built[0], mutated, spec)
    assert added + changed + removed > 0
    guards = spec.get("guards", {})
    assert added <= guards.get("max_added", added)
    assert changed <= guards.get("max_changed", changed)
    assert removed <= guards.get("max_removed", removed)
    assert 100 * changed / old <= guards.get("max_changed_pct", 100)
    assert 100 * removed / old <= guards.get("max_removed_pct", 100)
