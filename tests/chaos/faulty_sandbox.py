"""Chaos helpers: the example project with a 1-second client timeout, and a sandbox whose faults
change while it runs (`FaultySandbox.set`), with 2-second latency spikes that are logged so that
extra copies of events can be traced to the requests the client timed out on."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from braze_checks import plan_json

from engine.sandbox.faults import Faults
from engine.sandbox.options import SandboxOptions
from engine.sandbox.ratelimit import DEFAULT_LIMITS
from engine.sandbox.testing import SandboxHandle

CLIENT_TIMEOUT = 1.0
SPIKE_SECONDS = 2.0
SEEN_WITHIN = 0.4          # an answer this quick reached the client (its timeout is 1 s)
MAX_RETRIES = 2
CONCURRENCY = 8
# Short windows for the buckets Reflow uses besides /users/track, so an injected 429 (which names
# the end of the window) costs at most two seconds instead of a minute.
SHORT_WINDOWS = {"subscription": (5000, 2.0), "catalogs.items.async": (16000, 2.0),
                 "users.identity": (20000, 2.0)}


def tune_connection(project: Path, **settings: Any) -> None:
    """Add settings under the example's `braze` connection (timeout, max_retries, concurrency)."""
    file = project / "reflow_project.yml"
    text = file.read_text()
    lines = "".join(f"\n    {k}: {json.dumps(v)}" for k, v in settings.items())
    assert "    type: braze" in text
    file.write_text(text.replace("    type: braze", "    type: braze" + lines, 1))


class SpikyFaults(Faults):
    """The sandbox's faults plus latency spikes on a share of requests (seeded)."""

    def __init__(self, options: SandboxOptions, spike_rate: float, seed: int) -> None:
        super().__init__(options)
        self.spike_rate = spike_rate
        self._spike_rng = random.Random(seed)
        self.local = threading.local()

    def delay(self) -> None:
        super().delay()
        with self._lock:
            spike = self.spike_rate > 0 and self._spike_rng.random() < self.spike_rate
        if spike:
            self.local.spiked = True
            time.sleep(SPIKE_SECONDS)


@dataclasses.dataclass
class Spiked:
    """A request answered after the client's timeout: Braze may have applied what the client counts as failed."""

    status: int
    events: Counter[str]              # order_id -> events of that order in the request
    purchases: Counter[str]           # order_id -> purchase lines of that order in the request
    items: frozenset[str] = frozenset()   # catalog item ids the request carried


class FaultySandbox:
    """A running sandbox whose fault options can be changed between (or during) runs."""

    def __init__(self, handle: SandboxHandle) -> None:
        self.handle = handle
        self.spike_rate = 0.0
        self.spiked: list[Spiked] = []
        self.row_errors: list[tuple[str, str]] = []        # (path, Braze's message) of 2xx per-row errors
        # per-row rejections answered well within the client's timeout (so the client read them; not
        # those in answers past a spike, nor slow ones on a loaded machine):
        # ("attributes", external_id) or ("events"/"purchases", order_id)
        self.seen_rejections: set[tuple[str, str]] = set()
        # external ids whose subscription state Braze accepted while it had no profile for them:
        # Braze answers success and keeps nothing (see README, "Delivery guarantee")
        self.orphaned_subscriptions: set[str] = set()
        app = handle.sandbox
        self._inner = app.handle
        app.handle = self._handle        # type: ignore[method-assign]  # instrument every request
        self.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def set(self, *, spike_rate: float = 0.0, rate_limit: tuple[int, float] | None = None,
            reject_external_ids: frozenset[str] = frozenset(), **options: Any) -> None:
        """Replace every fault at once (unnamed faults are off)."""
        app = self.handle.sandbox
        base = SandboxOptions.build(api_key=app.options.api_key, seed=options.pop("seed", 7),
                                    bucket_limits=SHORT_WINDOWS, **options)
        new = dataclasses.replace(base, reject_external_ids=frozenset(reject_external_ids))
        app.options = new
        app.faults = SpikyFaults(new, spike_rate, seed=new.seed or 0)
        app.limiter.limits.update(SHORT_WINDOWS)
        app.limiter.limits["users.track"] = rate_limit or DEFAULT_LIMITS["users.track"]

    def _handle(self, method: str, target: str, headers: Any, body: bytes | None, length: int,
                base_url: str = "") -> Any:
        faults = self.handle.sandbox.faults
        if isinstance(faults, SpikyFaults):
            faults.local.spiked = False
        unknown = self._unknown_subscribers(target, body)
        started = time.monotonic()
        response = self._inner(method, target, headers, body, length, base_url)
        prompt = time.monotonic() - started < SEEN_WITHIN
        if unknown and 200 <= response.status < 300:
            self.orphaned_subscriptions |= unknown
        if isinstance(faults, SpikyFaults) and faults.local.spiked:
            self.spiked.append(_spiked(response.status, body))
        if 200 <= response.status < 300 and target.startswith("/users/track"):
            errors = (json.loads(response.encoded()) or {}).get("errors") or []
            for err in errors:
                self.row_errors.append((target, str(err.get("type"))))
            if errors and prompt and not (isinstance(faults, SpikyFaults) and faults.local.spiked):
                self.seen_rejections |= _rejected_rows(body, errors)
        return response

    def _unknown_subscribers(self, target: str, body: bytes | None) -> set[str]:
        if not target.startswith("/subscription/status/set") or not body:
            return set()
        try:
            ids = json.loads(body).get("external_id") or []
        except (ValueError, AttributeError):
            return set()
        store = self.handle.store
        with store.lock:
            return {i for i in ([ids] if isinstance(ids, str) else ids) if store.by_external(i) is None}

    def applied_spikes(self) -> list[Spiked]:
        return [s for s in self.spiked if 200 <= s.status < 300]


def _rejected_rows(body: bytes | None, errors: list[dict[str, Any]]) -> set[tuple[str, str]]:
    data = json.loads(body or b"{}")
    rows: set[tuple[str, str]] = set()
    for err in errors:
        array, index = err.get("input_array"), err.get("index")
        obj = (data.get(array) or [])[index] if isinstance(index, int) else None
        if not isinstance(obj, dict):
            continue
        key = obj.get("external_id") if array == "attributes" else (obj.get("properties") or {}).get("order_id")
        rows.add((str(array), str(key)))
    return rows


def _spiked(status: int, body: bytes | None) -> Spiked:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {}
    events = Counter(e.get("properties", {}).get("order_id") for e in data.get("events") or [])
    purchases = Counter(p.get("properties", {}).get("order_id") for p in data.get("purchases") or [])
    items = frozenset(str(i.get("id")) for i in data.get("items") or [] if isinstance(i, dict))
    return Spiked(status, events, purchases, items)


def run_until_clean(cli: Any, max_runs: int = 8) -> list[int]:
    """`reflow run` until it exits 0 and a new plan has nothing left to send; returns the exit codes."""
    codes = []
    for _ in range(max_runs):
        code, out, err = cli("run")
        assert "Traceback" not in err, err
        assert code in (0, 3), f"exit {code}: {out}{err}"
        codes.append(code)
        if code == 0:
            left = plan_json(cli)
            if not left["has_changes"] and not any(s["retry"] for s in left["syncs"]):
                return codes
    raise AssertionError(f"still undelivered rows after {max_runs} runs: {codes}")
