"""A sceptic's pass over `diff: hashes | warehouse` (#14) on a real PostgreSQL: values whose normal form
could drift, keys whose text could differ between the warehouse and Reflow, a mirror edited by hand,
locations switched with changes pending. Each test drives a small model of its own (a view over a
table the test writes) through the CLI against the Braze sandbox, and checks Braze and Reflow agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from dbtshop import ShopCli
from test_diff_locations import pg_rows

pytestmark = [pytest.mark.dbt, pytest.mark.e2e, pytest.mark.postgres]

SYNC = "sceptic"


def setup(shop: Path, pg: dict[str, str], ddl: str, rows_sql: str, fields: dict[str, str], *,
          location: str, key: str | list[str] = "id", identifier: str = "ext", extra: dict[str, Any] | None = None) -> None:
    """A table `sceptic_src` in the raw schema, a dbt view `sceptic_users` over it, and a users sync."""
    src = f'"{pg["raw"]}".sceptic_src'
    pg_rows(pg["dsn"], f"DROP TABLE IF EXISTS {src}; CREATE TABLE {src} ({ddl}); {rows_sql.format(src=src)}")
    (shop / "models" / "marts" / "sceptic_users.sql").write_text(
        "{{ config(materialized='view') }}\nselect * from \"{{ env_var('SHOP_RAW_SCHEMA') }}\".sceptic_src\n")
    spec: dict[str, Any] = {"name": SYNC, "model": "sceptic_users", "primary_key": key, "diff": location,
                            "destination": {"connection": "braze", "object": "users",
                                            "identifier": {"external_id": identifier}, "fields": fields}}
    spec["destination"].update(extra or {})
    (shop / "syncs" / f"{SYNC}.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    path = shop / "reflow_project.yml"
    data = yaml.safe_load(path.read_text())
    data["warehouse"]["mirror_schema"] = pg["schema"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def set_location(shop: Path, location: str) -> None:
    path = shop / "syncs" / f"{SYNC}.yml"
    spec = yaml.safe_load(path.read_text())
    spec["diff"] = location
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def src(pg: dict[str, str], sql: str) -> list[tuple[Any, ...]]:
    return pg_rows(pg["dsn"], sql.format(src=f'"{pg["raw"]}".sceptic_src'))


def plan(cli: ShopCli, *args: str) -> dict[str, Any]:
    code, out, err = cli("plan", "--json", "--select", SYNC, *args)
    assert code == 0, out + err
    return next(s for s in json.loads(out)["syncs"] if s["name"] == SYNC)


def run(cli: ShopCli, *args: str) -> str:
    code, out, err = cli("run", "--select", SYNC, *args)
    assert code in (0, 3), out + err          # 3: sent, some fields left out (NaN)
    return out + err


def quiet(p: dict[str, Any]) -> None:
    assert (p["added"], p["changed"], p["removed"], p["to_send"]) == (0, 0, 0, 0), json.dumps(p, indent=1)


def alter(pg: dict[str, str], sql: str) -> None:
    """ALTER the source table (the view over it is dropped; the next `--dbt-build` recreates it)."""
    pg_rows(pg["dsn"], f'DROP VIEW "{pg["schema"]}".sceptic_users')
    src(pg, sql)


def calls(sandbox: Any) -> int:
    return int(sandbox.stats()["requests_total"])


def attrs(sandbox: Any, ext: str) -> dict[str, Any]:
    user = sandbox.user(ext)
    assert user is not None, ext
    return dict(user["custom_attributes"])


# ---------------------------------------------------------------- values whose normal form could drift

NASTY_DDL = ("id int PRIMARY KEY, ext text, ts timestamptz, tsl timestamp, d float8, n numeric, "
             "j jsonb, t text, a text[]")
NASTY_ROWS = """INSERT INTO {src} VALUES
 (1, 'u1', '2024-01-02 03:04:05.123456+02', '2024-01-02 03:04:05.999999', 'NaN', 1.50, '{{"b": 1, "a": [1, 2]}}', 'a|b', ARRAY['x', NULL]),
 (2, 'u2', '2024-06-30 23:59:59.9995+00', '2024-01-01', '-0', 10.000, '{{"a": {{"y": 1, "x": 2}}}}', 'a:1-', ARRAY[]::text[]),
 (3, 'u3', NULL, NULL, 'Infinity', 0, 'null', '', NULL),
 (4, 'u4', '1999-12-31 23:59:59.999+00', '1970-01-01', '-Infinity', -0.0, '[]', NULL, ARRAY[NULL]::text[]),
 (5, 'u5', '2024-03-31 02:30:00+00', '2024-03-31 02:30:00', 1e-300, 12345678901234567890.123, '"str"', 'ünïcødé 😀 |:-', ARRAY['|', ':', '-'])"""
NASTY_FIELDS = {"ts": "ts", "tsl": "tsl", "d": "d", "n": "n", "j": "j", "t": "t", "a": "a"}


@pytest.mark.parametrize("location", ["hashes", "warehouse"])
def test_nasty_values_plan_nothing_on_a_second_run_whatever_the_session(pg_shop, pg, braze_env, capsys,
                                                                        monkeypatch, location):
    setup(pg_shop, pg, NASTY_DDL, NASTY_ROWS, NASTY_FIELDS, location=location)
    cli = ShopCli(pg_shop, capsys, target="pg")
    first = plan(cli, "--dbt-build")
    assert first["added"] == 5, first
    run(cli)
    quiet(plan(cli))
    # a session in another time zone and date style: the same instants, the same hashes
    monkeypatch.setenv("PGTZ", "America/St_Johns")
    monkeypatch.setenv("PGDATESTYLE", "SQL, DMY")
    monkeypatch.setenv("PGOPTIONS", "-c extra_float_digits=0")
    quiet(plan(cli))
    # a real change to each kind of value is seen, and only there
    src(pg, "UPDATE {src} SET ts = ts + interval '1 millisecond', j = '{{\"a\": [1, 2], \"b\": 2}}' WHERE id = 1")
    src(pg, "UPDATE {src} SET t = NULL WHERE id = 3")        # '' -> NULL
    src(pg, "UPDATE {src} SET a = ARRAY['|', ':-']  WHERE id = 5")   # same characters, other split
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 3, 0), p
    run(cli)
    quiet(plan(cli))
    # what is only noise (sub-millisecond, key order, trailing zeros) is no change
    src(pg, "UPDATE {src} SET ts = ts + interval '100 microseconds', n = 10.00000 WHERE id = 2")
    src(pg, "UPDATE {src} SET j = '{{\"b\": 2, \"a\": [1, 2]}}' WHERE id = 1")
    quiet(plan(cli))


# ---------------------------------------------------------------- keys

@pytest.mark.parametrize("keytype,keys", [("char(6)", ["ab", "cd  e", "007"]),
                                          ("inet", ["10.0.0.1", "10.0.0.2", "::1"])])
def test_switching_location_with_a_key_whose_cast_text_is_not_its_output_sends_nothing(
        pg_shop, pg, braze_env, capsys, keytype, keys):
    """PostgreSQL's CAST(x AS VARCHAR) is not the text COPY lands for every type (char(n) loses its
    padding, inet gains a /32): the key must be spelled as Reflow spells it locally."""
    values = ", ".join(f"('{k}', 'u{i}', {i})" for i, k in enumerate(keys))
    setup(pg_shop, pg, f"id {keytype} PRIMARY KEY, ext text, v int", f"INSERT INTO {{src}} VALUES {values}",
          {"v": "v"}, location="local")
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    sent = calls(braze_env)
    for location in ("hashes", "warehouse", "local", "warehouse"):
        set_location(pg_shop, location)
        p = plan(cli)
        quiet(p)
        assert p["read"]["diff"] == location, p["read"]
        run(cli)
        assert calls(braze_env) == sent, location


def test_composite_key_with_quotes_commas_backslashes(pg_shop, pg, braze_env, capsys):
    rows = """INSERT INTO {src} VALUES ('a"b', 1, 'u1', 1), ('a,b', 1, 'u2', 1), ('a\\b', 1, 'u3', 1),
              ('a''b', 1, 'u4', 1), ('["a","1"]', 1, 'u5', 1), ('a', 11, 'u6', 1), ('é\t😀', 2, 'u7', 1)"""
    setup(pg_shop, pg, "k text, n int, ext text, v int, PRIMARY KEY (k, n)", rows, {"v": "v"},
          location="warehouse", key=["k", "n"])
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    sent = calls(braze_env)
    for location in ("hashes", "local", "warehouse"):
        set_location(pg_shop, location)
        quiet(plan(cli))
        run(cli)
    assert calls(braze_env) == sent
    src(pg, "UPDATE {src} SET v = 2 WHERE k = 'a\\b'")
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    run(cli)
    assert attrs(braze_env, "u3")["v"] == 2


def test_key_changing_from_int_to_text_with_the_same_text_is_no_change(pg_shop, pg, braze_env, capsys):
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, v int", "INSERT INTO {src} VALUES (1, 'u1', 1), (7, 'u7', 1)",
          {"v": "v"}, location="warehouse")
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    alter(pg, "ALTER TABLE {src} ALTER COLUMN id TYPE text")
    quiet(plan(cli, "--dbt-build"))
    # a leading zero is another key
    src(pg, "UPDATE {src} SET id = '007' WHERE id = '7'")
    p = plan(cli)
    assert (p["added"], p["removed"]) == (1, 1), p


@pytest.mark.parametrize("location", ["local", "hashes", "warehouse"])
def test_value_column_changing_type_int_to_numeric(pg_shop, pg, braze_env, capsys, location):
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, v int", "INSERT INTO {src} VALUES (1, 'u1', 1), (2, 'u2', 2)",
          {"v": "v"}, location=location)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    sent = calls(braze_env)
    alter(pg, "ALTER TABLE {src} ALTER COLUMN v TYPE numeric(10,3)")
    # an integer becoming a decimal is a change in every location (Braze is sent 1.0 for 1: its type changes)
    p = plan(cli, "--dbt-build")
    assert (p["added"], p["changed"], p["removed"]) == (0, 2, 0), p
    run(cli)
    quiet(plan(cli))
    src(pg, "UPDATE {src} SET v = 2.5 WHERE id = 2")
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    run(cli)
    assert attrs(braze_env, "u2")["v"] == 2.5
    assert attrs(braze_env, "u1")["v"] == 1
    assert calls(braze_env) > sent
