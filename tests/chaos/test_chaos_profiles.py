"""Profiles before objects under faults: alias-identified events (whose profile Reflow creates first) and
an update-only users sync (whose rows wait for the profile another sync creates) while Braze applies
requests then fails them, drops connections, answers 5xx and shows new profiles only after a delay.

Invariant once the faults stop and `reflow run` is repeated until nothing is left: no alias event and
no update-only row is lost; an event landed more than once only when a request holding it was applied
while the client could not learn it (each such request can add at most its own rows)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import yaml
from braze_checks import model_rows
from faulty_sandbox import FaultySandbox, run_until_clean

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

FAULTS = {"process_then_fail_rate": 0.1, "fail_5xx_rate": 0.1, "drop_connection_rate": 0.05,
          "visibility_delay_ms": 1000}
TIER_UPDATES = {
    "name": "tier_updates", "model": "braze_users", "primary_key": "customer_id",
    "destination": {"connection": "braze", "object": "users", "mode": "update",
                    "identifier": {"external_id": "customer_id"}, "fields": {"tier_mirror": "loyalty_tier"}},
}


def alias_events(project: Any) -> None:
    path = project / "syncs" / "order_events.yml"
    doc = yaml.safe_load(path.read_text())
    doc["destination"]["identifier"] = {"user_alias": {"alias_name": "customer_id", "alias_label": "crm"}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    (project / "syncs" / "tier_updates.yml").write_text(yaml.safe_dump(TIER_UPDATES, sort_keys=False))
    project_file = project / "reflow_project.yml"
    project_file.write_text(project_file.read_text() + "    export_rate_limit: 1000\n")


def test_alias_events_and_update_only_rows_survive_faults(cli, chaos_project, faulty: FaultySandbox,
                                                          record_property):
    alias_events(chaos_project)
    faulty.set(**FAULTS)
    code, out, err = cli("run")
    assert "Traceback" not in err, err
    assert code in (0, 3), f"exit {code}: {out}{err}"
    faulty.set()
    runs = run_until_clean(cli)

    # every update-only row landed on the profile the users sync created, whatever the order
    users = model_rows(chaos_project, "braze_users")
    for row in users:
        profile = faulty.user(row["customer_id"])
        assert profile is not None, row["customer_id"]
        if row["loyalty_tier"] is not None:
            assert profile["custom_attributes"].get("tier_mirror") == row["loyalty_tier"], row["customer_id"]

    # every alias event landed on its alias profile; extra copies only from requests Braze applied unanswered
    orders = {r["order_id"]: r["customer_id"] for r in model_rows(chaos_project, "order_events")}
    alias_of = {u["braze_id"]: a["alias_name"] for u in faulty.users() for a in u["user_aliases"]
                if a["alias_label"] == "crm"}
    landed = Counter()
    for event in faulty.events():
        order = event["properties"]["order_id"]
        assert alias_of.get(event["braze_id"]) == orders[order], event
        landed[order] += 1
    assert set(landed) == set(orders), sorted(set(orders) - set(landed))[:5]
    bound: Counter[str] = Counter()
    for request in faulty.applied_then_failed():
        body = request["body"] if isinstance(request["body"], dict) else {}
        bound.update(e.get("properties", {}).get("order_id") for e in body.get("events") or [])
    extras = {o: n - 1 for o, n in landed.items() if n > 1}
    assert all(n <= bound[o] for o, n in extras.items()), extras
    assert faulty.applied_then_failed(), "no request was applied then failed; the test proves little"
    measured = {"runs_after_faults": len(runs), "events": len(orders), "extra_copies": sum(extras.values()),
                "applied_then_failed": len(faulty.applied_then_failed())}
    record_property("chaos", json.dumps(measured))
    print("chaos", json.dumps(measured))
