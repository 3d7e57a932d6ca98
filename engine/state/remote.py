"""A state kept in an object store (`state_path: s3://bucket/prefix/state.duckdb`), used through a local
working copy.

A writer (`plan`, `apply`, `run`, `reset`, `state …`):
    1. checks the store before anything else (bucket, credentials, endpoint: engine/state/objects.py),
    2. takes the remote lock (engine/state/remote_lock.py), waiting up to `--lock-timeout` seconds,
    3. downloads the state object into the working copy `.reflow/remote/<hash>/state.duckdb` unless the
       copy already descends from the stored version (same ETag: a run on this machine left it),
    4. opens the working copy as a local state file (engine/state/store.py), and uploads it as a new
       version of the object, replacing only the version it read (`If-Match: <ETag>`): after each sync's
       fold, at least every `upload_every` seconds while an apply sends, and when it closes the state,
    5. releases the lock.

A reader (`status`, `history`, `errors`, `show`) downloads a private copy without locking and never
uploads.

An upload refused by its condition (the stored object moved on: another writer wrote it, the lock was
lost or forced open) or made impossible by a lost lock stops the run. What it recorded stays in the
working copy, which the sidecar `<copy>.remote.json` marks as not uploaded ({"etag", "uploaded": false,
"refused"}); the next writer on this machine stops too, until someone chooses: `reflow state push --force`
(the working copy replaces the stored state) or `reflow state pull --force` (the stored state replaces
the working copy). Nothing acknowledged is lost without that choice.

What a lost runner (killed, its machine gone) loses: the acknowledgements recorded since its last
upload. The next writer starts from that upload; the runs it holds as still running are recovered as
for a crash, their plans' rows taken as possibly sent (the dead run's frontier after its last upload is
not known), so the rows acknowledged in the last interval are sent again: retries, duplicates for
events and purchases.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from engine.errors import RemoteStateError
from engine.sql import sql_str
from engine.state.objects import Bucket, Conflict, parse_state_url
from engine.state.remote_lock import RemoteLock, force_unlock, read_lock

UPLOAD_EVERY = 30.0      # seconds: the longest a running apply goes without uploading the working copy
LOCK_EXPIRY = 120.0      # seconds a lock may go unrenewed before a waiting run takes it over


@dataclass(frozen=True)
class Pushed:
    url: str
    bytes: int
    replaced: str | None         # the ETag of the version replaced (None: there was none)


class RemoteState:
    """The state object at `url` and its working copy `copy` (a local path)."""

    def __init__(self, url: str, copy: Path, *, upload_every: float = UPLOAD_EVERY,
                 lock_expiry: float = LOCK_EXPIRY, local_state: Path | None = None) -> None:
        self.url = url
        self.local_state = local_state       # the project's local state file, from before state_path named a bucket
        self.where = parse_state_url(url)
        self.copy = copy
        self.upload_every = upload_every
        self.lock_expiry = lock_expiry
        self.etag: str | None = None         # the stored version the working copy descends from
        self.downloaded = False              # this writer started from a download (not a copy left here)
        self.uploads = 0
        self._bucket: Bucket | None = None
        self._lock: RemoteLock | None = None
        self._last = 0.0

    @property
    def bucket(self) -> Bucket:
        if self._bucket is None:
            self._bucket = Bucket(self.where)
        return self._bucket

    @property
    def sidecar(self) -> Path:
        return Path(str(self.copy) + ".remote.json")

    # ------------------------------------------------------------------ sessions

    @contextlib.contextmanager
    def session(self, command: str, *, read_only: bool = False, lock_timeout: float = 0.0,
                working_copy: bool = False, replacing: bool = False) -> Iterator[Path]:
        """The local file to open as the state: a writer's working copy (under the lock, downloaded as
        needed), or a reader's private copy (deleted afterwards) of the stored state — or, with
        `working_copy`, of this folder's working copy (what a run here recorded, uploaded or not). `replacing`:
        the caller puts another file in the copy's place (`reflow state restore`)."""
        if read_only and working_copy:
            with self._working_copy_view() as path:
                yield path
            return
        self.bucket.probe()
        if read_only:
            with self._reader_copy() as path:
                yield path
            return
        lock = RemoteLock(self.bucket, command, self.lock_expiry)
        lock.acquire(lock_timeout)
        self._lock = lock
        try:
            self._pull(replacing=replacing)
            self._last = time.monotonic()
            yield self.copy
        finally:
            self._lock = None
            lock.release()

    @contextlib.contextmanager
    def _working_copy_view(self) -> Iterator[Path]:
        if not self.copy.exists():
            raise RemoteStateError(f"there is no working copy of {self.url} here ({self.copy}): no run has "
                                   "written it from this folder; without --working-copy the stored state is read")
        with self._private_file() as path:
            try:
                shutil.copyfile(self.copy, path)
                wal = Path(str(self.copy) + ".wal")
                if wal.exists():
                    shutil.copyfile(wal, Path(str(path) + ".wal"))
            except OSError as exc:
                raise RemoteStateError(f"cannot read the working copy {self.copy}: {exc.strerror}") from exc
            yield path

    @contextlib.contextmanager
    def _reader_copy(self) -> Iterator[Path]:
        with self._private_file() as path:
            self.bucket.download(self.where.key, path)      # none: the state opens empty
            yield path

    @contextlib.contextmanager
    def _private_file(self) -> Iterator[Path]:
        """A fresh path for a reader's private copy of the state, removed (with its WAL) afterwards."""
        folder = self.copy.parent / "read"
        path = folder / f"{uuid.uuid4().hex[:12]}.duckdb"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RemoteStateError(f"cannot create the folder {folder}: {exc.strerror}") from exc
        try:
            yield path
        finally:
            for leftover in (path, Path(str(path) + ".wal")):
                leftover.unlink(missing_ok=True)

    def _pull(self, *, replacing: bool = False) -> None:
        """Make the working copy the stored version, unless it descends from it already."""
        side = self._read_sidecar()
        stored = self.bucket.head(self.where.key)
        etag = stored.etag if stored else None
        has_copy = self.copy.exists()
        local = self.local_state
        if stored is None and not replacing and not (has_copy and side.get("url") == self.url) \
                and local is not None and local.is_file() and local.stat().st_size > 0:
            raise RemoteStateError(
                f"the stored state {self.url} does not exist yet, but this project has the local state {local} "
                "(from before state_path named the bucket): starting empty would send every row again (events and "
                f"purchases twice). `reflow state restore {local}` makes it the stored state; to start empty "
                "instead, move it out of .reflow/")
        if has_copy and side.get("etag") == etag and side.get("url") == self.url:
            self.etag, self.downloaded = etag, False          # left here by the last writer on this machine
            self._write_sidecar(uploaded=False)
            return
        if stored is None and has_copy and side.get("url") == self.url and side.get("etag"):
            raise RemoteStateError(
                f"the stored state {self.url} is gone (deleted?), but the working copy {self.copy} holds what "
                "was last uploaded there: `reflow state push --force` puts it back; `reflow state pull --force` "
                "drops it and starts over (every row is then sent again, events and purchases included)")
        if has_copy and side.get("url") == self.url and not side.get("uploaded", True):
            raise RemoteStateError(
                f"the working copy {self.copy} holds what a run recorded without uploading it "
                f"({side.get('refused') or 'the run ended before its last upload'}), and the stored state "
                f"{self.url} has moved on since. Find out which runs wrote each (`reflow history` reads the stored state, `reflow history --working-copy` this copy), then "
                "either `reflow state push --force` (the working copy replaces the stored state; rows the other "
                "runs delivered since are planned again) or `reflow state pull --force` (the stored state "
                "replaces the working copy; rows this copy has as delivered since its last upload are planned "
                "again)")
        try:
            self.copy.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RemoteStateError(f"cannot create the working folder {self.copy.parent}: {exc.strerror}") from exc
        incoming = self.copy.with_name(self.copy.name + ".incoming")
        etag = self.bucket.download(self.where.key, incoming) if stored else None
        if etag is not None and has_copy and side.get("url") == self.url and not replacing:
            missing = _plans_missing(self.copy, incoming)
            if missing:
                incoming.unlink(missing_ok=True)
                raise RemoteStateError(
                    f"the stored state {self.url} lacks {missing} plan{'s' if missing != 1 else ''} or run"
                    f"{'s' if missing != 1 else ''} that the "
                    f"working copy {self.copy} (its last upload from this folder) holds: it was replaced by an older "
                    "version or another project's state since. Find out which (`reflow history`, `reflow history "
                    "--working-copy`), then either `reflow state push --force` (the working copy replaces the stored "
                    "state) or `reflow state pull --force` (the stored state is kept, e.g. after a deliberate "
                    "`reflow state restore`: rows the working copy has as delivered since are planned again)")
        self._discard_copy()
        if etag is not None:
            os.replace(incoming, self.copy)
        self.etag = etag
        self.downloaded = True
        self._write_sidecar(uploaded=False)

    def _discard_copy(self) -> None:
        for path in (self.copy, Path(str(self.copy) + ".wal")):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ uploads

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.upload_every

    def check(self) -> None:
        """RemoteStateError when this writer lost its lock (then nothing more may be uploaded)."""
        lost = self._lock.problem() if self._lock else None
        if lost:
            self._refused(lost)

    def upload(self) -> None:
        """Upload the working copy (checkpointed by the caller) over the version it descends from."""
        self.check()
        if not self.copy.exists():
            return
        try:
            self.etag = self.bucket.put(self.where.key, self.copy, if_match=self.etag)
        except RemoteStateError as exc:         # the network, the store: not another writer
            raise RemoteStateError(
                f"{exc.message}. What this run recorded since its last upload (rows Braze acknowledged among it) "
                f"is kept only in the working copy {self.copy}: `reflow state push` uploads it once the store is "
                "reachable again; until then a run from another folder would send those rows again") from None
        except Conflict:
            holder = read_lock(self.bucket)
            self._refused(f"the stored state {self.url} changed since this run read it"
                          + (f" (the lock is now {holder.get('id')} of pid {holder.get('pid')} on {holder.get('host')})"
                             if holder else ""))
        self.uploads += 1
        self._last = time.monotonic()
        self._write_sidecar(uploaded=False)

    def finished(self) -> None:
        """The closing upload went through: the working copy and the stored state are the same."""
        self._write_sidecar(uploaded=True)

    def _refused(self, why: str) -> None:
        self._write_sidecar(uploaded=False, refused=why)
        raise RemoteStateError(
            f"{why}: this run stopped, and what it recorded is kept in the working copy {self.copy} (not "
            f"uploaded, so nothing another run stored was overwritten). Find out which run wrote {self.url} "
            "(`reflow history`; `reflow history --working-copy` lists what this run recorded), then reconcile: `reflow state push --force` makes the working copy the stored "
            "state (rows the other run delivered since are planned again), `reflow state pull --force` takes the "
            "stored state (rows this run delivered since its last upload are planned again)")

    # ------------------------------------------------------------------ commands

    def push(self, *, force: bool, lock_timeout: float = 0.0, command: str = "state push") -> Pushed:
        """`reflow state push`: upload the working copy under the lock, over the version it descends from
        (or over whatever is stored, with `force`)."""
        if not self.copy.exists():
            raise RemoteStateError(f"there is no working copy {self.copy} to push")
        if Path(str(self.copy) + ".wal").exists():
            raise RemoteStateError(f"the working copy {self.copy} has an unfinished write-ahead log: open it "
                                   "as a local state first")
        self.bucket.probe()
        side = self._read_sidecar()
        lock = RemoteLock(self.bucket, command, self.lock_expiry)
        lock.acquire(lock_timeout)
        try:
            stored = self.bucket.head(self.where.key)
            base = side.get("etag")
            if not force and stored is not None and stored.etag != base:
                raise RemoteStateError(f"the stored state {self.url} is not the version the working copy descends "
                                       "from; `reflow state push --force` replaces it anyway")
            self.etag = self.bucket.put(self.where.key, self.copy, if_match=stored.etag if stored else None,
                                        force=force)
            self._write_sidecar(uploaded=True)
            return Pushed(self.url, self.copy.stat().st_size, stored.etag if stored else None)
        except Conflict:
            raise RemoteStateError(f"the stored state {self.url} changed during the push; run it again") from None
        finally:
            lock.release()

    def pull(self) -> bool:
        """`reflow state pull --force`: drop the working copy (the next writer downloads the stored state).
        False when there was none."""
        had = self.copy.exists()
        self._discard_copy()
        self.sidecar.unlink(missing_ok=True)
        return had

    def unlock(self, lock_id: str) -> dict[str, Any]:
        self.bucket.probe()
        return force_unlock(self.bucket, lock_id)

    # ------------------------------------------------------------------ the sidecar

    def _read_sidecar(self) -> dict[str, Any]:
        try:
            value = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _write_sidecar(self, *, uploaded: bool, refused: str | None = None) -> None:
        doc = {"url": self.url, "etag": self.etag, "uploaded": uploaded, "refused": refused}
        tmp = self.sidecar.with_name(f"{self.sidecar.name}.{threading.get_ident()}.tmp")     # threads may race
        try:
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.sidecar)
        except OSError as exc:
            raise RemoteStateError(f"cannot write {self.sidecar}: {exc.strerror}") from exc


def _plans_missing(copy: Path, stored: Path) -> int:
    """How many plans and sync runs the working copy `copy` holds that the downloaded `stored` state lacks: 0
    when `stored` descends from the copy (neither is ever deleted: another writer only adds to them). 0 too
    when either file cannot be read this way (the state opens them afterwards and says what is wrong)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH {sql_str(str(copy))} AS here (READ_ONLY)")
        con.execute(f"ATTACH {sql_str(str(stored))} AS there (READ_ONLY)")
        tables = {(db, name) for db, name in con.execute(
            "SELECT database_name, table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
        missing = 0
        for table, column in (("plans", "plan_id"), ("runs", "run_id")):
            if ("here", table) not in tables:
                continue
            absent = "" if ("there", table) not in tables else \
                f" WHERE {column} NOT IN (SELECT {column} FROM there.main.{table})"
            row = con.execute(f"SELECT count(*) FROM here.main.{table}{absent}").fetchone()
            missing += int(row[0]) if row else 0
        return missing
    except duckdb.Error:
        return 0
    finally:
        con.close()
