"""`reflow show` lists exactly the rows and payloads that `reflow apply` then sends."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import Counter
from typing import Any

import pytest

from engine.destinations.braze.destination import BrazeDestination

pytestmark = pytest.mark.e2e


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str, str]]:
    """Every (sync, key, item JSON) handed to Braze, recorded on the way out."""
    bodies: Counter[tuple[str, str, str]] = Counter()
    lock = threading.Lock()
    original = BrazeDestination.send

    def recording_send(self: BrazeDestination, batch: Any) -> Any:
        with lock:
            bodies.update((self.sync.name, k, item) for k, item in zip(batch.keys, batch.items, strict=True))
        return original(self, batch)

    monkeypatch.setattr(BrazeDestination, "send", recording_send)
    return bodies


def shown(cli: Any, *args: str) -> list[dict[str, Any]]:
    code, out, err = cli("show", "--limit", "0", "--format", "jsonl", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def check_show_equals_apply(cli: Any, sent: Counter[tuple[str, str, str]], plan: dict[str, Any]) -> None:
    rows = shown(cli)
    expected = Counter((r["sync"], r["key"], json.dumps(r["payload"], separators=(",", ":"), ensure_ascii=False))
                       for r in rows if r["payload"] is not None)
    # payload_json is not in the JSON form; compare parsed payloads against parsed bodies
    sent.clear()
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    delivered = Counter((s, k, json.dumps(json.loads(item), separators=(",", ":"), ensure_ascii=False))
                        for (s, k, item), times in sent.items() for _ in range(times))
    assert delivered == expected
    # and the row counts per kind agree with the plan's summary
    kinds = Counter((r["sync"], r["kind"]) for r in rows)
    for s in plan["syncs"]:
        for kind in ("added", "changed", "removed", "retry", "invalid"):
            assert kinds.get((s["name"], kind), 0) == s[kind], (s["name"], kind)


def test_show_lists_exactly_what_apply_sends(cli, braze_env, sent):
    code, out, err = cli("plan", "--json")
    assert code == 0, err
    check_show_equals_apply(cli, sent, json.loads(out))

    assert cli("example", "mutate")[0] == 0
    code, out, err = cli("plan", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["totals"]["changed"] and plan["totals"]["removed"]
    check_show_equals_apply(cli, sent, plan)


def test_show_filters_and_formats(cli, braze_env):
    assert cli("plan")[0] == 0 and cli("apply", "--yes")[0] == 0
    assert cli("example", "mutate")[0] == 0
    code, out, err = cli("plan", "--json")
    plan = json.loads(out)
    users = next(s for s in plan["syncs"] if s["name"] == "braze_users")
    tier = next(f for f in users["fields"] if f["field"] == "loyalty_tier")

    rows = shown(cli, "--sync", "braze_users", "--field", "loyalty_tier")
    assert len(rows) == tier["rows"]
    for r in rows:
        assert "loyalty_tier" in r["changed"] and r["kind"] in ("changed", "retry")
        assert r["payload"]["loyalty_tier"] == r["diff"]["loyalty_tier"]["new"]
        assert r["diff"]["loyalty_tier"]["old"] == r["old"]["loyalty_tier"]

    one = rows[0]["key"]
    [row] = shown(cli, "--key", one, "--sync", "braze_users")
    assert row["key"] == one

    code, out, _ = cli("show", "--sync", "braze_users", "--op", "removed", "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith(f"2 rows of {users['removed']} matching")
    assert sum(1 for line in lines if line.startswith("braze_users removed ")) == 2
    assert sum(1 for line in lines if line.startswith("  payload: ")) == 2

    code, out, _ = cli("show", "--sync", "braze_users", "--op", "changed", "--format", "csv", "--limit", "0")
    records = list(csv.DictReader(io.StringIO(out)))
    assert len(records) == users["changed"]
    assert all(json.loads(r["payload"])["external_id"] == r["key"] for r in records)

    code, out, err = cli("show", "--sync", "nope")
    assert code == 1 and "no sync 'nope'" in err and "Traceback" not in err


def test_errors_and_history_formats(cli, braze_env, monkeypatch):
    from engine.destinations.base import REJECTED, RowResult

    original = BrazeDestination.send

    def reject_c_00002(self: BrazeDestination, batch: Any) -> Any:
        results = list(original(self, batch))
        return [RowResult(r.key, REJECTED, "'email' is invalid (test)") if r.key == "c_00002" and self.sync.name == "braze_users" else r
                for r in results]

    monkeypatch.setattr(BrazeDestination, "send", reject_c_00002)
    assert cli("plan")[0] == 0
    code, out, err = cli("apply", "--yes")
    assert code == 3, out + err                     # finished with undelivered rows
    assert "braze_users: 285 acknowledged, 1 rejected" in out
    assert "`reflow errors`" in out

    code, out, _ = cli("errors", "braze_users")
    lines = out.splitlines()
    assert lines[0].startswith("1 rejected row")
    assert any("'email' is invalid (test)" in line and line.rstrip().endswith("1") for line in lines)
    assert any(line.startswith("braze_users c_00002 (run run_") for line in lines)
    sent_line = next(line for line in lines if line.startswith("  sent: "))
    assert json.loads(sent_line[len("  sent: "):])["external_id"] == "c_00002"

    code, out, _ = cli("errors", "--json")
    [row] = [r for r in json.loads(out) if r["sync"] == "braze_users"]
    assert row["key"] == "c_00002" and row["payload"]["external_id"] == "c_00002" and row["at"].endswith("Z")
    code, out, _ = cli("errors", "braze_users", "--format", "csv")
    records = list(csv.DictReader(io.StringIO(out)))
    assert [(r["sync"], r["key"]) for r in records] == [("braze_users", "c_00002")]
    assert json.loads(records[0]["payload"]) == row["payload"]
    code, out, _ = cli("errors", "braze_users", "--format", "jsonl")
    assert [json.loads(x)["key"] for x in out.splitlines()] == ["c_00002"]

    code, out, _ = cli("history", "--json")
    runs = json.loads(out)
    users_run = next(r for r in runs if r["sync"] == "braze_users")
    assert (users_run["acknowledged"], users_run["rejected"], users_run["status"]) == (285, 1, "partial")
    assert users_run["duration_seconds"] >= 0 and users_run["started_at"].endswith("Z")
    code, out, _ = cli("history", "braze_users")
    header, first = out.splitlines()[:2]
    assert header.split()[:5] == ["run", "sync", "started", "duration", "outcome"]
    assert "partial" in first.split() and "285" in first.split()

    # the rejected row is retried by the next plan, and show lists it as a retry
    monkeypatch.setattr(BrazeDestination, "send", original)
    code, out, _ = cli("plan", "--json")
    users = next(s for s in json.loads(out)["syncs"] if s["name"] == "braze_users")
    assert users["retry"] == 1
    [row] = shown(cli, "--op", "retry", "--sync", "braze_users")
    assert row["key"] == "c_00002" and row["payload"]["external_id"] == "c_00002"
