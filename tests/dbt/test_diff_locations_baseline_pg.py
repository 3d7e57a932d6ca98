"""first_run: baseline held rows on a real PostgreSQL (dbt-postgres), diff hashes / warehouse: awkward PostgreSQL types
recorded as send_all records them, the next plan quiet, the mirror holding every key; a secret in a value refused
(a sceptical pass over the held baseline, kept)."""
from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from dbtshop import ShopCli
from test_diff_locations import pg_rows
from test_diff_locations_sceptic import SYNC, quiet, setup

from engine.state import State

pytestmark = [pytest.mark.dbt, pytest.mark.e2e, pytest.mark.postgres]

PG_DDL = ("id int PRIMARY KEY, ext text, ts timestamptz, tsl timestamp, d date, n numeric, n2 numeric(40,20), "
          "f float8, j jsonb, jj json, t text, a text[], ia int[], b boolean, iv interval, u uuid, by bytea")
PG_ROWS = r"""INSERT INTO {src} VALUES
 (1, 'u1', '2024-01-02 03:04:05.123456+02', '2024-01-02 03:04:05.999999', '2024-01-01', 1.50,
  12345678901234567890.12345678901234567890, 'NaN', '{{"b": 1, "a": [1, 2.50, null]}}', '{{"z":1,"a":2}}',
  E'tab\there\\back\\slash\x01\x1f"quote', ARRAY['x', NULL], ARRAY[1,NULL,3], true, '1 day 02:03:04', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\xdeadbeef'),
 (2, 'u2', 'infinity', 'infinity', 'infinity', 10.000, 0.00000000000000000001, '-0', '{{"a": {{"y": 1, "x": 2}}}}', '[]',
  E'line\nbreak\r\u2028😀', ARRAY[]::text[], ARRAY[]::int[], false, '-3 months', NULL, ''),
 (3, 'u3', '-infinity', '-infinity', '-infinity', NULL, NULL, 'Infinity', 'null', 'null', '', NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 'u4', '1999-12-31 23:59:59.999+00', '1970-01-01', '0001-01-01', -0.0, -99999999999999999999.99999999999999999999,
  1e-300, '[]', '"s"', NULL, ARRAY[NULL]::text[], ARRAY[NULL]::int[], true, '0', NULL, NULL),
 (5, 'u5', '2024-03-31 02:30:00+00', '2024-03-31 02:30:00', '2000-02-29', 123456789012345678901234567890.123456789,
  1.5, 1.7976931348623157e308, '"str"', '{{"k": "\u00e9"}}', E'\\u0000 not nul', ARRAY['|', ':', '-', E'a\\b"c'], ARRAY[2147483647], false, '1 year', NULL, '\x00'),
 (6, 'u6', '0001-01-02 00:00:00+00', '9999-12-31 23:59:59.999999', '9999-12-31', 1e-30, 0, 0.1, '{{"big": 123456789012345678901234567890}}', '1.0',
  'plain', ARRAY['é'], ARRAY[-1], NULL, NULL, NULL, NULL)"""
FIELDS = {c: c for c in ("ts", "tsl", "d", "n", "n2", "f", "j", "jj", "t", "a", "ia", "b", "iv", "u", "by")}


def snapshot(shop, sync: str) -> dict[str, tuple[str, str]]:
    with State.open(shop / ".reflow" / "state.duckdb", command="test", read_only=True) as state:
        st = state.sync(sync)
        if st is None:
            return {}
        return {k: (h, j) for k, h, j in state.con.execute(f"select key, row_hash, row_json from {st.table}").fetchall()}


def add_twin(shop, name: str, **changes: Any) -> None:
    path = shop / "syncs" / f"{SYNC}.yml"
    spec = yaml.safe_load(path.read_text())
    spec.update(name=name, **changes)
    (shop / "syncs" / f"{name}.yml").write_text(yaml.safe_dump(spec, sort_keys=False))


def set_spec(shop, name: str = SYNC, **changes: Any) -> None:
    path = shop / "syncs" / f"{name}.yml"
    spec = yaml.safe_load(path.read_text())
    spec.update(**changes)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def cli_ok(cli, *args):
    code, out, err = cli(*args)
    assert code in (0, 3), (args, code, out, err)
    assert "Traceback" not in out + err
    return out + err


