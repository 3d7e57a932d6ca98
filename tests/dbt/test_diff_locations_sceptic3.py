"""A third sceptic's pass over `diff: warehouse` on a real PostgreSQL, after the mirror's digest became a sum of
a stored generated checksum (1b2023a), the snapshot's digest moved beside phase 1, PostgreSQL's dates and
times came to hash by their binary form (recipe postgres-hte/v4, fb35415), and PostgreSQL before 12 runs
`hashes` (2df61b5). Each test drives a small model through the CLI against the Braze sandbox, over several
runs, and checks that Braze and Reflow agree (or that Reflow says they do not). Helpers come from
test_diff_locations_sceptic."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from dbtshop import ShopCli
from test_diff_locations import pg_rows
from test_diff_locations_sceptic import (
    SYNC,
    attrs,
    calls,
    model_hash,
    plan,
    quiet,
    run,
    set_location,
    setup,
    simple,
    src,
)

pytestmark = [pytest.mark.dbt, pytest.mark.e2e, pytest.mark.postgres]


def mirror_of(pg: dict[str, str], sync: str = SYNC) -> str:
    return f'"{pg["schema"]}"."reflow_mirror__{sync}"'


def counts(p: dict[str, Any]) -> tuple[int, int, int]:
    return p["added"], p["changed"], p["removed"]


# ---------------------------------------------------------------- the mirror's generated checksum, edited around

# hand edits after which the checksums no longer follow the `hash` column phase 1 joins on
RENAMED = ("ALTER TABLE {m} RENAME COLUMN hash TO hash_was; ALTER TABLE {m} ADD COLUMN hash text; "
           "UPDATE {m} SET hash = hash_was")
FROZEN = ("ALTER TABLE {m} ADD COLUMN frozen bigint; UPDATE {m} SET frozen = checksum; "
          "ALTER TABLE {m} DROP COLUMN checksum; ALTER TABLE {m} ADD COLUMN checksum bigint GENERATED ALWAYS AS "
          "(frozen) STORED")


@pytest.mark.parametrize("edit", [RENAMED, FROZEN], ids=["hash-renamed-and-replaced", "checksum-over-a-frozen-copy"])
def test_a_mirror_whose_checksum_no_longer_follows_its_hash_does_not_hide_a_change(pg_shop, pg, braze_env, capsys,
                                                                                  edit):
    """The checksum is generated from the columns it was created over, by number, not by name. Rename `hash`
    away and add a plain `hash` in its place, or generate `checksum` again over a frozen copy of the old
    checksums: a hash then edited by hand (to the model's hash of a changed row) leaves the digest as
    recorded. Such a mirror (its checksum not generated from `key` and `hash`) is rebuilt, and the change
    goes out (before the fix it was trusted and the change hidden)."""
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    mirror = mirror_of(pg)
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1")
    pg_rows(pg["dsn"], edit.format(m=mirror) + f"; UPDATE {mirror} SET hash = '{model_hash(pg, 1)}' WHERE key = '1'")
    p = plan(cli)
    assert p["read"]["diff"] == "warehouse", p["read"]
    assert counts(p) == (0, 1, 0), counts(p)
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 100


def test_two_syncs_mirrors_swapped_with_their_digests_are_rebuilt(pg_shop, pg, braze_env, capsys):
    """Two syncs on one model (fields v and w): their mirror tables swapped by renames, and their recorded
    digests swapped too, so each mirror matches the digest it records. The first pass trusts each; the
    snapshot's digest (computed beside phase 1) is not that one: rebuilt, and each plans its own change."""
    simple(pg_shop, pg)
    path = pg_shop / "syncs" / f"{SYNC}.yml"
    spec = yaml.safe_load(path.read_text())
    spec.update(name=f"{SYNC}_w")
    spec["destination"]["fields"] = {"w": "v"}
    (pg_shop / "syncs" / f"{SYNC}_w.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    cli = ShopCli(pg_shop, capsys, target="pg")
    code, out, err = cli("run", "--dbt-build")
    assert code == 0, out + err
    a, b = mirror_of(pg), mirror_of(pg, f"{SYNC}_w")
    syncs = f'"{pg["schema"]}".reflow_mirror_syncs'
    pg_rows(pg["dsn"], f'ALTER TABLE {a} RENAME TO "swap_tmp"; ALTER TABLE {b} RENAME TO "reflow_mirror__{SYNC}"; '
                       f'ALTER TABLE "{pg["schema"]}"."swap_tmp" RENAME TO "reflow_mirror__{SYNC}_w"; '
                       f"UPDATE {syncs} SET sync = 'tmp' WHERE sync = '{SYNC}'; "
                       f"UPDATE {syncs} SET sync = '{SYNC}' WHERE sync = '{SYNC}_w'; "
                       f"UPDATE {syncs} SET sync = '{SYNC}_w' WHERE sync = 'tmp'")
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1")
    code, out, err = cli("plan", "--json")
    assert code == 0, out + err
    planned = {s["name"]: counts(s) for s in json.loads(out)["syncs"]}
    assert planned[SYNC] == planned[f"{SYNC}_w"] == (0, 1, 0), planned
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    assert attrs(braze_env, "u1")["v"] == 100 and attrs(braze_env, "u1")["w"] == 100
    code, out, err = cli("plan", "--json")
    assert code == 0, out + err
    assert all(counts(s) == (0, 0, 0) for s in json.loads(out)["syncs"]), out


def test_a_checksum_updated_by_hand_is_refused_and_rows_edited_are_rebuilt(pg_shop, pg, braze_env, capsys):
    """The checksum cannot be written (PostgreSQL refuses); rows inserted, deleted or re-keyed by hand
    change the sum, and the mirror is rebuilt."""
    import psycopg2

    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    mirror = mirror_of(pg)
    with pytest.raises(psycopg2.Error):
        pg_rows(pg["dsn"], f"UPDATE {mirror} SET checksum = 0 WHERE key = '1'")
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1; UPDATE {src} SET v = 200 WHERE id = 2")
    # the two changed rows' hashes swapped between their keys, and another key's row re-keyed
    h1, h2 = model_hash(pg, 1), model_hash(pg, 2)
    pg_rows(pg["dsn"], f"UPDATE {mirror} SET hash = '{h2}' WHERE key = '1'; UPDATE {mirror} SET hash = '{h1}' "
                       f"WHERE key = '2'; DELETE FROM {mirror} WHERE key = '3'; "
                       f"INSERT INTO {mirror} (key, hash) VALUES ('3 ', (SELECT hash FROM {mirror} WHERE key = '4'))")
    p = plan(cli)
    assert counts(p) == (0, 2, 0), counts(p)
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 100 and attrs(braze_env, "u2")["v"] == 200
    quiet(plan(cli))


# ---------------------------------------------------------------- recipe v3 → v4 with changes pending

def _v3_normalised(self: Any, column: str, kind_: str) -> str:
    """PostgreSQL's normal forms of recipe postgres-hte/v3 (0792d5a): dates and times by to_char, with the era."""
    from engine.warehouse.dialects import ISO_MS

    def with_era(value: str, picture: str, type_: str) -> str:
        return f"to_char({value}, '{picture}') || CASE WHEN {value} < {type_} '0001-01-01' THEN ' BC' ELSE '' END"

    utc = f"({column} AT TIME ZONE 'UTC')"
    forms = {"timestamptz": with_era(utc, ISO_MS, "TIMESTAMP"), "timestamp": with_era(column, ISO_MS, "TIMESTAMP"),
             "date": with_era(column, "YYYY-MM-DD", "DATE")}
    return forms.get(kind_) or V4_NORMALISED(self, column, kind_)


V4_NORMALISED: Any = None

TIMES_DDL = "id int PRIMARY KEY, ext text, ts timestamptz, tl timestamp, d date, v int"
TIMES_ROWS = """INSERT INTO {src} VALUES
 (1, 'u1', '2024-03-31 00:59:59.999+00', '2024-03-31 01:30:00', '2024-03-31', 1),
 (2, 'u2', '2024-10-27 00:30:00.5+00', '1999-12-31 23:59:59.9995', '1999-12-31', 2),
 (3, 'u3', '1969-12-31 23:59:59.9994+00', '1969-12-31 23:59:59.9996', '1970-01-01', 3),
 (4, 'u4', 'infinity', '-infinity', 'infinity', 4),
 (5, 'u5', NULL, NULL, NULL, 5)"""
TIMES_FIELDS = {"ts": "ts", "tl": "tl", "d": "d", "v": "v"}


@pytest.mark.parametrize("location", ["warehouse", "hashes"])
def test_a_v3_snapshot_rehashes_once_and_sends_only_the_changes_pending(pg_shop, pg, braze_env, capsys, monkeypatch,
                                                                        location):
    """A snapshot hashed by recipe v3 (to_char), then under v4 (binary forms) with changes pending: a real
    change (a value, a millisecond) is planned and sent, noise (microseconds) is not, the rest is re-hashed
    without a send; the mirror (recipe v3) is rebuilt; then nothing is planned, whatever the session."""
    global V4_NORMALISED
    from engine.warehouse.dialects import Postgres

    V4_NORMALISED = Postgres.normalised
    setup(pg_shop, pg, TIMES_DDL, TIMES_ROWS, TIMES_FIELDS, location=location)
    cli = ShopCli(pg_shop, capsys, target="pg")
    with monkeypatch.context() as m:
        m.setattr(Postgres, "recipe_version", 3)
        m.setattr(Postgres, "normalised", _v3_normalised)
        run(cli, "--dbt-build")
        quiet(plan(cli))
    if location == "warehouse":
        recipe = pg_rows(pg["dsn"], f"SELECT recipe FROM \"{pg['schema']}\".reflow_mirror_syncs WHERE sync = '{SYNC}'")
        assert recipe == [("postgres-hte/v3",)]
    u2 = attrs(braze_env, "u2")
    src(pg, "UPDATE {src} SET v = 10 WHERE id = 1")
    src(pg, "UPDATE {src} SET ts = ts + interval '1 millisecond' WHERE id = 2")
    src(pg, "UPDATE {src} SET ts = ts + interval '500 microseconds', tl = tl - interval '400 microseconds' WHERE id = 3")
    sent = calls(braze_env)
    p = plan(cli)
    assert p["read"]["diff"] == location
    assert (counts(p), p["to_send"]) == ((0, 2, 0), 2), p
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 10
    assert attrs(braze_env, "u2")["ts"] != u2["ts"], (u2, attrs(braze_env, "u2"))
    assert calls(braze_env) > sent
    quiet(plan(cli))
    if location == "warehouse":
        recipe = pg_rows(pg["dsn"], f"SELECT recipe FROM \"{pg['schema']}\".reflow_mirror_syncs WHERE sync = '{SYNC}'")
        assert recipe == [("postgres-hte/v4",)]
    monkeypatch.setenv("PGTZ", "Pacific/Chatham")
    monkeypatch.setenv("PGDATESTYLE", "SQL, DMY")
    quiet(plan(cli))
    # the local diff agrees with what was sent (it compares field by field once, then hashes its way)
    monkeypatch.delenv("PGTZ")
    monkeypatch.delenv("PGDATESTYLE")
    set_location(pg_shop, "local")
    quiet(plan(cli))
    run(cli)
    quiet(plan(cli))


# ---------------------------------------------------------------- dates and times over time

def alter_view(pg: dict[str, str], sql: str) -> None:
    pg_rows(pg["dsn"], f'DROP VIEW IF EXISTS "{pg["schema"]}".sceptic_users')
    src(pg, sql)


@pytest.mark.parametrize("location", ["warehouse", "hashes"])
def test_time_columns_changing_type_send_what_braze_must_now_hold(pg_shop, pg, braze_env, capsys, location):
    """timestamp(6) → timestamp(0) (whole seconds: the same values), timestamp → timestamptz in a UTC
    session (the same instants), date → timestamp (the same instant, but Braze then holds a time, not a
    date): only the last is a change, in every row, and Braze ends holding what the local diff sends."""
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, t timestamp(6), d date",
          "INSERT INTO {src} VALUES (1, 'u1', '2024-01-01 10:00:00', '2024-01-01'), "
          "(2, 'u2', '2024-07-01 23:59:59', '1999-12-31'), (3, 'u3', NULL, NULL)", {"t": "t", "d": "d"},
          location=location)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    assert attrs(braze_env, "u1") == {"t": "2024-01-01T10:00:00.000Z", "d": "2024-01-01"}
    alter_view(pg, "ALTER TABLE {src} ALTER COLUMN t TYPE timestamp(0)")
    quiet(plan(cli, "--dbt-build"))
    alter_view(pg, "SET TimeZone = 'UTC'; ALTER TABLE {src} ALTER COLUMN t TYPE timestamptz")
    quiet(plan(cli, "--dbt-build"))
    alter_view(pg, "ALTER TABLE {src} ALTER COLUMN d TYPE timestamp")
    p = plan(cli, "--dbt-build")
    assert counts(p) == (0, 2, 0), counts(p)
    run(cli)
    quiet(plan(cli))
    assert attrs(braze_env, "u1") == {"t": "2024-01-01T10:00:00.000Z", "d": "2024-01-01T00:00:00.000Z"}
    assert attrs(braze_env, "u2")["d"] == "1999-12-31T00:00:00.000Z"
    set_location(pg_shop, "local")
    quiet(plan(cli))


@pytest.mark.parametrize("location", ["warehouse", "hashes"])
def test_a_view_whose_values_follow_the_session_zone(pg_shop, pg, braze_env, capsys, monkeypatch, location):
    """A view casting a timestamptz to date and to timestamp: its values are those of the session reading it
    (Reflow's). Under another zone the model's values change, and Braze must be sent them; back, again."""
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, ts timestamptz",
          "INSERT INTO {src} VALUES (1, 'u1', '2024-03-31 23:30:00+00'), (2, 'u2', '2024-03-31 12:00:00+00')",
          {"d": "d", "l": "l"}, location=location)
    (pg_shop / "models" / "marts" / "sceptic_users.sql").write_text(
        "{{ config(materialized='view') }}\nselect id, ext, ts::date as d, ts::timestamp as l "
        "from \"{{ env_var('SHOP_RAW_SCHEMA') }}\".sceptic_src\n")
    cli = ShopCli(pg_shop, capsys, target="pg")
    monkeypatch.setenv("PGTZ", "UTC")
    run(cli, "--dbt-build")
    assert attrs(braze_env, "u1") == {"d": "2024-03-31", "l": "2024-03-31T23:30:00.000Z"}
    for zone, seen in (("Asia/Tokyo", {"d": "2024-04-01", "l": "2024-04-01T08:30:00.000Z"}),
                       ("UTC", {"d": "2024-03-31", "l": "2024-03-31T23:30:00.000Z"})):
        monkeypatch.setenv("PGTZ", zone)
        p = plan(cli)
        assert counts(p) == (0, 2, 0), (zone, counts(p))
        run(cli)
        assert attrs(braze_env, "u1") == seen
        quiet(plan(cli))


