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
              ('a''b', 1, 'u4', 1), ('["a","1"]', 1, 'u5', 1), ('a', 11, 'u6', 1), ('é\t😀', 2, 'u7', 1),
              ('x' || chr(31) || chr(11), 1, 'u8', 1), ('\\u001f' || chr(26), 1, 'u9', 1)"""
    # the last two: control characters whose JSON escape PostgreSQL spelt in lowercase, DuckDB in uppercase
    # (then a switch of location planned them removed and added), next to a literal text spelling one
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


@pytest.mark.parametrize("location", ["local", "hashes", "warehouse"])
def test_value_column_turning_to_text_with_the_same_spelling_is_a_change(pg_shop, pg, braze_env, capsys, location):
    """An integer column turned to text ('1' for 1), an array turned to its JSON text: Braze then holds a
    string where it held a number or an array, so it is a change in every location (the local diff sees
    it). The warehouse's hash must not be blind to the value's type: PostgreSQL spells 1 and '1', and
    ARRAY['x'] and '["x"]', with the same text."""
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, v int, a text[]",
          "INSERT INTO {src} VALUES (1, 'u1', 1, ARRAY['x']), (2, 'u2', 2, NULL)", {"v": "v", "a": "a"},
          location=location)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    assert attrs(braze_env, "u1") == {"v": 1, "a": ["x"]}
    alter(pg, "ALTER TABLE {src} ALTER COLUMN v TYPE text, ALTER COLUMN a TYPE text USING to_jsonb(a)::text")
    assert src(pg, "SELECT v, a FROM {src} WHERE id = 1") == [("1", '["x"]')]
    p = plan(cli, "--dbt-build")
    assert (p["added"], p["changed"], p["removed"]) == (0, 2, 0), p
    run(cli)
    quiet(plan(cli))
    assert attrs(braze_env, "u1") == {"v": "1", "a": '["x"]'}
    assert attrs(braze_env, "u2")["v"] == "2"


# ---------------------------------------------------------------- the mirror, by hand and shared

def simple(shop: Path, pg: dict[str, str], location: str = "warehouse", n: int = 5, **kw: Any) -> None:
    rows = ", ".join(f"({i}, 'u{i}', {i})" for i in range(1, n + 1))
    setup(shop, pg, "id int PRIMARY KEY, ext text, v int", f"INSERT INTO {{src}} VALUES {rows}", {"v": "v"},
          location=location, **kw)


def model_hash(pg: dict[str, str], key: int) -> str:
    """The hash Reflow's PostgreSQL recipe gives the model's row `key` now (fields external_id, v)."""
    from engine.warehouse.dialects import Field, Postgres

    fields = [Field("external_id", "ext", "VARCHAR"), Field("v", "v", "INTEGER")]
    sql = Postgres().hashed(f'SELECT * FROM "{pg["schema"]}".sceptic_users', ["id"], fields)
    return str(pg_rows(pg["dsn"], f"SELECT __hash FROM ({sql}) AS h WHERE __key = '{key}'")[0][0])


def test_a_mirror_without_its_generated_checksum_is_rebuilt(pg_shop, pg, braze_env, capsys):
    """The digest checked on every plan sums a checksum PostgreSQL generates from each row's key and hash.
    A mirror without it (made by an older Reflow) or whose expression was dropped by hand (the checksum then
    kept as written, blind to later edits) is rebuilt from the snapshot: an edit it would hide is seen."""
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    mirror = f'"{pg["schema"]}"."reflow_mirror__{SYNC}"'
    generated = f"SELECT attgenerated FROM pg_attribute WHERE attrelid = '{mirror}'::regclass AND attname = 'checksum'"
    assert pg_rows(pg["dsn"], generated) == [("s",)]
    pg_rows(pg["dsn"], f"ALTER TABLE {mirror} DROP COLUMN checksum")
    sent = calls(braze_env)
    quiet(plan(cli))
    assert pg_rows(pg["dsn"], generated) == [("s",)]
    pg_rows(pg["dsn"], f"ALTER TABLE {mirror} ALTER COLUMN checksum DROP EXPRESSION")
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1")
    pg_rows(pg["dsn"], f"UPDATE {mirror} SET hash = '{model_hash(pg, 1)}', checksum = NULL WHERE key = '1'")
    pg_rows(pg["dsn"], f"UPDATE {mirror} SET checksum = 0")    # whatever sums to the digest recorded is not trusted
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    assert calls(braze_env) == sent
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 100
    assert pg_rows(pg["dsn"], generated) == [("s",)]
    quiet(plan(cli))


def test_a_state_restored_from_an_older_copy_is_not_diffed_against_the_newer_mirror(pg_shop, pg, braze_env, capsys):
    """The mirror matches the digest it records (its rows untouched), but that is a later snapshot's: the state
    file was restored from a copy taken before the last run. Phase 1 runs beside the snapshot's own digest;
    its answer is not taken, the mirror is rebuilt from the restored snapshot, and the change that state
    never recorded as acknowledged is planned again."""
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    state = pg_shop / ".reflow" / "state.duckdb"
    assert not state.with_name("state.duckdb.wal").exists()
    copy = state.read_bytes()
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1")
    src(pg, "DELETE FROM {src} WHERE id = 5")
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 100
    syncs = f'"{pg["schema"]}".reflow_mirror_syncs'
    newer = pg_rows(pg["dsn"], f"SELECT digest FROM {syncs} WHERE sync = '{SYNC}'")
    state.write_bytes(copy)
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 1), p
    assert pg_rows(pg["dsn"], f"SELECT digest FROM {syncs} WHERE sync = '{SYNC}'") != newer
    run(cli)
    quiet(plan(cli))


def test_a_mirror_hash_edited_by_hand_to_match_the_model_does_not_hide_the_change(pg_shop, pg, braze_env, capsys):
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    mirror = f'"{pg["schema"]}"."reflow_mirror__{SYNC}"'
    assert pg_rows(pg["dsn"], f"SELECT hash FROM {mirror} WHERE key = '2'")[0][0] == model_hash(pg, 2)
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1")
    pg_rows(pg["dsn"], f"UPDATE {mirror} SET hash = '{model_hash(pg, 1)}' WHERE key = '1'")
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 100
    # a row inserted by hand (a key the snapshot lacks, with the model's hash) does not hide an added row
    src(pg, "INSERT INTO {src} VALUES (6, 'u6', 6)")
    pg_rows(pg["dsn"], f"INSERT INTO {mirror} VALUES ('6', '{model_hash(pg, 6)}')")
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (1, 0, 0), p
    run(cli)
    assert attrs(braze_env, "u6")["v"] == 6
    # a row deleted by hand does not hide a removal
    src(pg, "DELETE FROM {src} WHERE id = 5")
    pg_rows(pg["dsn"], f"DELETE FROM {mirror} WHERE key = '5'")
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 0, 1), p


def test_two_long_sync_names_keep_mirrors_of_their_own(pg_shop, pg, braze_env, capsys):
    """Two sync names alike in their first 60 characters (PostgreSQL cuts identifiers at 63 bytes): each
    keeps its own mirror table, so a plan rebuilds neither, and each plans its own changes."""
    simple(pg_shop, pg)
    spec = yaml.safe_load((pg_shop / "syncs" / f"{SYNC}.yml").read_text())
    (pg_shop / "syncs" / f"{SYNC}.yml").unlink()
    names = ["sceptic." + "x" * 60 + ".a", "sceptic." + "x" * 60 + ".b"]
    for name, field in zip(names, ("v", "w"), strict=True):
        spec.update(name=name)
        spec["destination"]["fields"] = {field: "v"}
        (pg_shop / "syncs" / f"{name}.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    cli = ShopCli(pg_shop, capsys, target="pg")
    code, out, err = cli("run", "--dbt-build")
    assert code == 0, out + err
    tables = pg_rows(pg["dsn"], f"SELECT tablename FROM pg_tables WHERE schemaname = '{pg['schema']}' "
                                "AND tablename LIKE 'reflow_mirror\\_\\_%'")
    assert len(tables) == 2, tables
    stamps = pg_rows(pg["dsn"], f'SELECT sync, updated_at FROM "{pg["schema"]}".reflow_mirror_syncs ORDER BY sync')
    src(pg, "UPDATE {src} SET v = 70 WHERE id = 1")
    code, out, err = cli("plan", "--json")
    assert code == 0, out + err
    planned = {s["name"]: (s["added"], s["changed"], s["removed"]) for s in json.loads(out)["syncs"] if s["name"] in names}
    assert planned == {names[0]: (0, 1, 0), names[1]: (0, 1, 0)}, planned
    # neither mirror was rebuilt by the other's plan
    assert pg_rows(pg["dsn"], f'SELECT sync, updated_at FROM "{pg["schema"]}".reflow_mirror_syncs ORDER BY sync') == stamps
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert attrs(braze_env, "u1")["v"] == 70 and attrs(braze_env, "u1")["w"] == 70


def test_two_state_folders_sharing_one_mirror_schema(pg_shop, pg, braze_env, capsys):
    import shutil

    simple(pg_shop, pg)
    other = pg_shop.parent / "second"
    shutil.copytree(pg_shop, other, ignore=shutil.ignore_patterns(".reflow", "target", "logs"))
    a, b = ShopCli(pg_shop, capsys, target="pg"), ShopCli(other, capsys, target="pg")
    run(a, "--dbt-build")
    run(b)
    src(pg, "UPDATE {src} SET v = 50 WHERE id = 1")
    p = plan(a)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    run(a)
    quiet(plan(a))
    src(pg, "UPDATE {src} SET v = 60 WHERE id = 2")
    p = plan(b)          # b never sent v = 50 for u1: it is a change for b too
    assert (p["added"], p["changed"], p["removed"]) == (0, 2, 0), p
    run(b)
    p = plan(a)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    run(a)
    quiet(plan(a))
    quiet(plan(b))
    assert attrs(braze_env, "u1")["v"] == 50 and attrs(braze_env, "u2")["v"] == 60


def test_another_state_rewriting_the_mirror_between_the_check_and_phase_one(pg_shop, pg, braze_env, capsys,
                                                                          monkeypatch):
    """Another state sharing the mirror rebuilds it after this plan checked it and before phase 1 read it
    (here: its rows and digest written as another state would, hiding this state's change to u1): the plan
    sees the other digest in phase 1's own answer and runs phase 1 again on its own mirror; a mirror
    rewritten on every attempt stops the plan, named, instead of diffing against another state."""
    from engine import locations

    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    mirror = f'"{pg["schema"]}"."reflow_mirror__{SYNC}"'
    syncs = f'"{pg["schema"]}".reflow_mirror_syncs'
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1")
    real = locations.ensure_mirror
    races = {"left": 1}

    def racing(*args: Any, **kwargs: Any) -> str:
        digest = real(*args, **kwargs)          # the mirror checked (or rebuilt); then the other state writes
        if races["left"]:
            races["left"] -= 1
            pg_rows(pg["dsn"], f"UPDATE {mirror} SET hash = '{model_hash(pg, 1)}' WHERE key = '1'; "
                               f"UPDATE {syncs} SET digest = 'another state' WHERE sync = '{SYNC}'")
        return digest

    monkeypatch.setattr(locations, "ensure_mirror", racing)
    p = plan(cli)
    assert races["left"] == 0, "the race did not run; the test proves little"
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    assert p["read"]["rows"] == 1, p["read"]        # the changed row, with its values: the digest row is not counted
    races["left"] = 2
    code, out, err = cli("plan", "--select", SYNC)
    assert code == 1, out + err
    assert "was rewritten while this plan read it" in out + err and "mirror_schema" in out + err
    assert "Traceback" not in out + err
    monkeypatch.setattr(locations, "ensure_mirror", real)
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 100
    quiet(plan(cli))


# ---------------------------------------------------------------- plans, stale and read-only

def test_plan_then_data_change_then_apply(pg_shop, pg, braze_env, capsys):
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    src(pg, "UPDATE {src} SET v = 10 WHERE id = 1")
    p = plan(cli)
    assert p["changed"] == 1
    src(pg, "UPDATE {src} SET v = 20 WHERE id = 1; UPDATE {src} SET v = 30 WHERE id = 2; DELETE FROM {src} WHERE id = 3")
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert attrs(braze_env, "u1")["v"] == 10       # the plan, as planned
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 2, 1), p
    run(cli)
    quiet(plan(cli))
    assert attrs(braze_env, "u1")["v"] == 20 and attrs(braze_env, "u2")["v"] == 30


def test_read_only_plan_writes_no_mirror_and_sees_changes(pg_shop, pg, braze_env, capsys):
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    before = pg_rows(pg["dsn"], f'SELECT digest, version, updated_at FROM "{pg["schema"]}".reflow_mirror_syncs')
    src(pg, "UPDATE {src} SET v = 10 WHERE id = 1")
    p = plan(cli, "--read-only")
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    assert p["read"]["diff"] == "hashes"
    assert pg_rows(pg["dsn"], f'SELECT digest, version, updated_at FROM "{pg["schema"]}".reflow_mirror_syncs') == before
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p


def test_row_deleted_or_changed_between_phase_one_and_the_fetch(pg_shop, pg, braze_env, capsys, monkeypatch):
    """`hashes` reads the model twice (pairs, then the delta's rows): a row gone or changed in between.
    (`warehouse` reads the delta's rows in phase 1's one statement: there is no in between.)"""
    from engine import locations

    simple(pg_shop, pg, location="hashes")
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    src(pg, "UPDATE {src} SET v = 10 WHERE id IN (1, 2)")
    real = locations._fetch
    raced: list[bool] = []

    def racing(*args: Any, **kwargs: Any) -> None:
        src(pg, "DELETE FROM {src} WHERE id = 1; UPDATE {src} SET v = 11 WHERE id = 2")
        raced.append(True)
        real(*args, **kwargs)

    monkeypatch.setattr(locations, "_fetch", racing)
    p = plan(cli)
    monkeypatch.setattr(locations, "_fetch", real)
    assert raced, "the race did not run; the test proves little"
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert attrs(braze_env, "u2")["v"] == 11
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 0, 1), p
    run(cli)
    quiet(plan(cli))


# ---------------------------------------------------------------- pending rows, switching location

def set_faults(sandbox: Any, **options: Any) -> None:
    import dataclasses

    from engine.sandbox.faults import Faults

    app = sandbox.sandbox
    app.options = dataclasses.replace(app.options, **options)
    app.faults = Faults(app.options)


@pytest.mark.parametrize("fault", ["rejected", "unknown"])
def test_switching_location_back_and_forth_while_rows_are_pending(pg_shop, pg, braze_env, capsys, fault):
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    src(pg, "UPDATE {src} SET v = v + 100")
    if fault == "rejected":
        set_faults(braze_env, reject_external_ids=frozenset({"u2"}))
    else:
        set_faults(braze_env, process_then_fail_rate=1.0, process_then_fail_kind="500", fail_5xx_rate=0.0)
    cli("run", "--select", SYNC)
    for location in ("hashes", "local", "warehouse", "hashes", "warehouse"):
        set_location(pg_shop, location)
        p = plan(cli)
        assert p["to_send"] > 0, (location, p)
    set_faults(braze_env, reject_external_ids=frozenset(), process_then_fail_rate=0.0)
    run(cli)
    quiet(plan(cli))
    for i in range(1, 6):
        assert attrs(braze_env, f"u{i}")["v"] == i + 100, i


# ---------------------------------------------------------------- mappings

@pytest.mark.parametrize("location", ["local", "warehouse"])
def test_mapping_added_renamed_dropped_with_unset(pg_shop, pg, braze_env, capsys, location):
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, v int, w text",
          "INSERT INTO {src} VALUES (1, 'u1', 1, 'a'), (2, 'u2', 2, NULL), (3, 'u3', 3, '')",
          {"v": "v"}, location=location, extra={"on_unmapped": "unset"})
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    path = pg_shop / "syncs" / f"{SYNC}.yml"

    def fields(mapping: dict[str, str]) -> dict[str, Any]:
        spec = yaml.safe_load(path.read_text())
        spec["destination"]["fields"] = mapping
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        p = plan(cli)
        run(cli)
        quiet(plan(cli))
        return p

    p = fields({"v": "v", "w": "w"})                  # added (a null is nothing to send)
    assert p["changed"] == 2, p
    assert attrs(braze_env, "u1")["w"] == "a" and attrs(braze_env, "u3")["w"] == ""
    p = fields({"v": "v", "w2": "w"})                 # renamed: w unset, w2 set
    assert p["changed"] == 2, p
    assert "w" not in attrs(braze_env, "u1") and attrs(braze_env, "u1")["w2"] == "a"
    p = fields({"v": "v"})                            # dropped: unset
    assert "w2" not in attrs(braze_env, "u1") and "w2" not in attrs(braze_env, "u3")


# ---------------------------------------------------------------- events

@pytest.mark.parametrize("location", ["hashes", "warehouse"])
def test_events_are_sent_once_whatever_the_location(pg_shop, pg, braze_env, capsys, location):
    setup(pg_shop, pg, "id text PRIMARY KEY, ext text, ts timestamptz, v int",
          "INSERT INTO {src} VALUES ('e1', 'u1', '2024-01-01 00:00:00.5+00', 1), ('e2', 'u1', '2024-01-02', 2), "
          "('e3', 'u2', '2024-01-03', 3)",
          {}, location=location, extra={"object": "events", "event": {"name": "sceptic_evt", "time": "ts",
                                                                        "properties": {"v": "v"}}})
    spec = yaml.safe_load((pg_shop / "syncs" / f"{SYNC}.yml").read_text())
    del spec["destination"]["fields"]
    (pg_shop / "syncs" / f"{SYNC}.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    src(pg, "DELETE FROM {src} WHERE id = 'e1'; INSERT INTO {src} VALUES ('e4', 'u2', '2024-01-04', 4)")
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (1, 0, 0), p
    run(cli)
    for other in ("local", location, "hashes", location):
        set_location(pg_shop, other)
        quiet(plan(cli))
        run(cli)
    assert len(braze_env.events("u1")) == 2 and len(braze_env.events("u2")) == 2


# ---------------------------------------------------------------- secrets

def test_the_postgres_password_is_never_shown(pg_shop, pg, braze_env, capsys, monkeypatch):
    secret = "s3cr3t-Pa55-wordXYZ"
    monkeypatch.setenv("SHOP_PG_PASSWORD", secret)
    monkeypatch.setenv("PGPASSWORD", secret)
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    outputs = []
    for args in (("plan", "--json", "--dbt-build"), ("plan", "--format", "markdown"), ("apply", "--yes"),
                 ("plan", "--json", "--read-only")):
        code, out, err = cli(*args, "--select", SYNC) if args[0] == "plan" else cli(*args)
        outputs.append(out + err)
    # errors: a mirror schema Reflow cannot write, a model that fails
    path = pg_shop / "reflow_project.yml"
    data = yaml.safe_load(path.read_text())
    data["warehouse"]["mirror_schema"] = "pg_catalog"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    src(pg, "UPDATE {src} SET v = 7 WHERE id = 1")
    code, out, err = cli("run", "--select", SYNC, "--debug")
    outputs.append(out + err)
    assert code != 0
    src(pg, "ALTER TABLE {src} RENAME COLUMN v TO vv")
    code, out, err = cli("plan", "--select", SYNC)
    outputs.append(out + err)
    assert code != 0
    for text in outputs:
        assert secret not in text
    state = (pg_shop / ".reflow" / "state.duckdb").read_bytes()
    assert secret.encode() not in state
