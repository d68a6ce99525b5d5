"""A rich progress bar per job (units done / total) for `gpumesh worker run` on a terminal; a
plain log line per chunk elsewhere. Implements gpumesh.node.worker.node.Progress."""

from __future__ import annotations

import logging


class RichProgress:
    def __init__(self, console=None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self._bar = Progress(TextColumn("[bold]job {task.fields[job]}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("units"), TimeElapsedColumn(), console=self.console, transient=False)
        self._tasks: dict[int, int] = {}
        self._live = False

    def start(self, job_id: int, total: int, done: int) -> None:
        if not self._live:
            self._bar.start()
            self._live = True
        if job_id not in self._tasks:
            self._tasks[job_id] = self._bar.add_task("exec", total=total, completed=done, job=job_id)

    def advance(self, job_id: int, done: int) -> None:
        if job_id in self._tasks:
            self._bar.update(self._tasks[job_id], completed=done)

    def finish(self, job_id: int) -> None:
        if job_id in self._tasks:
            self._bar.update(self._tasks.pop(job_id), visible=True)
        if not self._tasks and self._live:
            self._bar.stop()
            self._live = False


class LogProgress:
    """For logs and pipes: one line at the start, then at most one per `seconds` and per tenth of
    the job (a 1,000-unit job logs about ten lines, not one per few units), and one at the end."""

    def __init__(self, log: logging.Logger | None = None, seconds: float = 30.0,
                 clock=None) -> None:
        import time

        self.log = log or logging.getLogger("gpumesh.worker")
        self.seconds = seconds
        self.clock = clock or time.monotonic
        self._total: dict[int, int] = {}
        self._last: dict[int, tuple[float, int]] = {}  # job -> (time, units) of its last line

    def start(self, job_id: int, total: int, done: int) -> None:
        if job_id not in self._total:
            self._total[job_id] = total
            self._last[job_id] = (self.clock(), done)
            self.log.info("job %d: executing, %d/%d units done", job_id, done, total)

    def advance(self, job_id: int, done: int) -> None:
        total = self._total.get(job_id, 0)
        at, units = self._last.get(job_id, (0.0, 0))
        now = self.clock()
        if done == total or (now - at >= self.seconds and done - units >= max(1, total // 10)):
            self._last[job_id] = (now, done)
            self.log.info("job %d: %d/%d units done", job_id, done, total)

    def finish(self, job_id: int) -> None:
        self._total.pop(job_id, None)
        self._last.pop(job_id, None)
