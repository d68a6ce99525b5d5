"""A small daemon lifecycle shared by the worker and the watchtower: explicit start/stop/join,
a tick function called on an interval, graceful SIGTERM/SIGINT, and an injectable clock so tests
drive time. A failing tick is logged and retried with capped backoff (a signal, not a crash);
state lives in the StateStore, so the loop itself holds nothing that a restart would lose."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from gpumesh.client.core.errors import GpumeshError


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float, stop: threading.Event) -> None: ...


class WallClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds)


class Daemon:
    def __init__(
        self,
        name: str,
        tick: Callable[[], None],
        interval: float = 1.0,
        clock: Clock | None = None,
        max_backoff: float = 30.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self._tick = tick
        self.interval = interval
        self.clock = clock or WallClock()
        self.max_backoff = max_backoff
        self.log = log or logging.getLogger(f"gpumesh.{name}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.errors = 0
        self._failing: str | None = None  # the failure being repeated (logged once), if any
        self._repeats = 0
        self._failing_since = 0.0

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_forever(self) -> None:
        """Foreground run: SIGTERM / SIGINT finish the current tick, then return."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in previous:
            signal.signal(s, lambda *_: self.stop())
        try:
            self._loop()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def tick_once(self) -> bool:
        """One tick with the error policy; True when it succeeded.

        A failure is one WARNING line (the error's own sentence: an RPC outage reads "RPC at URL is
        unreachable (connection refused)"); the same failure again while it lasts is DEBUG only, and
        the first good tick after it says how long it lasted, so an hour's outage is two lines."""
        try:
            self._tick()
        except Exception as exc:  # noqa: BLE001 - retried; the next tick resumes from stored state
            self.errors += 1
            what = str(exc) if isinstance(exc, GpumeshError) else f"{type(exc).__name__}: {exc}"
            if what == self._failing:
                self._repeats += 1
                self.log.debug("%s: tick failed again (%d times), will retry: %s", self.name, self._repeats + 1, what)
            else:
                self._failing, self._repeats, self._failing_since = what, 0, time.monotonic()
                self.log.warning("%s: tick failed, will retry: %s", self.name, what)
            return False
        self.ticks += 1
        if self._failing is not None:
            self.log.info("%s: working again after %d failed tick(s) over %.0fs", self.name, self._repeats + 1,
                          time.monotonic() - self._failing_since)
            self._failing = None
        return True

    def _loop(self) -> None:
        backoff = self.interval
        while not self._stop.is_set():
            ok = self.tick_once()
            backoff = self.interval if ok else min(max(backoff * 2, self.interval), self.max_backoff)
            if self._stop.is_set():
                break
            self.clock.sleep(backoff, self._stop)
