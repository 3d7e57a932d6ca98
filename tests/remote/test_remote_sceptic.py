"""Sceptic pass on the remote state: what the other remote tests leave out — a project's local state when
state_path turns to a bucket, the stored object put back to an older version by hand, an upload that fails
for the network mid-apply."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
from cli_runner import Cli
from s3_bucket import S3, SECRET, STATE_KEY, second_folder, use_remote_state

pytestmark = pytest.mark.e2e


def order_event_counts(braze: Any) -> collections.Counter[str]:
    return collections.Counter(str(e["properties"]["order_id"]) for e in braze.events()
                               if e.get("name") == "order_placed")


def test_switching_a_local_state_to_a_bucket_does_not_send_everything_again(
        example_project: Path, s3: S3, braze_env, capsys):
    """A project that ran on a local state moves its state_path to s3://: the bucket holds nothing yet, and the
    first remote run must not start from an empty state while .reflow/state.duckdb says what Braze holds
    (every event and purchase would reach Braze twice). It stops, naming the local state and how to carry it."""
    cli = Cli(example_project, capsys)
    code, out, err = cli("run")
    assert code == 0, out + err
    sent = braze_env.stats()["requests_total"]
    use_remote_state(example_project, s3.url(STATE_KEY))

    code, out, err = cli("run")
    assert braze_env.stats()["requests_total"] == sent, "the remote run sent everything again"
    assert code == 1, out + err
    assert ".reflow/state.duckdb" in err and "reflow state restore" in err, err
    assert "Traceback" not in err and SECRET not in out + err

    # carried as the error says: the local state becomes the stored state, and nothing is sent twice
    code, out, err = cli("state", "restore", str(example_project / ".reflow" / "state.duckdb"), "--yes")
    assert code == 0, out + err
    code, out, err = cli("run")
    assert code == 0, out + err
    assert "no changes" in out.lower(), out
    assert braze_env.stats()["requests_total"] == sent
    assert max(order_event_counts(braze_env).values()) == 1


def test_a_stored_state_put_back_to_an_older_version_is_not_used_silently(
        remote_project: Path, s3: S3, braze_env, capsys):
    """Someone puts an older version of the state object back by hand (a bucket version restored, a copy
    uploaded). The folder whose working copy holds the newer state must not drop it for the older one and
    send again what Braze acknowledged since: it stops with the push/pull choice."""
    cli = Cli(remote_project, capsys)
    code, out, err = cli("plan")
    assert code == 0, out + err
    older = s3.get(STATE_KEY)
    assert older
    code, out, err = cli("apply", "--yes")
    assert code == 0, out + err
    sent = braze_env.stats()["requests_total"]
    s3.put(STATE_KEY, older)                    # by hand, outside Reflow

    code, out, err = cli("run")
    assert braze_env.stats()["requests_total"] == sent, "the older stored state was used: everything sent again"
    assert code == 1, out + err
    assert "reflow state push --force" in err and "reflow state pull --force" in err, err
    assert "Traceback" not in err

    code, out, err = cli("state", "push", "--force")
    assert code == 0, out + err
    code, out, err = cli("run")
    assert code == 0 and "no changes" in out.lower(), out + err
    assert max(order_event_counts(braze_env).values()) == 1


def test_an_upload_failing_for_the_network_says_what_the_working_copy_holds(
        remote_project: Path, s3: S3, braze_env, capsys, monkeypatch, tmp_path):
    """The store is unreachable for a moment mid-apply (after the client's retries): the run stops (good), but
    what Braze acknowledged since the last upload is then only in this folder's working copy, and the lock is
    released: the error must say so and how to upload it (`reflow state push`), not only 'check the network'."""
    from engine.state import objects

    real = objects.Bucket.put
    uploads = {"n": 0, "refused": 0}

    def flaky(self: Any, key: str, data: Any, **kw: Any) -> str:
        if key == STATE_KEY:
            uploads["n"] += 1
            if uploads["n"] == 8:       # during the sends
                uploads["refused"] += 1
                raise self._problem("upload", ConnectionError("error sending request: connection refused"))
        return real(self, key, data, **kw)

    monkeypatch.setattr(objects.Bucket, "put", flaky)
    cli = Cli(remote_project, capsys)
    code, out, err = cli("run")
    assert code == 1, out + err
    # the 8th upload failed; when it was the periodic one of a busy send, the stopping run folds what Braze
    # acknowledged and tries once more (the store may be back): either way the error below is what the user sees
    assert uploads["refused"] == 1 and uploads["n"] in (8, 9), uploads
    assert "cannot be reached" in err, err
    assert "working copy" in err and "reflow state push" in err, err
    assert "Traceback" not in err and SECRET not in out + err
    monkeypatch.setattr(objects.Bucket, "put", real)

    # as advised: the push carries the acknowledgements, and another folder sends nothing twice
    code, out, err = cli("state", "push")
    assert code == 0, out + err
    code, out, err = Cli(second_folder(remote_project, tmp_path), capsys)("run")
    assert code == 0, out + err
    assert max(order_event_counts(braze_env).values()) == 1
