"""The diff → plan → apply protocol against the in-memory destination."""

from __future__ import annotations

import threading

import pytest

from engine.destinations.memory import MemoryDestination
from engine.errors import GuardError, LockError, PlanError
from engine.runner import check_plan, require_unblocked
from engine.specs import Guards
from engine.state import State
from engine.state.plans import load_plan


def test_first_run_sends_everything_then_nothing(lab, run_once):
    lab.insert_people(200)
    sync, dest = lab.sync(), MemoryDestination()
    plan, result = run_once(sync, dest)
    s = plan.syncs[0]
    assert (s.counts.added, s.counts.changed, s.counts.removed, s.counts.unchanged) == (200, 0, 0, 0)
    assert s.requests == {"memory": 3} and s.first_run
    assert result.exit_code == 0 and result.syncs[0].acknowledged == 200
    assert len(dest.sent_items) == 200 and len(lab.snapshot()) == 200

    dest2 = MemoryDestination()
    plan2, result2 = run_once(sync, dest2)
    c = plan2.syncs[0].counts
    assert (c.added, c.changed, c.removed, c.unchanged) == (0, 0, 0, 200)
    assert not plan2.has_changes and dest2.received == []


def test_changed_rows_send_only_changed_fields(lab, run_once):
    lab.insert_people(50)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    lab.sql("update people_raw set tier = 'platinum' where id in ('p00001', 'p00002')")
    lab.sql("update people_raw set prefs = {'a': 99, 'tags': ['z']} where id = 'p00003'")
    lab.sql("update people_raw set name = null where id = 'p00004'")
    dest = MemoryDestination()
    plan, result = run_once(sync, dest)
    s = plan.syncs[0]
    assert (s.counts.added, s.counts.changed, s.counts.removed) == (0, 4, 0)
    fields = {f.field: (f.rows, f.nulled) for f in s.fields}
    assert fields == {"tier": (2, 0), "prefs": (1, 0), "name": (1, 1)}
    sent = {i["key"]: i["fields"] for i in dest.sent_items}
    assert sent == {"p00001": {"tier": "platinum"}, "p00002": {"tier": "platinum"},
                    "p00003": {"prefs": {"a": 99, "tags": ["z"]}}, "p00004": {"name": None}}
    assert lab.snapshot()["p00001"]["tier"] == "platinum"


def test_removed_rows_and_added_rows(lab, run_once):
    lab.insert_people(20)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    lab.sql("delete from people_raw where id in ('p00000', 'p00005')")
    lab.insert_people(3, start=100)
    dest = MemoryDestination()
    plan, _ = run_once(sync, dest)
    c = plan.syncs[0].counts
    assert (c.added, c.changed, c.removed, c.unchanged) == (3, 0, 2, 18)
    ops = sorted((i["op"], i["key"]) for i in dest.sent_items)
    assert ops[:3] == [("added", "p00100"), ("added", "p00101"), ("added", "p00102")]
    assert ops[3:] == [("removed", "p00000"), ("removed", "p00005")]
    snap = lab.snapshot()
    assert "p00000" not in snap and "p00101" in snap and len(snap) == 21


def test_removed_rows_not_sent_when_destination_ignores_them(lab, run_once):
    lab.insert_people(10)
    sync = lab.sync(on_removed="ignore")
    run_once(sync, MemoryDestination(sends_removed=False))
    lab.sql("delete from people_raw where id = 'p00001'")
    dest = MemoryDestination(sends_removed=False)
    plan, result = run_once(sync, dest)
    assert plan.syncs[0].counts.removed == 1 and plan.syncs[0].counts.not_sent == 1
    assert dest.received == [] and result.exit_code == 0
    assert "p00001" not in lab.snapshot()


def test_no_change_after_reordering_and_type_noise(lab, run_once):
    lab.insert_people(30)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    (lab.root / "models" / "people.sql").write_text(
        "select prefs, joined, score, tier, name, id from {{ ref('people_raw') }}\n")
    dest = MemoryDestination()
    plan, _ = run_once(sync, dest)
    assert not plan.has_changes and dest.received == []