# ---------------------------------------------------------------- a mirror behind, trusted by the first pass

def test_a_stale_mirror_from_before_a_detour_through_local_does_not_answer_phase_one(pg_shop, pg, braze_env, capsys):
    """warehouse (the mirror records v=1 for u1), then local (u1 sent v=100), then warehouse again with u1 back
    at v=1: the old mirror is consistent with the digest it records and has this recipe, so the first pass
    reads it, and on it u1 is unchanged. Only the snapshot's digest (computed beside phase 1) says that
    mirror is not this snapshot's: rebuilt, and u1 = 1 is sent."""
    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    set_location(pg_shop, "local")
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1")
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 100
    set_location(pg_shop, "warehouse")
    src(pg, "UPDATE {src} SET v = 1 WHERE id = 1")
    p = plan(cli)
    assert p["read"]["diff"] == "warehouse"
    assert (counts(p), p["to_send"]) == ((0, 1, 0), 1), p
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 1
    quiet(plan(cli))


def test_a_mirror_left_behind_by_a_crash_after_the_send(pg_shop, pg, braze_env, capsys, monkeypatch):
    """The apply sends and records u1 = 100, and dies before the mirror's update (update_mirror never runs).
    u1 then goes back to 1 in the model: on the mirror left behind (which records u1's old hash, that of
    v=1) it looks unchanged. The first pass's answer is not taken; u1 = 1 is sent."""
    from engine import locations

    simple(pg_shop, pg)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    src(pg, "UPDATE {src} SET v = 100 WHERE id = 1")
    with monkeypatch.context() as m:
        m.setattr(locations, "update_mirror", lambda *a, **k: None)
        run(cli)
    assert attrs(braze_env, "u1")["v"] == 100
    src(pg, "UPDATE {src} SET v = 1 WHERE id = 1; UPDATE {src} SET v = 7 WHERE id = 2")
    p = plan(cli)
    assert (counts(p), p["to_send"]) == ((0, 2, 0), 2), p
    run(cli)
    assert attrs(braze_env, "u1")["v"] == 1 and attrs(braze_env, "u2")["v"] == 7
    quiet(plan(cli))


