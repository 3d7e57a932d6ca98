"""`first_run: baseline` holds a first run's rows typed (`plan_rows.HeldRows`) instead of writing each
row's JSON into the plan: what `apply` records, `show` lists and the next plan diffs against must be
exactly what the diff's own rendering gives, and the held tables must come and go with their plans."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Lab

from engine.destinations.memory import MemoryDestination
from engine.show import plan_rows
from engine.state import State

MANY_TYPES = """
    create or replace table people_raw as select
      'p' || lpad(i::varchar, 5, '0') as id,
      case when i % 7 = 0 then null else 'name "' || i || '" \\ é ' || chr(10) end as name,
      (i * 1.25)::decimal(12, 3) as balance,
      case i % 5 when 0 then 'nan'::double when 1 then 'inf'::double when 2 then -0.0 else i / 3 end as score,
      date '1969-12-31' + i::int as born,
      timestamp '2024-03-31 01:59:59.999999' + to_seconds(i) as seen,
      timestamptz '2024-10-27 00:30:00.123456+00' + to_minutes(i) as signed_up,
      [timestamptz '2020-01-01 00:00:00.0005+00', null] as times,
      {'a': i::int, 'tags': ['x', null, 'é']} as prefs,
      map {'k' || i: i, 'a': 1} as counts,
      uuid '00000000-0000-0000-0000-000000000001' as token,
      to_hours(i::bigint) as waited,
      i % 2 = 0 as vip,
      '\\x00\\xff'::blob as raw,
      time '23:59:59.5' as at_time
    from range(40) t(i)