def test_column_added_is_a_new_field_sent_where_it_has_a_value(lab, run_once):
    lab.insert_people(5)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    (lab.root / "models" / "people.sql").write_text(
        "select *, case when id < 'p00002' then 'x' end as extra from {{ ref('people_raw') }}\n")
    dest = MemoryDestination()
    plan, _ = run_once(sync, dest)
    assert plan.syncs[0].counts.changed == 2 and plan.syncs[0].counts.unchanged == 3
    assert {f.field for f in plan.syncs[0].fields} == {"extra"}
    assert sorted(i["key"] for i in dest.sent_items) == ["p00000", "p00001"]
    assert lab.snapshot()["p00004"]["extra"] is None          # recorded: the field is managed from now on
    assert plan_again(lab, sync).has_changes is False


@pytest.mark.parametrize("on_unmapped", ["keep", "unset"])
def test_a_field_no_longer_mapped_is_kept_or_unset_once(lab, run_once, on_unmapped):
    lab.insert_people(5)
    lab.sql("update people_raw set prefs = null where id = 'p00004'")
    sync = lab.sync(on_unmapped=on_unmapped)
    run_once(sync, MemoryDestination())
    (lab.root / "models" / "people.sql").write_text("select id, name, tier, score, joined from {{ ref('people_raw') }}\n")
    dest = MemoryDestination()
    plan, result = run_once(sync, dest)
    s = plan.syncs[0]
    assert s.unmapped == (("prefs", 4),) and s.on_unmapped == on_unmapped
    if on_unmapped == "keep":
        assert not s.has_changes and dest.received == []
    else:
        assert s.counts.changed == 4 and all(i["fields"] == {"prefs": None} for i in dest.sent_items)
    assert result.exit_code == 0
    assert all("prefs" not in row for row in lab.snapshot().values())      # forgotten either way
    again = plan_again(lab, sync)
    assert not again.has_changes and again.syncs[0].unmapped == ()


def plan_again(lab, sync):
    return lab.plan(sync, MemoryDestination())


def failure(plan, sync: str = "people") -> str:
    """The message of a sync the plan could not plan (the plan itself is saved without it)."""
    [failed] = [f for f in plan.failed if f.sync == sync]
    assert sync not in {s.name for s in plan.syncs}
    return failed.message


def test_rejected_rows_are_retried_and_never_enter_the_snapshot(lab, run_once):
    lab.insert_people(10)
    sync = lab.sync()
    dest = MemoryDestination(reject_keys={"p00003": "bad email"})
    plan, result = run_once(sync, dest)
    assert result.exit_code == 3 and result.syncs[0].rejected == 1
    assert "p00003" not in lab.snapshot() and len(lab.snapshot()) == 9
    dest2 = MemoryDestination()
    plan2, result2 = run_once(sync, dest2)
    c = plan2.syncs[0].counts
    assert (c.retry, c.added) == (1, 0)
    assert [i["key"] for i in dest2.sent_items] == ["p00003"] and result2.exit_code == 0
    assert "p00003" in lab.snapshot()


def test_invalid_rows_are_never_sent_and_stay_pending(lab, run_once):
    lab.insert_people(5)
    sync = lab.sync()
    dest = MemoryDestination(invalid_keys={"p00002": "email: 'x' is not a valid email address"})
    plan, result = run_once(sync, dest)
    s = plan.syncs[0]
    assert s.counts.invalid == 1 and s.invalid_samples[0][0] == "p00002"
    assert "p00002" not in {i["key"] for i in dest.sent_items}
    assert result.exit_code == 3
    with State.open(lab.project.state_path, command="t", read_only=True) as state:
        assert state.pending_count("people") == 1          # `reflow status` counts it, as apply did
    plan2, _ = run_once(sync, MemoryDestination())
    assert plan2.syncs[0].counts.retry == 1 and plan2.syncs[0].counts.added == 0


