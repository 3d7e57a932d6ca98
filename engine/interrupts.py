"""Ctrl-C during apply: the first interrupt finishes what is in flight, the second exits at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any


class Interrupts:
    """First SIGINT/SIGTERM: stop taking new batches, finish and record those in flight.
    Second: exit at once with 130 (safe: unrecorded rows are simply planned again).

    Python runs signal handlers in the main thread only, and merges two signals that arrive while
    it sits in a long C call. So the handlers here do nothing; Python's wakeup fd gets one byte per
    signal, whatever thread took it, and a watcher thread counts them."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.saved: dict[int, Any] = {}
        self.pipe: tuple[int, int] | None = None
        self.old_fd = -1

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        self.pipe = os.pipe()
        os.set_blocking(self.pipe[1], False)
        self.old_fd = signal.set_wakeup_fd(self.pipe[1], warn_on_full_buffer=False)
        for sig in self.SIGNALS:
            self.saved[sig] = signal.signal(sig, lambda signum, frame: None)
        threading.Thread(target=self._watch, args=(self.pipe[0],), name="reflow-signals", daemon=True).start()
        return self

    def _watch(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 64)
            except OSError:
                return
            if not data:                        # closed by __exit__: the apply ended normally
                return
            for sig in data:
                if sig not in self.SIGNALS:
                    continue
                if self.stop.is_set():
                    os.write(2, b"\nsecond interrupt: exiting now; unrecorded rows will be planned again\n")
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                    os._exit(130)
                self.stop.set()
                os.write(2, b"\ninterrupt: finishing the batches in flight (press again to exit at once)\n")

    def __exit__(self, *exc: object) -> None:
        if self.pipe is None or self.stop.is_set():
            return      # interrupted: the watcher stays, so a second Ctrl-C while we wrap up still exits 130
        signal.set_wakeup_fd(self.old_fd)
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        os.close(self.pipe[1])
        self.pipe = None
