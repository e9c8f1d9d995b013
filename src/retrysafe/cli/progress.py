"""Progress bars for long maintenance work (purging, migrating), drawn only for a person.

The bars go to stderr and only when it is a terminal: stdout stays the command's
result (scripts parse it), and a log file never fills with redraws.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["Bars", "bars"]


class Bars:
    """A set of labelled bars; each step reports how far one of them got."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def start(self, label: str, total: int) -> None:
        """A new bar (or the existing one for ``label``) with ``total`` steps."""
        if label in self._tasks:
            self._progress.update(self._tasks[label], total=total)
        else:
            self._tasks[label] = self._progress.add_task(label, total=total)

    def advance(self, label: str, steps: int = 1) -> None:
        self._progress.advance(self._tasks[label], steps)

    def finish(self, label: str) -> None:
        """Mark ``label`` complete (a count taken up front may have been an estimate)."""
        task = self._tasks[label]
        total = self._progress.tasks[task].total or 0
        done = self._progress.tasks[task].completed
        self._progress.update(task, total=max(total, done), completed=max(total, done))


@contextmanager
def bars(console: Console | None = None) -> Iterator[Bars]:
    """Live bars on ``console`` (stderr by default); silent when it is not a terminal."""
    console = console or Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with progress:
        yield Bars(progress)