# ---------------------------------------------------------------- kill -9

def test_kill_9_of_an_apply_mid_send_then_plan_and_run_again(pg_shop, pg, braze_env, capsys):
    """`reflow run` in a process of its own, killed (SIGKILL) once Braze has seen some of its requests: the next
    plans, on the mirror the dead process left, bring Braze to the model and then plan nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    n = 1500
    simple(pg_shop, pg, n=n)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    src(pg, "UPDATE {src} SET v = v + 1000")
    before = calls(braze_env)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "--project-dir", str(pg_shop), "--target", "pg", "run",
                             "--select", SYNC], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while calls(braze_env) < before + 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert killed, "the run ended before it was killed; the test proves little"
    for _ in range(3):
        p = plan(cli)
        if not p["to_send"]:
            break
        run(cli)
    quiet(plan(cli))
    wrong = [i for i in range(1, n + 1) if attrs(braze_env, f"u{i}")["v"] != i + 1000]
    assert not wrong, wrong[:10]
    # and a change after all that is seen
    src(pg, "UPDATE {src} SET v = 5 WHERE id = 5")
    p = plan(cli)
    assert counts(p) == (0, 1, 0), counts(p)


@pytest.mark.parametrize("location", ["local", "hashes", "warehouse"])
def test_a_list_of_timestamps_is_iso_text_in_every_location(pg_shop, pg, braze_env, capsys, location):
    """A timestamptz[] column (once refused in every location: its type was taken for a timestamp's) lands
    in Braze as an array of ISO texts in UTC to the millisecond; a change under the millisecond plans
    nothing (or only re-hashes), a millisecond is a change."""
    rows = ("INSERT INTO {src} VALUES (1, 'u1', ARRAY['2026-03-01 12:00:00.123456+02'::timestamptz, "
            "'1999-12-31 23:59:59+00']), (2, 'u2', NULL)")
    setup(pg_shop, pg, "id int PRIMARY KEY, ext text, a timestamptz[]", rows, {"seen": "a"}, location=location)
    cli = ShopCli(pg_shop, capsys, target="pg")
    run(cli, "--dbt-build")
    assert attrs(braze_env, "u1")["seen"] == ["2026-03-01T10:00:00.123Z", "1999-12-31T23:59:59.000Z"]
    quiet(plan(cli))
    src(pg, "UPDATE {src} SET a = ARRAY['2026-03-01 12:00:00.123999+02'::timestamptz, '1999-12-31 23:59:59+00'] "
            "WHERE id = 1")
    p = plan(cli)
    assert (p["added"], p["removed"], p["to_send"]) == (0, 0, 0), p
    run(cli)
    src(pg, "UPDATE {src} SET a = ARRAY['2026-03-01 12:00:00.124+02'::timestamptz] WHERE id = 1")
    p = plan(cli)
    assert (p["added"], p["changed"], p["removed"]) == (0, 1, 0), p
    run(cli)
    assert attrs(braze_env, "u1")["seen"] == ["2026-03-01T10:00:00.124Z"]
    quiet(plan(cli))
