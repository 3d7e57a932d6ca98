"""/users/delete by email or phone with Braze's ordered `prioritization`, and what `deleted` counts."""

from __future__ import annotations

import pytest

EMAIL = "a@x.com"
PHONE = "+15555550123"


def by_email(*prioritization, email=EMAIL):
    return {"email_addresses": [{"email": email, "prioritization": list(prioritization)}]}


def anon(**contact):
    """An unidentified profile with that email/phone (an alias profile: a lookup by email would find
    an existing profile instead of creating one)."""
    return {"user_alias": {"alias_name": "anon", "alias_label": "l"}, "_update_existing_only": False,
            "name": "anon", **contact}


def ids(sandbox):
    return sorted(str(u["external_id"] or u["custom_attributes"].get("name")) for u in sandbox.users())


def profiles(client, *specs):
    """One /users/track per profile, in order (so the last one is the most recently updated)."""
    for spec in specs:
        client.track(attributes=[spec])


def test_identified_prefers_the_profile_with_an_external_id(client, sandbox):
    profiles(client, anon(email=EMAIL), {"external_id": "u1", "email": EMAIL})
    r = client.post("/users/delete", by_email("identified"))
    assert r.json() == {"deleted": 1, "message": "success"}
    assert ids(sandbox) == ["anon"]


def test_unidentified_prefers_the_profile_without_one(client, sandbox):
    profiles(client, anon(email=EMAIL), {"external_id": "u1", "email": EMAIL})
    assert client.post("/users/delete", by_email("unidentified")).json()["deleted"] == 1
    assert ids(sandbox) == ["u1"]


def test_a_single_match_is_deleted_whatever_the_preference(client, sandbox):
    profiles(client, anon(email=EMAIL))
    assert client.post("/users/delete", by_email("identified")).json()["deleted"] == 1
    assert sandbox.users() == []


def test_several_identified_matches_delete_nothing(client, sandbox):
    profiles(client, {"external_id": "u1", "email": EMAIL}, {"external_id": "u2", "email": EMAIL},
             anon(email=EMAIL))
    r = client.post("/users/delete", by_email("identified"))
    assert r.json() == {"deleted": 0, "message": "success"}
    assert ids(sandbox) == ["anon", "u1", "u2"]


def test_then_most_recently_updated_breaks_the_tie(client, sandbox):
    profiles(client, {"external_id": "u1", "email": EMAIL}, {"external_id": "u2", "email": EMAIL},
             anon(email=EMAIL))
    client.track(attributes=[{"external_id": "u1", "touched": True}])            # u1 is now the latest identified
    r = client.post("/users/delete", by_email("identified", "most_recently_updated"))
    assert r.json()["deleted"] == 1
    assert ids(sandbox) == ["anon", "u2"]


def test_most_recently_updated_alone_picks_the_latest_of_all(client, sandbox):
    profiles(client, {"external_id": "u1", "email": EMAIL}, anon(email=EMAIL))
    assert client.post("/users/delete", by_email("most_recently_updated")).json()["deleted"] == 1
    assert ids(sandbox) == ["u1"]


def test_the_order_of_the_rules_matters(client, sandbox):
    profiles(client, {"external_id": "u1", "email": EMAIL}, anon(email=EMAIL))
    # the latest is the unidentified one: most_recently_updated decides before identified is read
    client.post("/users/delete", by_email("most_recently_updated", "identified"))
    assert ids(sandbox) == ["u1"]


def test_phone_numbers_follow_the_same_rules(client, sandbox):
    profiles(client, anon(phone=PHONE), {"external_id": "u1", "phone": PHONE},
             {"external_id": "u2", "phone": PHONE})
    body = {"phone_numbers": [{"phone": PHONE, "prioritization": ["identified"]}]}
    assert client.post("/users/delete", body).json()["deleted"] == 0
    body["phone_numbers"][0]["prioritization"].append("most_recently_updated")
    assert client.post("/users/delete", body).json()["deleted"] == 1
    assert ids(sandbox) == ["anon", "u1"]


def test_email_lookup_ignores_case_and_spaces(client, sandbox):
    profiles(client, {"external_id": "u1", "email": "Ann@X.com"})
    assert client.post("/users/delete", by_email("identified", email=" ann@x.com")).json()["deleted"] == 1


def test_deleted_counts_what_was_really_queued(client, sandbox):
    profiles(client, {"external_id": "u1", "email": EMAIL}, {"external_id": "u2", "email": EMAIL},
             {"external_id": "u3", "email": "b@x.com"})
    body = {"email_addresses": [{"email": EMAIL, "prioritization": ["identified"]},          # ambiguous
                                {"email": "b@x.com", "prioritization": ["identified"]},      # u3
                                {"email": "nobody@x.com", "prioritization": ["identified"]}]}
    assert client.post("/users/delete", body).json() == {"deleted": 1, "message": "success"}
    assert ids(sandbox) == ["u1", "u2"]


def test_same_identifier_twice_is_deleted_once(client):
    profiles(client, {"external_id": "u1"})
    assert client.post("/users/delete", {"external_ids": ["u1", "u1"]}).json()["deleted"] == 1


def test_deleted_counts_requested_counts_every_identifier(make_client):
    client = make_client(deleted_counts="requested")
    profiles(client, {"external_id": "u1"})
    assert client.post("/users/delete", {"external_ids": ["u1", "ghost"]}).json() == {"deleted": 2,
                                                                                     "message": "success"}


def test_least_recently_updated_is_not_a_delete_prioritization(client):
    r = client.post("/users/delete", by_email("least_recently_updated"))
    assert (r.status_code, r.json()) == (400, {"message": "Invalid 'prioritization' value(s): least_recently_updated"})


@pytest.mark.parametrize("prioritization", [[], "identified", ["identified", "unidentified"], ["oldest"]])
def test_bad_prioritization_is_400(client, prioritization):
    r = client.post("/users/delete", {"email_addresses": [{"email": EMAIL, "prioritization": prioritization}]})
    assert r.status_code == 400