@pytest.mark.parametrize("tz", [None, "America/St_Johns"])
@pytest.mark.parametrize("location", ["hashes", "warehouse"])
def test_pg_types_baseline_equals_send_all(pg_shop, pg, braze_env, capsys, monkeypatch, location, tz):
    if tz:
        monkeypatch.setenv("PGTZ", tz)
        monkeypatch.setenv("PGDATESTYLE", "SQL, DMY")
    setup(pg_shop, pg, PG_DDL, PG_ROWS, FIELDS, location=location)
    set_spec(pg_shop, first_run="baseline")
    add_twin(pg_shop, "sceptic_sent", first_run="send_all")
    cli = ShopCli(pg_shop, capsys, target="pg")
    code, out, err = cli("plan", "--json", "--dbt-build")
    assert code == 0, out + err
    syncs = {s["name"]: s for s in json.loads(out)["syncs"]}
    assert syncs[SYNC]["read"]["diff"] == location and syncs[SYNC]["baseline"] == 6, syncs[SYNC]
    cli_ok(cli, "apply", "--yes")
    base, sent = snapshot(pg_shop, SYNC), snapshot(pg_shop, "sceptic_sent")
    assert len(base) == 6 and set(base) == set(sent), (base.keys(), sent.keys())
    diffs = {}
    for k in sent:
        b, s = json.loads(base[k][1].replace(":Infinity", ':"INF"').replace(":-Infinity", ':"-INF"').replace(":NaN", ':"NAN"')), json.loads(sent[k][1])
        # fields send_all leaves out (NaN, infinity: Braze cannot take them) are not compared
        d = {f: (b.get(f, "<absent>"), s.get(f, "<absent>")) for f in s if b.get(f, "<absent>") != s.get(f, "<absent>")}
        if d:
            diffs[k] = d
    assert not diffs, json.dumps(diffs, indent=1, default=str)
    # next plan: nothing, for both, in this session and another
    for name in (SYNC, "sceptic_sent"):
        code, out, err = cli("plan", "--json", "--select", name)
        assert code == 0, out + err
        quiet(json.loads(out)["syncs"][0])
    if location == "warehouse":
        for name in (SYNC, "sceptic_sent"):
            keys = pg_rows(pg["dsn"], f'SELECT key FROM "{pg["schema"]}"."reflow_mirror__{name}" ORDER BY key')
            assert [k for (k,) in keys] == sorted(base), (name, keys)


@pytest.mark.parametrize("location", ["hashes", "warehouse"])
def test_pg_secret_in_value_baseline(pg_shop, pg, braze_env, capsys, location):
    key = braze_env.api_key
    rows = (f"INSERT INTO {{src}} VALUES (1, 'u1', 'ok', 1), (2, 'u2', 'pre {key} post', 2), "
            f"(3, 'u3', 'x', 3), (4, '{key}', 'y', 4)")
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, t text, v int", rows, {"t": "t", "v": "v"}, location=location)
    set_spec(pg_shop, first_run="baseline")
    cli = ShopCli(pg_shop, capsys, target="pg")
    code, out, err = cli("plan", "--json", "--dbt-build")
    assert code == 0 and key not in out + err
    planned = {s["name"]: (s["invalid"], s["baseline"]) for s in json.loads(out)["syncs"]}
    assert planned[SYNC] == (2, 2), planned
    code, out, err = cli("apply", "--yes")
    assert key not in out + err and "Traceback" not in out + err
    state_bytes = (pg_shop / ".reflow" / "state.duckdb").read_bytes()
    assert key.encode() not in state_bytes
    snap = snapshot(pg_shop, SYNC)
    assert set(snap) == {"1", "3"}, snap
    code, out, err = cli("status")
    assert code == 0 and key not in out + err
    for fmt in ("json", "jsonl", "csv"):
        code, out, err = cli("show", "--format", fmt, "--limit", "0")
        assert key not in out + err and "Traceback" not in out + err