"""


def snapshot_texts(lab: Lab) -> dict[str, str]:
    with State.open(lab.project.state_path, command="test", read_only=True) as state:
        st = state.sync("people")
        assert st is not None
        return dict(state.con.execute(f"select key, row_json from {st.table}").fetchall())


def held_tables(lab: Lab) -> list[str]:
    with State.open(lab.project.state_path, command="test", read_only=True) as state:
        return [r[0] for r in state.con.execute(
            "select table_name from duckdb_tables() where database_name = 'rstate' "
            "and starts_with(table_name, 'plan_held_') order by table_name").fetchall()]


@pytest.mark.parametrize("location", ["local", "hashes"])
def test_a_baseline_records_the_json_a_sent_first_run_records(tmp_path: Path, location: str):
    """Every type the diff normalises (times in other zones, NaN, ±inf, -0.0, maps, nested nulls, blobs,
    intervals, escapes): the snapshot a held baseline records is byte for byte the one a first run that
    sends (rendered by phase 2) records, and the next plan of either plans nothing."""
    texts = {}
    for first_run in ("baseline", "send_all"):
        (tmp_path / first_run).mkdir()
        lab = Lab(tmp_path / first_run)
        lab.sql(MANY_TYPES)
        lab.project = replace(lab.project, warehouse=replace(lab.project.warehouse, diff=location))
        sync = lab.sync(first_run=first_run)
        dest = MemoryDestination()
        plan = lab.plan(sync, dest)
        lab.apply(plan, sync, dest)
        assert plan.syncs[0].counts.baseline == (40 if first_run == "baseline" else 0)
        assert plan.syncs[0].read["diff"] == location
        texts[first_run] = snapshot_texts(lab)
        again = lab.plan(sync, MemoryDestination()).syncs[0].counts
        assert (again.added, again.changed, again.removed) == (0, 0, 0), first_run
    sent = texts["send_all"]
    assert sent, "rows were sent"
    # rows the destination refuses (NaN, ±inf) are not recorded by a send: compare the rows both hold
    assert len(texts["baseline"]) == 40 and set(sent) <= set(texts["baseline"])
    assert {k: texts["baseline"][k] for k in sent} == sent


def test_show_lists_a_held_baseline_and_apply_records_it(lab, run_once):
    lab.insert_people(25)
    sync = lab.sync(first_run="baseline")
    dest = MemoryDestination()
    plan = lab.plan(sync, dest)
    sp = plan.syncs[0]
    assert (sp.counts.baseline, sp.seq_max - sp.seq_min + 1) == (25, 25)
    with State.open(lab.project.state_path, command="show", read_only=True) as state:
        rows = plan_rows(state, plan, limit=0)
        page = plan_rows(state, plan, limit=3)
        one = plan_rows(state, plan, key="p00007", limit=0)
    assert len(rows) == 25 and {r["status"] for r in rows} == {"baseline"} and len(page) == 3
    assert sorted(r["key"] for r in rows) == [f"p{i:05d}" for i in range(25)]
    assert [r["key"] for r in one] == ["p00007"] and one[0]["new"]["name"] == "name 7"
    lab.apply(plan, sync, dest)
    assert dest.received == [] and lab.snapshot()["p00007"]["tier"] == "silver"


def test_two_baseline_plans_keep_their_own_rows_and_old_plans_drop_theirs(lab):
    """Each plan's held rows have seqs of their own (a second plan never takes the first one's table);
    pruning a plan drops its held table."""
    lab.insert_people(5)
    sync = lab.sync(first_run="baseline")
    first = lab.plan(sync, MemoryDestination())
    lab.insert_people(2, start=10)
    second = lab.plan(sync, MemoryDestination())
    a, b = first.syncs[0], second.syncs[0]
    assert b.seq_min > a.seq_max and (a.counts.baseline, b.counts.baseline) == (5, 7)
    with State.open(lab.project.state_path, command="show", read_only=True) as state:
        assert len(plan_rows(state, first, limit=0)) == 5 and len(plan_rows(state, second, limit=0)) == 7
    for _ in range(11):
        lab.plan(sync, MemoryDestination())
    assert len(held_tables(lab)) == 10          # the ten newest plans keep theirs


def test_a_baseline_with_repeated_keys_is_refused_and_holds_nothing(lab):
    lab.insert_people(5)
    lab.insert_people(1, start=3)
    sync = lab.sync(first_run="baseline")
    plan = lab.plan(sync, MemoryDestination())
    assert [f.sync for f in plan.failed] == ["people"] and "p00003" in plan.failed[0].message
    assert held_tables(lab) == []


def test_a_held_row_holding_a_secret_in_a_number_is_refused(lab, monkeypatch):
    """A secret made of digits is found in a number column too (the search of plain values is kept for
    secrets that could be spelt by them); the row is refused, never held, the rest recorded."""
    from engine import errors

    lab.insert_people(5)
    monkeypatch.setattr(errors, "_secrets", ("1234567.5",))
    lab.sql("update people_raw set score = 1234567.5 where id = 'p00002'")
    sync = lab.sync(first_run="baseline")
    plan = lab.plan(sync, MemoryDestination())
    c = plan.syncs[0].counts
    assert (c.baseline, c.invalid) == (4, 1)
    with State.open(lab.project.state_path, command="show", read_only=True) as state:
        [refused] = plan_rows(state, plan, op="invalid", limit=0)
    assert refused["key"] == "p00002" and "score" in (refused["reason"] or "")
    assert b"1234567.5" not in lab.project.state_path.read_bytes()


def test_empty_baseline_plans_then_rows_keep_their_held_table(lab):
    """A baseline of an empty model holds nothing and takes no seq (found by a sceptical run: its held
    table took the name the next plan's table then took, and pruning the old plan dropped the new one's
    rows: apply failed and recorded nothing)."""
    sync = lab.sync(first_run="baseline")
    for _ in range(10):
        dest = MemoryDestination()
        lab.apply(lab.plan(sync, dest), sync, dest)
    assert held_tables(lab) == []
    lab.insert_people(5)
    dest = MemoryDestination()
    plan = lab.plan(sync, dest)
    assert plan.syncs[0].counts.baseline == 5
    lab.apply(plan, sync, dest)
    assert dest.received == [] and len(lab.snapshot()) == 5


def test_a_field_named_with_a_secret_is_refused_as_a_sent_first_run_refuses_it(tmp_path: Path, monkeypatch):
    """Field names are recorded in the plan and the state (a sceptical run found the held baseline
    recording the secret as a key of every snapshot row): a model column named with the key stops the
    sync in both first-run modes, naming the column by its position, and nothing is held, recorded or sent."""
    from engine import errors

    key = "SECRETKEY-1234567890abcdef"
    monkeypatch.setattr(errors, "_secrets", ())
    errors.register_secret(key)
    outcome = {}
    for first_run in ("baseline", "send_all"):
        (tmp_path / first_run).mkdir()
        lab = Lab(tmp_path / first_run)
        lab.sql(f"""create or replace table people_raw as select 'p' || i as id, i as "{key}" from range(3) t(i)""")
        sync = lab.sync(first_run=first_run)
        dest = MemoryDestination()
        plan = lab.plan(sync, dest)
        [failure] = plan.failed
        assert "its name holds a secret value" in failure.message and key not in failure.message, failure
        outcome[first_run] = (len(plan.syncs), len(lab.snapshot()), len(dest.received), held_tables(lab))
        assert key.encode() not in lab.project.state_path.read_bytes()
    assert outcome["baseline"] == outcome["send_all"] == (0, 0, 0, []), outcome


def test_a_plan_dying_while_it_holds_a_baseline_leaves_no_table(lab, monkeypatch):
    """The held table and its registration are written in one transaction: a plan that dies between the
    two (a sceptical run killed one there: the table, every model row in it, stayed in the state for
    good, named by no plan, never pruned) leaves neither."""
    from engine.state import plan_rows as module

    class Dying:
        @staticmethod
        def dumps(value: object) -> str:
            raise KeyboardInterrupt("killed between the table and its registration")

        loads = staticmethod(__import__("json").loads)

    lab.insert_people(5)
    sync = lab.sync(first_run="baseline")
    monkeypatch.setattr(module, "json", Dying)
    with pytest.raises(KeyboardInterrupt):
        lab.plan(sync, MemoryDestination())
    monkeypatch.undo()
    assert held_tables(lab) == []
    dest = MemoryDestination()
    plan = lab.plan(sync, dest)
    lab.apply(plan, sync, dest)
    assert len(lab.snapshot()) == 5 and len(held_tables(lab)) == 1


def test_a_model_failing_while_its_rows_are_held_is_named(lab):
    """The model fails on one row while the baseline holds its rows (inside the hold's transaction): the
    plan names the model's error, not the state file (the compression setting put back inside the
    aborted transaction hid it behind "cannot write the state file"), and holds nothing."""
    lab.insert_people(5)
    (lab.root / "models" / "people.sql").write_text(
        "select *, tier::int as broken from {{ ref('people_raw') }}\n")
    plan = lab.plan(lab.sync(first_run="baseline"), MemoryDestination())
    [failed] = plan.failed
    assert "model 'people'" in failed.message and "Could not convert string" in failed.message, failed
    assert "state file" not in failed.message, failed
    assert held_tables(lab) == []


def test_rows_landed_are_held_in_any_order_yet_numbered_once(tmp_path: Path):
    """Rows landed from a warehouse outside this process are held as each DuckDB thread writes them
    (`plan_rows.in_any_order`): across many row groups their rowids (the plan's seq numbers) still number
    them 0..n-1 with every key once, and DuckDB's order is put back afterwards, after a failing read too
    (the connection plans the next syncs and runs their models)."""
    from engine.state.plan_rows import SyncRows

    n = 400_000
    rows = f"SELECT 'k' || i AS __key, hash(i) AS __hash, i AS v, false AS __refused FROM range({n}) t(i)"
    with State.open(tmp_path / "state.duckdb", command="test") as state:
        con = state.con
        held = SyncRows(con, "plan-1", "s", state.next_seq()).hold(rows, [("v", "BIGINT")], landed=True)
        assert held.held is not None
        numbered = con.execute(f"select count(*), count(distinct rowid), min(rowid), max(rowid), "
                               f"count(distinct __key) from {held.held.table}").fetchone()
        assert numbered == (n, n, 0, n - 1, n)
        assert held.held_keys() == (n, 0, n, 0)
        assert con.execute("select current_setting('preserve_insertion_order')").fetchone() == (True,)
        failing = rows.replace("i AS v", "CASE WHEN i = 300000 THEN error('model failed') ELSE i END AS v")
        with pytest.raises(Exception, match="model failed"):
            SyncRows(con, "plan-2", "s", state.next_seq()).hold(failing, [("v", "BIGINT")], landed=True)
        assert con.execute("select current_setting('preserve_insertion_order')").fetchone() == (True,)


def test_a_model_with_a_limit_and_no_order_holds_the_rows_later_plans_read(lab):
    """A model run in this process inside the hold (the embedded DuckDB) keeps DuckDB's insertion order:
    without it, a `LIMIT` with no `ORDER BY` returns other rows (the threads race), the first run would
    record rows the next plan no longer reads, and that plan would remove and add rows nothing changed."""
    lab.sql("insert into people_raw select 'p' || i, 'name ' || i, 'gold', i * 1.5, timestamp '2024-01-01', "
            "{'a': i::int, 'tags': ['x']} from range(900000) t(i)")
    (lab.root / "models" / "people.sql").write_text(
        "select * from {{ ref('people_raw') }} where score % 3 <> 0 limit 300000\n")
    sync = lab.sync(first_run="baseline")
    dest = MemoryDestination()
    plan = lab.plan(sync, dest)
    assert not plan.failed, plan.failed
    lab.apply(plan, sync, dest)
    counts = lab.plan(sync, dest).syncs[0].counts
    assert (counts.total, counts.added, counts.changed, counts.removed) == (300_000, 0, 0, 0)
