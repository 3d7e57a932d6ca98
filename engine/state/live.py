"""The live status file: what the run holding the state has recorded so far, for `reflow status` and
`reflow history` while it runs (DuckDB lets no other process open a state file a writer holds, not
even to read it).

`<state_path>.status.json`, replaced atomically (a temporary file, then a rename), holds:

    holder     the lock holder's record: pid, host, command, started_at
    at         when the file was written
    syncs      per sync: snapshot rows, pending rows and the main reason (as of the holder's opening
               of the state, or of the end of its last sync)
    runs       the most recent runs as the state has them, the running one with its counts so far
    progress   the sync being sent: rows done, rows to send, requests (absent between sends)

The holder writes it when it opens the state, at each sync's start and end, and at most every
`EVERY` seconds while it sends; it deletes it before releasing the lock. A reader trusts it only
while the lock holder is the writer it names (same pid and start time): a file left by a killed run
is ignored. Writing it is best effort: a failure never stops a run. It holds counts and sync names
(and runs' messages), no row data.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.state.lock import read_holder

EVERY = 0.5             # seconds between two writes while a sync is being sent
RUNS = 50               # recent runs the file keeps (`reflow history --limit` beyond it says so)


def status_path(state_path: Path) -> Path:
    return Path(str(state_path) + ".status.json")


class LiveStatus:
    """The writer's side: `write` the whole status; `due` says whether a progress write is due."""

    def __init__(self, state_path: Path, holder: dict[str, Any]) -> None:
        self.path = status_path(state_path)
        self.holder = holder
        self._last = 0.0

    def due(self) -> bool:
        return time.monotonic() - self._last >= EVERY

    def write(self, *, syncs: dict[str, dict[str, Any]], runs: list[dict[str, Any]],
              progress: dict[str, Any] | None = None) -> None:
        self._last = time.monotonic()
        doc = {"holder": self.holder, "at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z",
               "syncs": syncs, "runs": [_run_record(r) for r in runs], "progress": progress}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(doc, default=str))
            os.replace(tmp, self.path)
        except OSError:             # e.g. the state folder was deleted: the run notices at its next commit
            with contextlib.suppress(OSError):
                tmp.unlink()

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


@dataclass(frozen=True)
class LiveView:
    """What a reader learns while another process holds the state: who, and (if it publishes) how far."""

    holder: dict[str, Any]
    at: str | None = None
    syncs: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, Any] | None = None

    @property
    def published(self) -> bool:
        return self.at is not None


def read_live(state_path: Path) -> LiveView | None:
    """The holder of the state lock and, when it keeps one, its status file; None when no Reflow
    process holds the lock."""
    holder = read_holder(state_path)
    if holder is None:
        return None
    try:
        doc = json.loads(status_path(state_path).read_text())
    except (OSError, ValueError):
        return LiveView(holder)
    mine = isinstance(doc, dict) and isinstance(doc.get("holder"), dict) and all(
        doc["holder"].get(k) == holder.get(k) for k in ("pid", "host", "started_at"))
    if not mine:
        return LiveView(holder)
    return LiveView(holder, str(doc.get("at")), dict(doc.get("syncs") or {}),
                    [_run_value(r) for r in doc.get("runs") or []], doc.get("progress"))


_TIMES = ("started_at", "finished_at")


def _run_record(run: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in run.items()}


def _run_value(run: dict[str, Any]) -> dict[str, Any]:
    """A run as `State.runs` returns it (times as datetimes), from its record in the file."""
    out = dict(run)
    for k in _TIMES:
        if isinstance(out.get(k), str):
            out[k] = datetime.fromisoformat(out[k])
    return out
