"""Daemon lifecycle: ticks until stopped, failing ticks back off and recover."""

import threading

from gpumesh.node.common.daemon import Daemon


class StepClock:
    def __init__(self):
        self.t = 0.0
        self.sleeps = []

    def now(self):
        return self.t

    def sleep(self, seconds, stop: threading.Event):
        self.sleeps.append(seconds)
        self.t += seconds


def test_failures_back_off_then_recover_and_stop_is_clean():
    calls = []
    clock = StepClock()

    def tick():
        calls.append(clock.now())
        if len(calls) in (2, 3):
            raise RuntimeError("rpc hiccup")
        if len(calls) == 6:
            d.stop()

    d = Daemon("t", tick, interval=1.0, clock=clock, max_backoff=3.0)
    d._loop()  # foreground, driven by the step clock
    assert len(calls) == 6
    assert d.errors == 2 and d.ticks == 4
    # after the 2nd and 3rd ticks failed the wait grows (2s, then capped at 3s), then resets to 1s
    assert clock.sleeps == [1.0, 2.0, 3.0, 1.0, 1.0]


def test_thread_start_stop_join():
    ran = threading.Event()
    d = Daemon("t2", ran.set, interval=0.01)
    d.start()
    assert ran.wait(2)
    d.stop()
    d.join(2)
    assert not d._thread.is_alive()
