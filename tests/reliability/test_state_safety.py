"""The state file in trouble: corrupt, truncated, from a newer Reflow, read-only, on a full disk.

Each gives a clear error (exit 1, no traceback) and never sends data whose outcome cannot be
recorded: either the sandbox received nothing, or everything it received is in the snapshot.
Also `reflow state backup` / `reflow state restore`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest
from braze_checks import assert_in_step

pytestmark = pytest.mark.e2e


def state_file(project: Path) -> Path:
    return project / ".reflow" / "state.duckdb"


def requests_total(sandbox: Any) -> int:
    return int(sandbox.stats()["requests_total"])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refused(cli: Any, *args: str) -> str:
    code, out, err = cli(*args)
    assert code == 1, f"exit {code}: {out}{err}"
    assert "Traceback" not in err + out and "unexpected" not in err, err
    assert err.startswith("error: "), err
    return err


def snapshot_count(path: Path, sync: str) -> int:
    from engine.state import State

    with State.open(path, command="test", read_only=True) as state:
        return state.snapshot_rows(sync)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs mounted at `path` (root and `mount` needed; skipped with the reason otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True, check=False)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}): the read-only and "
                    "full-disk state cases need root and mount")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def test_corrupt_state_file_is_refused_before_anything_is_sent(cli, braze_env, example_project):
    path = state_file(example_project)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a duckdb file\n" * 200)
    before = requests_total(braze_env)
    err = refused(cli, "run")
    assert f"the state file {path} is unreadable (" in err and "corrupt or truncated" in err
    assert "reflow state restore" in err
    assert requests_total(braze_env) == before
    refused(cli, "status")


def test_truncated_state_file_is_refused(cli, braze_env, example_project):
    assert cli("run")[0] == 0
    path = state_file(example_project)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert cli("example", "mutate")[0] == 0
    before = requests_total(braze_env)
    err = refused(cli, "run")
    assert f"the state file {path} is unreadable (" in err and "reflow state restore" in err
    assert requests_total(braze_env) == before


def refused_with_version(cli, braze_env, project, version: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Set the state's schema_version, then every state command is refused, nothing is sent, the file is
    untouched; returns each command's stderr."""
    assert cli("run")[0] == 0
    path = state_file(project)
    con = duckdb.connect(str(path))
    con.execute("update meta set value = ? where key = 'schema_version'", [version])
    con.close()
    unchanged = digest(path)
    assert cli("example", "mutate")[0] == 0
    before = requests_total(braze_env)
    errors = [refused(cli, *command) for command in (("run",), ("plan",), ("status",), ("apply", "--yes"))]
    assert requests_total(braze_env) == before
    assert digest(path) == unchanged
    return errors


def test_state_from_a_newer_reflow_is_refused_and_left_untouched(cli, braze_env, example_project):
    for err in refused_with_version(cli, braze_env, example_project, "99"):
        assert "written by a newer Reflow (state schema 99" in err, err


def test_corrupt_schema_version_is_refused_with_how_to_recover(cli, braze_env, example_project):
    path = state_file(example_project)
    for err in refused_with_version(cli, braze_env, example_project, "abc"):
        assert err == (f"error: the state file {path} is corrupt: its schema_version is 'abc', not a number. "
                       "Restore a backup (`reflow state restore FILE`) or move the file away to start over\n"), err


def test_read_only_state_folder(cli, braze_env, example_project):
    folder = example_project / ".reflow"
    with tmpfs(folder, "64m"):
        assert cli("run")[0] == 0
        remount(folder, "ro")
        assert cli("example", "mutate")[0] == 0
        before = requests_total(braze_env)
        err = refused(cli, "run")
        assert str(folder) in err and ("not writable" in err or "Read-only" in err), err
        refused(cli, "apply", "--yes")
        assert requests_total(braze_env) == before
        code, out, err = cli("status")               # reading still works
        assert code == 0 and "braze_users" in out, err
        code, out, err = cli("history", "--json")
        assert code == 0 and json.loads(out), err
        remount(folder, "rw")
        assert cli("run")[0] == 0
        assert_in_step(example_project, braze_env)


def test_full_disk_while_planning_sends_nothing(cli, braze_env, example_project):
    folder = example_project / ".reflow"
    with tmpfs(folder, "300k"):
        before = requests_total(braze_env)
        err = refused(cli, "run")
        assert f"cannot write the state file {folder / 'state.duckdb'}" in err and "No space left" in err, err
        assert requests_total(braze_env) == before


