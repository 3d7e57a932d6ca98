"""The lock of a remote state: one writer across machines, as an object next to the state object.

`<key>.lock` (e.g. `s3://bucket/prefix/state.duckdb.lock`) holds JSON naming its holder:

    id          a random lock id (`reflow state unlock --force ID` removes a dead holder's lock)
    host, pid, command, started_at
    renewed_at, expiry    when the holder last renewed it, and after how many seconds unrenewed it is stale

It is created with a conditional write (`If-None-Match: *`): of two runners, one creates it and the
other finds it held. The holder renews it (a conditional replace of the version it wrote, in a
background thread) every `expiry / 3` seconds. A waiter (`--lock-timeout`) takes over a lock whose
object has not changed for `expiry` seconds *of the waiter's own clock* (so machines' clocks need not
agree), with a conditional replace of the version it saw: of two waiters, one wins. A holder whose
renewal is refused (its lock was taken over or deleted) has lost it: `problem()` says so, and the
remote state stops uploading (engine/state/remote.py). Release deletes the object if it still names
this holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from engine.errors import LockError, RemoteStateError
from engine.state.objects import Bucket, Conflict

POLL = 1.0          # seconds between two looks at a held lock while waiting


def _stamp() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "holder unknown"
    return (f"lock {holder.get('id')}: pid {holder.get('pid')} on {holder.get('host')}, "
            f"`reflow {holder.get('command')}` started {holder.get('started_at')}, "
            f"renewed {holder.get('renewed_at')}")


class RemoteLock:
    def __init__(self, bucket: Bucket, command: str, expiry: float) -> None:
        self.bucket = bucket
        self.key = bucket.where.lock_key
        self.url = f"{bucket.where.url}.lock"
        self.expiry = expiry
        self.holder: dict[str, Any] = {"id": uuid.uuid4().hex[:12], "host": socket.gethostname(), "pid": os.getpid(),
                                       "command": command, "started_at": _stamp(), "expiry": expiry}
        self._etag: str | None = None
        self._lost: str | None = None
        # our clock's time until which no one can have taken the lock over: `expiry` after the start of the
        # last write of it that went through (a waiter counts `expiry` from when it first saw that version)
        self._held_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def id(self) -> str:
        return str(self.holder["id"])

    def acquire(self, timeout: float = 0.0) -> None:
        """Create the lock object, or wait up to `timeout` seconds for its holder to release it or let it
        go stale; LockError naming the holder otherwise."""
        deadline = time.monotonic() + max(0.0, timeout)
        seen: tuple[str, float] | None = None          # the held version and since when (our clock)
        while True:
            began = time.monotonic()
            try:
                self._etag = self.bucket.put(self.key, self._body(), if_match=None)
                self._held_until = began + self.expiry
                break
            except Conflict:
                pass
            found = self.bucket.read(self.key)
            if found is None:
                continue                                # released meanwhile: create it
            data, etag = found
            now = time.monotonic()
            if seen is None or seen[0] != etag:
                seen = (etag, now)
            holder = _parse(data)
            if now - seen[1] >= _expiry_of(holder, self.expiry):
                began = time.monotonic()
                try:                                    # unrenewed for its expiry: stale, take it over
                    self._etag = self.bucket.put(self.key, self._body(), if_match=etag)
                    self._held_until = began + self.expiry
                    self.holder["took_over"] = holder.get("id") if holder else None
                    break
                except Conflict:
                    seen = None
                    continue
            if now >= deadline:
                waited = f" after waiting {timeout:g} s" if timeout > 0 else ""
                raise LockError(
                    f"the remote state {self.bucket.where.url} is locked by another reflow run ({describe(holder)})"
                    f"{waited}. Wait for it (--lock-timeout SECONDS); if that run is dead, its lock goes stale "
                    f"{_expiry_of(holder, self.expiry):g} s after its last renewal and a waiting run takes it over, "
                    f"or remove it now: `reflow state unlock --force {holder.get('id') if holder else 'LOCK_ID'}`")
            time.sleep(min(POLL, max(0.05, deadline - now), max(0.05, seen[1] + _expiry_of(holder, self.expiry) - now)))
        self._thread = threading.Thread(target=self._renew, name="reflow-remote-lock", daemon=True)
        self._thread.start()

    def problem(self) -> str | None:
        """None while this process holds the lock; else what happened to it. A lock not renewed for its
        expiry (this process was frozen: a paused VM, SIGSTOP; or the store was unreachable) counts as lost
        until a renewal goes through: a waiting run may have taken it over, and what this process sent from
        then on would reach Braze behind that run's back (called before each request of a send)."""
        if self._lost:
            return self._lost
        if self._etag is not None and time.monotonic() >= self._held_until:
            return (f"the lock {self.url} went {self.expiry:g} s without a renewal (this process was paused, or the "
                    "store was unreachable), so another run may have taken it over")
        return None

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._etag is None or self._lost:
            return
        with contextlib.suppress(RemoteStateError):
            found = self.bucket.read(self.key)
            if found is not None and (_parse(found[0]) or {}).get("id") == self.id:
                self.bucket.delete(self.key)
        self._etag = None

    def _body(self) -> bytes:
        self.holder["renewed_at"] = _stamp()
        return json.dumps(self.holder).encode()

    def _renew(self) -> None:
        every = max(0.2, self.expiry / 3)
        last_ok = time.monotonic()
        while not self._stop.wait(every):
            began = time.monotonic()
            try:
                self._etag = self.bucket.put(self.key, self._body(), if_match=self._etag)
                self._held_until = began + self.expiry
                last_ok = time.monotonic()
            except Conflict:
                found = self.bucket.read(self.key) if not self._stop.is_set() else None
                other = _parse(found[0]) if found else None
                self._lost = (f"the lock {self.url} was deleted" if found is None else
                              f"the lock {self.url} was taken over ({describe(other)})")
                return
            except RemoteStateError as exc:         # unreachable for a while: stale once its expiry passed
                if time.monotonic() - last_ok >= self.expiry:
                    self._lost = f"the lock {self.url} could not be renewed for {self.expiry:g} s ({exc.message})"
                    return


def read_lock(bucket: Bucket) -> dict[str, Any] | None:
    found = bucket.read(bucket.where.lock_key)
    return (_parse(found[0]) or {}) if found else None


def force_unlock(bucket: Bucket, lock_id: str) -> dict[str, Any]:
    """Remove the lock whose id is `lock_id` (a dead holder's): its holder record. RemoteStateError when
    there is no lock, or another run holds it now."""
    found = bucket.read(bucket.where.lock_key)
    if found is None:
        raise RemoteStateError(f"{bucket.where.url} is not locked: nothing to unlock")
    holder = _parse(found[0]) or {}
    if holder.get("id") != lock_id:
        raise RemoteStateError(f"{bucket.where.url} is locked by {describe(holder)}, not by lock {lock_id}: "
                               "nothing was removed (check it is dead, then pass its id)")
    try:        # replace the version read, then delete: a lock renewed meanwhile (its holder lives) stays
        bucket.put(bucket.where.lock_key, json.dumps({**holder, "unlocked_at": _stamp()}).encode(), if_match=found[1])
    except Conflict:
        raise RemoteStateError(f"lock {lock_id} of {bucket.where.url} was renewed just now: its holder is alive; "
                               "nothing was removed") from None
    bucket.delete(bucket.where.lock_key)
    return holder


def _parse(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data.decode())
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _expiry_of(holder: dict[str, Any] | None, default: float) -> float:
    try:
        return float((holder or {}).get("expiry", default))
    except (TypeError, ValueError):
        return default