def test_stale_plan_is_refused(lab):
    lab.insert_people(5)
    sync = lab.sync()
    plan_a = lab.plan(sync, MemoryDestination())
    plan_b = lab.plan(sync, MemoryDestination())
    with State.open(lab.project.state_path, command="t") as state:
        with pytest.raises(PlanError, match="superseded"):
            check_plan(state, load_plan(state, plan_a.plan_id), {"people": plan_a.syncs[0].fingerprint})
    lab.apply(plan_b, sync, MemoryDestination())
    with State.open(lab.project.state_path, command="t") as state:
        with pytest.raises(PlanError, match="already applied"):
            check_plan(state, load_plan(state, plan_b.plan_id), {"people": plan_b.syncs[0].fingerprint})
        state.set_plan_status(plan_b.plan_id, "planned")
        with pytest.raises(PlanError, match="plan is stale, run `reflow plan` again"):
            check_plan(state, load_plan(state, plan_b.plan_id), {"people": plan_b.syncs[0].fingerprint})


def test_changed_spec_makes_the_plan_stale(lab):
    lab.insert_people(5)
    sync = lab.sync()
    plan = lab.plan(sync, MemoryDestination())
    with State.open(lab.project.state_path, command="t") as state:
        with pytest.raises(PlanError, match="the spec, the model or the destination of sync 'people' changed"):
            check_plan(state, load_plan(state, plan.plan_id), {"people": "different"})


def test_guards_block(lab):
    lab.insert_people(100)
    sync = lab.sync(guards=Guards(max_added=10))
    plan = lab.plan(sync, MemoryDestination())
    [g] = plan.syncs[0].guards
    assert g.blocked and (g.actual, g.limit) == (100, 10)
    with State.open(lab.project.state_path, command="t") as state:
        loaded = load_plan(state, plan.plan_id)
        check_plan(state, loaded, {"people": plan.syncs[0].fingerprint})       # not stale
        with pytest.raises(GuardError, match="max_added: 100 \\(limit 10\\) BLOCKED") as exc:
            require_unblocked(loaded)
        assert exc.value.exit_code == 4
        require_unblocked(loaded, ["max_added"])
    dest = MemoryDestination()
    result = lab.apply(plan, sync, dest)
    assert result.exit_code == 4 and dest.received == [] and "max_added" in (result.syncs[0].blocked or "")
    assert lab.snapshot() == {}


def test_removed_pct_guard_catches_a_wipe(lab, run_once):
    lab.insert_people(100)
    sync = lab.sync(guards=Guards(max_removed_pct=5))
    run_once(sync, MemoryDestination())
    lab.sql("delete from people_raw")
    plan = lab.plan(sync, MemoryDestination())
    [g] = plan.syncs[0].guards
    assert g.blocked and g.actual == 100.0


def test_null_and_duplicate_keys_stop_the_sync(lab):
    lab.insert_people(5)
    lab.insert_people(2)
    lab.sql("insert into people_raw (id, name) values (null, 'nobody')")
    text = failure(lab.plan(lab.sync(), MemoryDestination()))
    assert "1 row(s) have a null primary key (id)" in text
    assert "2 duplicate primary key value(s) (id); e.g. 'p00000' ×2, 'p00001' ×2" in text
    assert "Nothing was sent" in text


@pytest.mark.parametrize("obj", ["users", "events"])
@pytest.mark.parametrize("case", ["same_row_again", "changed_copy", "new_key_twice", "null_key"])
def test_key_problems_after_a_first_run_stop_the_sync(lab, run_once, obj, case):
    """With a snapshot in place the check comes from phase 1's counts (users) or its own pass
    (append-only): an exact copy of an already-sent row has the snapshot's hash and would slip
    through a check made only on the delta."""
    lab.insert_people(20)
    sync = lab.sync(object=obj, on_removed="ignore" if obj == "events" else "unset")
    dest = MemoryDestination(append_only=obj == "events")
    run_once(sync, dest)
    statement = {
        "same_row_again": "insert into people_raw select * from people_raw where id = 'p00003'",
        "changed_copy": "insert into people_raw select * replace ('other' as name) from people_raw where id = 'p00004'",
        "new_key_twice": "insert into people_raw (id, name) values ('p09999', 'a'), ('p09999', 'b')",
        "null_key": "insert into people_raw (id, name) values (null, 'nobody')",
    }[case]
    lab.sql(statement)
    message = failure(lab.plan(sync, MemoryDestination(append_only=obj == "events")))
    expected = {"same_row_again": "1 duplicate primary key value(s) (id); e.g. 'p00003' ×2",
                "changed_copy": "1 duplicate primary key value(s) (id); e.g. 'p00004' ×2",
                "new_key_twice": "1 duplicate primary key value(s) (id); e.g. 'p09999' ×2",
                "null_key": "1 row(s) have a null primary key (id)"}[case]
    assert expected in message