def test_full_disk_while_applying_never_loses_an_acknowledgement(cli, braze_env, example_project):
    """The plan fits, then the disk fills: the apply stops with a clear error, and every event
    Braze received is either recorded or re-sent exactly as planned (no event is lost)."""
    folder = example_project / ".reflow"
    with tmpfs(folder, "256m"):
        code, out, err = cli("plan")
        assert code == 0, err
        used = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        remount(folder, f"size={used + 48 * 1024}")
        code, out, err = cli("apply", "--yes")
        assert "Traceback" not in err and "unexpected" not in err, err
        assert code in (0, 1, 3), out + err
        if code == 1:
            assert "cannot write the state file" in err and "No space left" in err, err
            assert "the next run sends" in err and "Nothing is lost" not in err, err
        code, out, _ = cli("history", "--json")         # the run ended with its reason, not "running"
        assert code == 0 and not [r for r in json.loads(out) if r["status"] == "running"], out
        remount(folder, "size=256m")
        received = {e["properties"]["order_id"] for e in braze_env.events()}
        recorded = snapshot_count(state_file(example_project), "order_events")
        assert recorded <= len(received)
        code, out, err = cli("run")
        assert code == 0, out + err
        assert_in_step(example_project, braze_env, exactly_once=code == 0 and recorded == len(received))


# ------------------------------------------------------------------------------------------ backup / restore


def test_backup_and_restore(cli, braze_env, example_project, tmp_path):
    assert cli("run")[0] == 0
    path = state_file(example_project)
    users = snapshot_count(path, "braze_users")
    backup = tmp_path / "backups" / "state-1.duckdb"
    code, out, err = cli("state", "backup", str(backup))
    assert code == 0, err
    assert f"backed up {path} to {backup}" in out and "customer data" in out
    assert snapshot_count(backup, "braze_users") == users
    refused(cli, "state", "backup", str(backup))     # never overwrites

    events_at_backup = {e["properties"]["order_id"] for e in braze_env.events()}
    assert cli("example", "mutate")[0] == 0
    assert cli("run")[0] == 0
    assert snapshot_count(path, "braze_users") != users
    since_backup = {e["properties"]["order_id"] for e in braze_env.events()} - events_at_backup
    code, out, err = cli("state", "restore", str(backup), "--yes")
    assert code == 0, err
    assert "sent twice" not in out and "reach Braze twice" in out
    assert snapshot_count(path, "braze_users") == users
    bak = path.with_name(path.name + ".bak")
    assert snapshot_count(bak, "braze_users") != users and "kept as" in out
    # the next run re-plans from the restored snapshot and converges; what was delivered since the
    # backup is delivered again (profiles: harmless; events: exactly those events twice, as the message says)
    assert cli("run")[0] == 0
    extras = assert_in_step(example_project, braze_env, exactly_once=False)
    assert since_backup and set(extras.events) == since_backup and set(extras.events.values()) == {1}


def test_default_backup_name_sits_next_to_the_state_file(cli, braze_env, example_project):
    assert cli("plan")[0] == 0
    code, out, err = cli("state", "backup")
    assert code == 0, err
    made = list((example_project / ".reflow").glob("state-backup-*.duckdb"))
    assert len(made) == 1 and str(made[0]) in out


def test_restore_refuses_newer_schema_and_non_state_files(cli, braze_env, example_project, tmp_path):
    assert cli("plan")[0] == 0
    path = state_file(example_project)
    unchanged = digest(path)
    newer = tmp_path / "newer.duckdb"
    assert cli("state", "backup", str(newer))[0] == 0
    con = duckdb.connect(str(newer))
    con.execute("update meta set value = '7' where key = 'schema_version'")
    con.close()
    err = refused(cli, "state", "restore", str(newer), "--yes")
    assert "written by a newer Reflow (state schema 7" in err
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"\x00garbage" * 100)
    assert "not a readable Reflow state file" in refused(cli, "state", "restore", str(junk), "--yes")
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    assert "not a Reflow state file" in refused(cli, "state", "restore", str(other), "--yes")
    assert "is not a file" in refused(cli, "state", "restore", str(tmp_path / "missing.duckdb"), "--yes")
    assert "needs confirmation" in refused(cli, "state", "restore", str(newer))
    assert digest(path) == unchanged


def test_backup_waits_for_no_one_and_names_the_lock_holder(cli, braze_env, example_project, tmp_path):
    from engine.state.lock import StateLock

    assert cli("plan")[0] == 0
    lock = StateLock(state_file(example_project), "apply")
    lock.acquire()
    try:
        err = refused(cli, "state", "backup", str(tmp_path / "b.duckdb"))
        assert "in use by another reflow run" in err and "reflow apply" in err
        err = refused(cli, "state", "restore", str(state_file(example_project)), "--yes")
    finally:
        lock.release()
    assert not (tmp_path / "b.duckdb").exists()
