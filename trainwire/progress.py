"""Progress while a command works: one live line on stderr (rich), shown only when stderr is a terminal.

Every command that works for a while (``trainwire demo``, ``worker``, ``analyze``) shows its
progress through :class:`Progress` and prints a one-line summary when it is done. When stderr is
not a terminal (piped, redirected, a CI log) a :class:`Progress` shows nothing at all, so the
output stays what the command prints::

    with Progress("analyze", total=len(queries)) as progress:
        for done, query in enumerate(queries, 1):
            run(query)
            progress.update(done, f"{done}/{len(queries)} queries")

The line is erased when the command is done (its summary takes its place).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["Progress", "RateMeter", "stderr_is_terminal"]

Status = str | Callable[[], str]
"""What the line says after the bar: a text, or a function asked for the text at each refresh."""


def stderr_is_terminal() -> bool:
    """True when this process's stderr is a terminal (where a live progress line belongs)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _stdout_is_terminal() -> bool:
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """A live progress line on stderr: a description, a bar, a status text and the time elapsed.

    Args:
        description: what is being done (``"training"``, ``"worker"``).
        total: how many units there are (steps, queries); None for work with no known end (a
            worker): the bar then pulses.
        status: the first status text (see :meth:`update`).
        refresh_per_second: how often the line is redrawn.

    Shown only when stderr is a terminal (:attr:`shown`); otherwise every method does nothing.
    """

    def __init__(self, description: str, total: int | None = None, status: Status = "", refresh_per_second: float = 4):
        self.description = description
        self.total = total
        self._status: Status = status
        self._rich: Any = None
        self._task: Any = None
        self.shown = stderr_is_terminal()
        if self.shown:
            from rich.console import Console
            from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            owner = self

            class StatusColumn(ProgressColumn):
                def render(self, task: Any) -> Text:
                    return Text(owner.status_text())

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                StatusColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
                redirect_stdout=_stdout_is_terminal(),  # then printed above the line; else left to its pipe
                refresh_per_second=refresh_per_second,
            )

    def status_text(self) -> str:
        """The status text now (a status function is asked at each call)."""
        return self._status() if callable(self._status) else self._status

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._rich is not None:
            self._rich.stop()

    def update(self, completed: int | None = None, status: Status | None = None, total: int | None = None) -> None:
        """Set how many units are done, the status text (or the function that gives it), the total."""
        if status is not None:
            self._status = status
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, completed=completed, total=total, refresh=True)


class RateMeter:
    """How fast a growing count grows: per second, over the last ``window_s`` seconds.

    Call it with the count now; it returns the rate since the oldest reading within the window.
    """

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self._readings: deque[tuple[float, int]] = deque()

    def __call__(self, count: int) -> float:
        now = time.monotonic()
        self._readings.append((now, count))
        while len(self._readings) > 2 and now - self._readings[1][0] >= self.window_s:
            self._readings.popleft()
        since, first = self._readings[0]
        return (count - first) / (now - since) if now > since else 0.0
