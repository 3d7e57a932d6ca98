"""The state lock: one writer per state file, even while someone deletes its folder.

Two exclusive flocks, taken in this order, each file naming its holder (pid, host, command, start):

    <runtime dir>/<key>.lock    outside the project: `$XDG_RUNTIME_DIR/reflow/`, else
                                `<tmp>/reflow-<uid>/` (private to the user), keyed by the state
                                file's path. Deleting `.reflow/` (state and lock file) cannot release
                                it, so a second run on this machine is still refused while the first
                                holds the lock.
    <state_path>.lock           next to the state file: seen by every user and machine that shares
                                the folder.

The OS releases both when the holder dies (even with SIGKILL): no stale locks. A lock file deleted
or replaced between its open and its flock is opened again (the file locked must be the one its
path names: the "flock, then compare inodes" rule). While a run holds the lock, `moved()` tells
whether either path still names the file it locked; `State.check_in_place` adds the state file
itself and is called after each commit of a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import LockError, StateError

_ATTEMPTS = 5       # opens of a lock file that keeps being replaced before giving up
_PROBE_TRIES = 5    # flock attempts, 10 ms apart, before a lock counts as held by a run


class StateLock:
    """An exclusive lock on the state file, held by one process, naming its holder.

    A second process gets a LockError naming the holder's pid, command and start time."""

    def __init__(self, state_path: Path, command: str) -> None:
        self.path = Path(str(state_path) + ".lock")
        self.guard_path = guard_path(state_path)
        self.command = command
        self.holder: dict[str, Any] = {}
        self._fd: int | None = None
        self._guard_fd: int | None = None

    def acquire(self) -> None:
        _private_folder(self.guard_path.parent)
        guard = _take(self.guard_path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = _take(self.path)
        except BaseException:
            _drop(guard)
            raise
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                       "started_at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"}
        for held in (guard, fd):
            os.ftruncate(held, 0)
            os.pwrite(held, json.dumps(self.holder).encode(), 0)
        self._guard_fd, self._fd = guard, fd

    def release(self) -> None:
        for fd in (self._fd, self._guard_fd):
            if fd is not None:
                _drop(fd)
        self._fd = self._guard_fd = None

    def moved(self) -> str | None:
        """None while both lock paths name the files this process locked; else what happened to which."""
        for fd, path in ((self._fd, self.path), (self._guard_fd, self.guard_path)):
            if fd is not None:
                change = file_change(path, os.fstat(fd))
                if change:
                    return f"the lock file {path} was {change}"
        return None


def file_change(path: Path, known: os.stat_result) -> str | None:
    """'deleted' when `path` names no file, 'replaced' when it names another file than `known`, else None."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return "deleted"
    except OSError as exc:
        return f"made unreachable ({exc.strerror})"
    return None if (now.st_dev, now.st_ino) == (known.st_dev, known.st_ino) else "replaced"


def guard_path(state_path: Path) -> Path:
    """The lock outside the project for `state_path`: keyed by the real path of the folder holding the
    state folder, then the state folder's and file's names as written (so the key is the same whether
    the state folder exists or was just deleted)."""
    state_path = Path(os.path.abspath(state_path))
    key = os.path.join(os.path.realpath(state_path.parent.parent), state_path.parent.name, state_path.name)
    return runtime_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock"


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        return Path(base) / "reflow"
    return Path(tempfile.gettempdir()) / f"reflow-{os.getuid()}"


def read_holder(state_path: Path) -> dict[str, Any] | None:
    """Who holds the state lock (pid, host, command, started_at), read without taking it; None when
    no Reflow process holds it (e.g. the DuckDB file is held by another program)."""
    for path in (Path(str(state_path) + ".lock"), guard_path(state_path)):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _holder_info(fd) or {}
            fcntl.flock(fd, fcntl.LOCK_UN)          # nobody holds this one
        finally:
            os.close(fd)
    return None


def describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "holder unknown"
    return (f"pid {info.get('pid')} on {info.get('host')}, `reflow {info.get('command')}` "
            f"started {info.get('started_at')}")


def _take(path: Path) -> int:
    """An fd of `path` holding its exclusive flock; LockError naming the holder if another has it."""
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the state lock {path}: {exc.strerror}") from exc
        if not _flock(fd):
            holder = _holder_info(fd)
            os.close(fd)
            raise LockError(f"the state file is in use by another reflow run ({describe_holder(holder)}); "
                            "wait for it to finish, or stop it") from None
        if file_change(path, os.fstat(fd)) is None:
            return fd
        os.close(fd)        # deleted or replaced before we locked it: lock the file the path names now
    raise StateError(f"cannot take the state lock {path}: the file keeps being deleted or replaced")


def _flock(fd: int) -> bool:
    """Take the exclusive flock; False if a run holds it. A reader (`read_holder`) holds a shared one for
    microseconds: it is waited for, a little, so `reflow status` polled in a loop never refuses a run."""
    for attempt in range(_PROBE_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < _PROBE_TRIES:
                time.sleep(0.01)
    return False


def _drop(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def _holder_info(fd: int) -> dict[str, Any] | None:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info else None


def _private_folder(folder: Path) -> None:
    """Create the runtime lock folder for this user only; refuse one another user could tamper with."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise StateError(f"cannot create the lock folder {folder}: {exc.strerror}; set XDG_RUNTIME_DIR to a "
                         "private writable folder") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise StateError(f"the lock folder {folder} is not a private folder of this user (owner, mode or "
                         "symlink); remove it, or set XDG_RUNTIME_DIR to a private writable folder")
