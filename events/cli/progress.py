"""Progress of a long command on stderr, drawn by rich: a bar with counts, rate and time left
on a terminal; elsewhere (a log, CI, a pipe) no bar, a plain line every few seconds, so a
short run writes nothing there and a long one leaves a readable record.

Callers report from their hot loops, so :meth:`Meter.update` looks at the clock only every
256 events, and rich (and its import, ~50 ms) is reached only when something is drawn:
rich's own refresh thread is not started, the bar is redrawn when an update is due.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["Meter"]


class Meter:
    """``label``: what is being done; ``total``: the units to do (events, or bytes of a
    file), None when unknown. ``update(done, count)`` reports units done and events so far;
    ``finish()`` (or leaving a ``with`` block) ends the bar's line."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.label, self.total, self.clock = label, total, clock
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s if every_s is not None else (0.1 if self.tty else 2.0)
        self.started = clock()
        self._next = self.started + self.every_s
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Meter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish()

    def update(self, done: int, count: int) -> None:
        """``done`` units of ``total``, ``count`` events so far."""
        if count & 255:  # the clock only every 256 events: this is the caller's hot loop
            return
        now = self.clock()
        if now >= self._next:
            self._next = now + self.every_s
            self.show(done, count, now)

    def show(self, done: int, count: int, now: float | None = None) -> None:
        """Draws now (a line, off a terminal), whatever the clock says."""
        progress, task = self._drawn()
        elapsed = max((self.clock() if now is None else now) - self.started, 1e-9)
        progress.update(task, completed=done, count=count, rate=count / elapsed)
        if self.tty:
            progress.refresh()
        else:
            progress.console.print(progress.make_tasks_table(progress.tasks))

    def finish(self) -> None:
        if self._progress is not None and self.tty:
            self._progress.stop()  # leaves the last bar on its line, then a new line
        self._progress = None

    def _drawn(self) -> tuple[Progress, TaskID]:
        if self._progress is not None and self._task is not None:
            return self._progress, self._task
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        columns: list[Any] = [TextColumn("{task.description} {task.fields[count]:,} events")]
        if self.total:  # else no share done, and no time left to tell
            columns.insert(1, TaskProgressColumn())
        columns.append(TextColumn("{task.fields[rate]:,.0f} events/s"))
        if self.total:
            columns.append(TimeRemainingColumn())
        if self.tty:
            columns.insert(0, BarColumn(bar_width=24))
        console = Console(file=self.stream, force_terminal=self.tty, highlight=False)
        progress = Progress(
            *columns,
            console=console,
            auto_refresh=False,  # redrawn by show(), from the caller's loop
            redirect_stdout=False,
            redirect_stderr=False,
            get_time=self.clock,
        )
        task = progress.add_task(self.label, total=self.total, count=0, rate=0.0)
        if self.tty:
            progress.start()
        self._progress, self._task = progress, task
        return progress, task