def test_rows_leaving_and_arriving_are_not_mistaken_for_duplicates(lab, run_once):
    lab.insert_people(30)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    lab.sql("delete from people_raw where id in ('p00001', 'p00002', 'p00003')")
    lab.insert_people(5, start=100)
    lab.sql("update people_raw set tier = 'z' where id = 'p00010'")
    plan = lab.plan(sync, MemoryDestination())
    c = plan.syncs[0].counts
    assert (c.total, c.added, c.changed, c.removed, c.unchanged) == (32, 5, 1, 3, 26)


def test_second_process_cannot_take_the_lock(lab):
    lab.insert_people(1)
    with State.open(lab.project.state_path, command="apply"):
        with pytest.raises(LockError, match=r"in use by another reflow run \(pid \d+ on .*`reflow apply` started"):
            with State.open(lab.project.state_path, command="plan"):
                pass


def test_append_only_changes_are_reported_not_resent(lab, run_once):
    lab.insert_people(10)
    sync = lab.sync(object="events", on_removed="ignore")
    run_once(sync, MemoryDestination(append_only=True))
    lab.sql("update people_raw set tier = 'x' where id = 'p00001'")
    lab.sql("delete from people_raw where id = 'p00002'")
    dest = MemoryDestination(append_only=True)
    plan, _ = run_once(sync, dest)
    assert dest.received == [] and plan.syncs[0].counts.changed == 1
    assert plan.syncs[0].counts.removed == 0     # a sent event leaving the model is history, not a removal
    assert any("append-only" in n for n in plan.syncs[0].notes)
    assert "p00002" in lab.snapshot()      # an event stays sent even when it leaves the model
    dest = MemoryDestination(append_only=True)
    plan, _ = run_once(sync, dest)
    assert plan.syncs[0].counts.changed == 0


def test_first_run_baseline_records_without_sending(lab, run_once):
    lab.insert_people(10)
    sync = lab.sync(first_run="baseline")
    dest = MemoryDestination()
    plan, _ = run_once(sync, dest)
    assert plan.syncs[0].counts.baseline == 10 and dest.received == []
    assert len(lab.snapshot()) == 10
    lab.insert_people(1, start=50)
    dest = MemoryDestination()
    run_once(sync, dest)
    assert [i["key"] for i in dest.sent_items] == ["p00050"]


def test_fatal_destination_error_records_what_was_acknowledged(lab, run_once):
    lab.insert_people(400)
    sync = lab.sync()
    dest = MemoryDestination(fail_after_batches=2, default_concurrency=1)
    plan, result = run_once(sync, dest)
    assert result.exit_code == 1 and "configured to fail" in (result.syncs[0].error or "")
    assert len(lab.snapshot()) == result.syncs[0].acknowledged == 150
    plan2, _ = run_once(sync, MemoryDestination())
    c = plan2.syncs[0].counts
    assert c.added + c.retry == 250 and c.retry == result.syncs[0].not_attempted   # rows tried come back as retries


def test_stop_event_finishes_in_flight_and_leaves_the_rest(lab):
    lab.insert_people(1000)
    sync = lab.sync()
    dest = MemoryDestination(latency=0.02, default_concurrency=2)
    plan = lab.plan(sync, dest)
    stop = threading.Event()
    calls = {"n": 0}

    def progress(name, done, total, requests):
        calls["n"] += 1
        if calls["n"] == 2:
            stop.set()

    result = lab.apply(plan, sync, dest, stop=stop, progress=progress)
    assert result.interrupted and result.exit_code == 130
    acked = result.syncs[0].acknowledged
    assert 0 < acked < 1000 and len(lab.snapshot()) == acked


