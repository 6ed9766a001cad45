"""Progress for long training loops, on stderr so that ``--json`` output on stdout stays clean:
rich's bars (which Typer brings) on a terminal; elsewhere (job logs, pipes) a plain line per
stage every half minute and when it ends, so a 15-minute fit is not silent in a log.
Disabled, they cost nothing."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class _Silent:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


@dataclass
class _Stage:
    description: str
    total: float | None
    info: str
    started: float
    completed: float = 0
    printed: float = 0.0  # when its last line was printed
    ended: bool = False
    finished: float = 0.0  # when it completed


class _LogLines:
    """The progress interface off a terminal: one line per stage every ``every`` seconds, and
    one when it completes (``Progress``'s ``add_task``, ``update`` and ``advance``)."""

    def __init__(self, console: Console, every: float = 30.0):
        self.console, self.every, self.stages = console, every, []

    def add_task(self, description: str, total: float | None = None, info: str = "", **_) -> int:
        self.finish()
        now = time.monotonic()
        self.stages.append(_Stage(description, total, info, started=now, printed=now))
        return len(self.stages) - 1

    def update(self, task: int, *, completed: float | None = None, advance: float = 0, info: str | None = None,
               **_) -> None:
        stage = self.stages[task]
        stage.completed = (stage.completed if completed is None else completed) + advance
        stage.info = stage.info if info is None else info
        if stage.total is not None and stage.completed >= stage.total:
            if not stage.ended:  # its line waits for the stage's last info (the loss after the last step)
                stage.ended, stage.finished = True, time.monotonic()
        elif time.monotonic() - stage.printed >= self.every:
            self._print(stage)

    def finish(self) -> None:
        """Print the line of every stage that has completed since (when the next one starts, or at the end)."""
        for stage in self.stages:
            if stage.ended and stage.printed < stage.finished:
                self._print(stage)

    def _print(self, stage: _Stage) -> None:
        stage.printed = now = time.monotonic()
        of = f"/{stage.total:g}" if stage.total is not None else ""
        info = f", {stage.info}" if stage.info else ""
        end = stage.finished if stage.ended else now
        self.console.print(f"{stage.description}: {stage.completed:g}{of}{info} "
                           f"({end - stage.started:.0f}s{', done' if stage.ended else ''})", highlight=False)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)


@contextmanager
def progress_bars(enabled: bool):
    console = Console(stderr=True, markup=False)
    if not enabled:
        yield _Silent()
        return
    if not console.is_terminal:  # job logs and pipes: no bars, plain lines
        lines = _LogLines(console)
        try:
            yield lines
        finally:
            lines.finish()
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console) as p:
        yield p
