"""Progress bars for long training loops (rich, which Typer brings), on stderr so that
``--json`` output on stdout stays clean; shown only on a terminal. Disabled, they cost nothing."""

from __future__ import annotations

from contextlib import contextmanager

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


@contextmanager
def progress_bars(enabled: bool):
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:  # no bars in logs and pipes
        yield _Silent()
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console) as p:
        yield p