def test_a_duckdb_upgrade_rehashes_from_stored_rows_without_resending(lab, run_once):
    lab.insert_people(40)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    with State.open(lab.project.state_path, command="t") as state:   # as if written by another DuckDB
        state.con.execute("update rstate.main.syncs set duckdb_version = '0.0.1', "
                          "hash_recipe = 'old'; update rstate.main.snap_1 set row_hash = row_hash + 1")
    lab.sql("update people_raw set tier = 'new' where id = 'p00003'")
    dest = MemoryDestination()
    plan, _ = run_once(sync, dest)
    c = plan.syncs[0].counts
    assert (c.changed, c.unchanged) == (1, 39)
    assert [i["key"] for i in dest.sent_items] == ["p00003"]
    dest = MemoryDestination()
    plan, _ = run_once(sync, dest)           # hashes were recorded: back to a plain no-change plan
    assert not plan.has_changes and dest.received == []


def test_composite_keys_a_postgresql_recipe_spelt_in_lowercase_are_respelled_once(lab, run_once):
    """PostgreSQL's recipes before v4 spelt nine JSON escapes of composite keys in lowercase (`\\u001f`), the
    local diff in uppercase: the snapshot's keys are respelled once, when its hashes are forgotten, so a
    sync moving to `local` (or to v4) keeps its rows: nothing removed, added or sent. A key holding the
    literal text `\\u001f` keeps it."""
    lab.insert_people(4)
    lab.sql("update people_raw set name = 'a' || chr(31) || 'b' || chr(11) where id = 'p00001'")
    lab.sql("update people_raw set name = '\\u001f' || chr(14) where id = 'p00002'")
    sync = lab.sync(primary_key=("id", "name"))
    run_once(sync, MemoryDestination())
    with State.open(lab.project.state_path, command="t") as state:   # as PostgreSQL's v3 recipe wrote it
        before = sorted(r[0] for r in state.con.execute("select key from rstate.main.snap_1").fetchall())
        assert '["p00001","a\\u001Fb\\u000B"]' in before and '["p00002","\\\\u001f\\u000E"]' in before
        state.con.execute("update rstate.main.syncs set hash_recipe = 'postgres-hte/v3'")
        for code in ("001F", "000B", "000E"):
            state.con.execute(f"update rstate.main.snap_1 set key = replace(key, '\\u{code}', '\\u{code.lower()}')")
    dest = MemoryDestination()
    plan, _ = run_once(sync, dest)
    c = plan.syncs[0].counts
    assert (c.added, c.removed, c.changed) == (0, 0, 0), c
    assert dest.received == []
    with State.open(lab.project.state_path, command="t") as state:
        assert sorted(r[0] for r in state.con.execute("select key from rstate.main.snap_1").fetchall()) == before


def test_sub_millisecond_and_timezone_noise_is_no_change(lab, run_once):
    lab.insert_people(5)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    lab.sql("update people_raw set joined = joined + interval 300 microseconds")
    plan, _ = run_once(sync, MemoryDestination())
    assert not plan.has_changes


def test_a_new_destination_starts_the_sync_over_and_refuses_older_plans(lab, run_once):
    """The snapshot belongs to one destination (endpoint, object, catalog, identifier, primary key): a
    change of any of it plans every row again under first_run, sends no removal for the old rows, says
    so in one line, and makes plans made before stale."""
    lab.insert_people(10)
    sync = lab.sync()
    run_once(sync, MemoryDestination(identity={"object": "users", "catalog": "a"}))
    old = lab.plan(sync, MemoryDestination(identity={"object": "users", "catalog": "a"}))
    moved = MemoryDestination(identity={"object": "users", "catalog": "b"})
    plan = lab.plan(sync, moved)
    s = plan.syncs[0]
    assert s.restart == "destination changed: catalog a → b; the sync starts again"
    assert s.first_run and (s.counts.added, s.counts.removed, s.counts.unchanged) == (10, 0, 0)
    with State.open(lab.project.state_path, command="t") as state:
        with pytest.raises(PlanError, match="superseded|stale"):
            check_plan(state, load_plan(state, old.plan_id), {"people": old.syncs[0].fingerprint})
    result = lab.apply(plan, sync, moved)
    assert result.exit_code == 0 and len(moved.sent_items) == 10
    assert all(i["op"] == "added" for i in moved.sent_items)
    assert not lab.plan(sync, MemoryDestination(identity={"object": "users", "catalog": "b"})).has_changes
