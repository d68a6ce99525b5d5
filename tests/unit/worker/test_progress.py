"""LogProgress (the worker's progress off a terminal): a long job logs a handful of lines, not one
every few units (issue #16, stumble 4: 1,265 lines for one job)."""

from __future__ import annotations

import logging

from gpumesh.node.worker.progress import LogProgress


def test_a_long_job_logs_about_ten_progress_lines(caplog):
    t = [0.0]
    p = LogProgress(logging.getLogger("gpumesh.test.progress"), seconds=30.0, clock=lambda: t[0])
    with caplog.at_level(logging.INFO, logger="gpumesh.test.progress"):
        p.start(1, 10_000, 0)
        for done in range(1, 10_001):
            t[0] += 0.1  # 1,000 s in all
            p.advance(1, done)
        p.finish(1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "job 1: executing, 0/10000 units done"
    assert lines[-1] == "job 1: 10000/10000 units done"
    assert 5 <= len(lines) <= 12, lines


def test_a_quick_job_logs_its_start_and_end_only(caplog):
    p = LogProgress(logging.getLogger("gpumesh.test.progress2"), clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="gpumesh.test.progress2"):
        p.start(2, 17, 0)
        for done in range(1, 18):
            p.advance(2, done)
    assert [r.getMessage() for r in caplog.records] == ["job 2: executing, 0/17 units done",
                                                        "job 2: 17/17 units done"]
