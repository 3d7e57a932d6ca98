"""A private copy of the state for a read-only plan (`reflow plan --read-only`, `engine.api.plan(...,
read_only=True)`): the pull-request plan that CI posts, computed against production's state without
touching it.

    remote state   the stored object is downloaded into a private file (no lock taken, nothing uploaded;
                   the working copy of a runner on this machine is not touched)
    local state    the state file is copied through a read-only connection (no lock taken)

The plan is computed and saved in that copy, which is deleted afterwards: it cannot be applied. Runs the
copy holds as still running are left alone (not recovered as after a crash): they belong to a live runner,
so the plan is against the state as of its last upload.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from engine.state.remote import RemoteState
from engine.state.store import State, _connect

COMMAND = "plan --read-only"


@contextlib.contextmanager
def open_preview(path: Path, *, memory_limit: str = "1GB", remote: RemoteState | None = None) -> Iterator[State]:
    """A writable State on a private copy of the state at `path` (or of the object `remote` names)."""
    with contextlib.ExitStack() as stack:
        if remote is not None:
            copy = stack.enter_context(remote.session(COMMAND, read_only=True))
        else:
            folder = Path(tempfile.mkdtemp(prefix="reflow-preview-"))
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            copy = folder / "state.duckdb"
            _copy_local(path, copy, memory_limit=memory_limit)
        with State._open_file(copy, command=COMMAND, memory_limit=memory_limit, read_only=False,
                              lock_timeout=0.0, private=True) as state:
            yield state


def _copy_local(path: Path, dest: Path, *, memory_limit: str) -> None:
    """Copy the state file at `path` (if any) to `dest`, as a reader opens it (whole transactions only)."""
    if not path.exists():
        return
    con = _connect(path, memory_limit=memory_limit, read_only=True)
    try:
        source = State(con, path, None)
        if not source.empty:
            source.copy_to(dest)
    finally:
        con.close()
