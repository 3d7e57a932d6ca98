"""A send whose outcome Reflow could not learn is not trusted: what it may have changed is planned again.

The story each test tells: a bad load goes out, Braze applies it but Reflow never learns so (an answer
lost after a timeout, a 5xx, kill -9), then the warehouse is put back. Before, the snapshot still held
the good values, the plan said "No changes" and Braze kept the bad ones for good.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.destinations.memory import MemoryDestination
from engine.state import UNKNOWN, State

WORKER = Path(__file__).with_name("kill_worker.py")
PUT_BACK = "update people_raw set tier = ['bronze','silver','gold'][1 + cast(substr(id, 2) as int) % 3]"


def tier_of(key: str) -> str:
    return ["bronze", "silver", "gold"][int(key[1:]) % 3]


def braze(log: Path) -> dict[str, dict[str, object]]:
    """What the destination holds: every payload it applied, replayed in order."""
    held: dict[str, dict[str, object]] = {}
    for line in log.read_text().splitlines():
        item = json.loads(line)
        held.setdefault(item["key"], {}).update(item["fields"])
    return held


def test_an_answer_lost_then_the_warehouse_put_back_restores_braze(lab, run_once):
    lab.insert_people(20)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    lab.sql("update people_raw set tier = 'bad'")
    lost = MemoryDestination(unknown_batches={0})            # applied, but the answer never came
    plan, result = run_once(sync, lost)
    assert result.exit_code == 3 and result.syncs[0].unknown == 20 and result.syncs[0].acknowledged == 0
    assert all(json.loads(item)["fields"] == {"tier": "bad"} for item in lost.acknowledged.values())
    assert lab.snapshot()["p00001"]["tier"] == UNKNOWN       # neither the old value nor the new one

    lab.sql(PUT_BACK)
    fix = MemoryDestination()
    plan, result = run_once(sync, fix)
    c = plan.syncs[0].counts
    assert (c.retry, c.changed, c.added) == (20, 0, 0)       # retried, though the model equals the old snapshot
    assert {i["key"]: i["fields"] for i in fix.sent_items} == {f"p{i:05d}": {"tier": tier_of(f"p{i:05d}")}
                                                               for i in range(20)}
    assert result.exit_code == 0 and lab.snapshot()["p00001"]["tier"] == "silver"
    assert not lab.plan(sync, MemoryDestination()).has_changes


def test_rows_answered_are_never_uncertain(lab, run_once):
    lab.insert_people(10)
    sync = lab.sync()
    run_once(sync, MemoryDestination())
    lab.sql("update people_raw set tier = 'x'")
    run_once(sync, MemoryDestination(reject_keys={"p00001": "bad"}))
    snap = lab.snapshot()
    assert snap["p00001"]["tier"] == "silver" and snap["p00002"]["tier"] == "x"   # rejected: old value, known
    assert UNKNOWN not in json.dumps(snap)


def test_an_uncertain_addition_later_removed_is_still_removed(lab, run_once):
    lab.insert_people(5)
    sync = lab.sync()
    run_once(sync, MemoryDestination(unknown_batches={0}, identity_fields=("id",)))
    row = lab.snapshot()["p00003"]
    assert row["id"] == "p00003" and row["tier"] == UNKNOWN    # what names the user is known either way
    lab.sql("delete from people_raw where id = 'p00003'")
    dest = MemoryDestination(identity_fields=("id",))
    plan, _ = run_once(sync, dest)
    sent = {i["key"]: i for i in dest.sent_items}
    assert sent["p00003"]["op"] == "removed"                  # Braze may hold it: the removal goes out
    assert sent["p00001"]["op"] == "changed" and sent["p00001"]["fields"]["tier"] == "silver"
    assert "p00003" not in lab.snapshot()


def test_an_uncertain_membership_addition_is_unknown_but_a_changed_one_keeps_its_identity(lab, run_once):
    """Capabilities.membership (cohorts): an added row sent without an answer may not be a member, so the
    fields naming it are UNKNOWN too (the next plan sends it again as entering); a changed row's unanswered
    send leaves only its changed fields UNKNOWN (a cohort's rename: the member is known to be in)."""
    lab.insert_people(4)
    sync = lab.sync()
    run_once(sync, MemoryDestination(unknown_batches={0}, identity_fields=("id",), membership=True))
    assert set(lab.snapshot()["p00001"].values()) == {UNKNOWN}
    again = MemoryDestination(identity_fields=("id",), membership=True)
    run_once(sync, again)
    assert {i["key"] for i in again.sent_items} == {f"p{i:05d}" for i in range(4)}
    assert lab.snapshot()["p00001"]["id"] == "p00001" and lab.snapshot()["p00001"]["tier"] == "silver"
    lab.sql("update people_raw set tier = 'bad'")
    run_once(sync, MemoryDestination(unknown_batches={0}, identity_fields=("id",), membership=True))
    row = lab.snapshot()["p00001"]
    assert row["id"] == "p00001" and row["tier"] == UNKNOWN and row["name"] != UNKNOWN


def run_worker(root: Path, log: Path, kill_on: int) -> int:
    done = subprocess.run([sys.executable, str(WORKER), str(root), str(log), str(kill_on)],
                          capture_output=True, text=True, timeout=120, check=False)
    return done.returncode


def test_kill_9_after_braze_applied_a_request_then_put_back(lab):
    lab.insert_people(30)
    log = lab.root / "braze.jsonl"
    assert run_worker(lab.root, log, kill_on=-1) == 0       # 3 requests of 10
    lab.sql("update people_raw set tier = 'bad'")
    assert run_worker(lab.root, log, kill_on=1) == -9       # the 2nd request applied, then SIGKILL
    assert sum(1 for v in braze(log).values() if v["tier"] == "bad") == 20
    lab.sql(PUT_BACK)
    assert run_worker(lab.root, log, kill_on=-1) == 0
    held = braze(log)
    assert {k: v["tier"] for k, v in held.items()} == {k: tier_of(k) for k in held}
    with State.open(lab.project.state_path, command="t", read_only=True) as state:
        runs = state.runs("people")
    statuses = [r["status"] for r in reversed(runs)]
    assert statuses == ["succeeded", "interrupted", "succeeded"]       # not "running" forever
    assert not run_worker(lab.root, log, kill_on=-1)                   # and now nothing is left
