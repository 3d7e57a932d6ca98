"""`reflow state backup` / `reflow state restore`: a consistent copy of the state file, and putting one back.

A backup is taken under the state lock (no apply can be writing) with DuckDB's own
`COPY FROM DATABASE`, so it holds whole transactions only. A restore refuses a file that is not a
Reflow state file or was written by a newer Reflow, and keeps the file it replaces as `<state>.bak`.
A rescue (`State.copy_to`) is the same copy, taken by a run whose state file was deleted or replaced
under it, from the file it still has open.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from engine.errors import StateError
from engine.sql import first_line, sql_str
from engine.state.lock import StateLock
from engine.state.store import SCHEMA_VERSION, State, default_backup_path


@dataclass(frozen=True)
class BackupResult:
    path: Path
    schema_version: int
    bytes: int


@dataclass(frozen=True)
class RestoreResult:
    path: Path                   # the state file, now holding the backup
    replaced: Path | None        # where the previous state file went (None if there was none)
    schema_version: int


def backup_state(state_path: Path, dest: Path | None = None, *, memory_limit: str = "1GB",
                 state: State | None = None) -> BackupResult:
    """Copy the state file to `dest` (default: next to it, timestamped), under the state lock; or, given
    the open `state` (a remote state's working copy, opened under its lock), that state."""
    if state is None and not state_path.exists():
        raise StateError(f"no state file at {state_path}; nothing to back up (run `reflow plan` first)")
    dest = Path(dest) if dest is not None else default_backup_path(state_path)
    if dest.exists():
        raise StateError(f"{dest} already exists; choose another file name")
    if dest.resolve() == state_path.resolve():
        raise StateError("the backup file must differ from the state file")
    if state is not None:
        state.copy_to(dest)
    else:
        with State.open(state_path, command="state backup", memory_limit=memory_limit) as opened:
            opened.copy_to(dest)
    return BackupResult(dest, read_schema_version(dest), dest.stat().st_size)


def read_schema_version(path: Path) -> int:
    """The schema version of a state file, read without changing it; StateError if it is not one."""
    if not path.is_file():
        raise StateError(f"{path} is not a file")
    try:
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"ATTACH {sql_str(str(path))} AS candidate (READ_ONLY)")
            found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'candidate' "
                                "AND table_name = 'meta'").fetchone()
            row = con.execute("SELECT value FROM candidate.main.meta WHERE key = 'schema_version'").fetchone() \
                if found and found[0] else None
        finally:
            con.close()
    except duckdb.Error as exc:
        raise StateError(f"{path} is not a readable Reflow state file ({first_line(exc)})") from exc
    if row is None:
        raise StateError(f"{path} is not a Reflow state file (it has no schema version)")
    try:
        return int(row[0])
    except ValueError:
        raise StateError(f"{path} has an unreadable schema version {row[0]!r}") from None


def restore_state(state_path: Path, source: Path) -> RestoreResult:
    """Put a backup in place of the state file, under the state lock; the old file is kept as .bak."""
    source = Path(source)
    version = read_schema_version(source)
    if version > SCHEMA_VERSION:
        raise StateError(f"{source} was written by a newer Reflow (state schema {version}, this Reflow knows up "
                         f"to {SCHEMA_VERSION}); upgrade Reflow to restore it")
    if source.resolve() == state_path.resolve():
        raise StateError("the backup file is the state file itself")
    lock = StateLock(state_path, "state restore")
    lock.acquire()
    try:
        tmp = state_path.with_name(state_path.name + ".restoring")
        try:
            shutil.copyfile(source, tmp)
            replaced = None
            if state_path.exists():
                replaced = state_path.with_name(state_path.name + ".bak")
                os.replace(state_path, replaced)
            wal = state_path.with_name(state_path.name + ".wal")
            if wal.exists():
                os.replace(wal, state_path.with_name(state_path.name + ".bak.wal"))
            os.replace(tmp, state_path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StateError(f"cannot restore {source} to {state_path}: {exc.strerror}") from exc
    finally:
        lock.release()
    return RestoreResult(state_path, replaced, version)

