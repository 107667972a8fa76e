"""Progress on stderr: of one report's layers (a transient bar, shown only on a terminal and only after a couple
of seconds, so short reports stay quiet), and of the batches of ``--activations``; never when stderr is piped
or with ``--quiet``."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ._app import stderr

DELAY_SECONDS = 2.0


def progress_wanted(console: Console, enabled: bool = True) -> bool:
    """A bar only for a person watching: stderr is a terminal, and ``--quiet`` was not given."""
    return enabled and console.is_terminal and not console.is_dumb_terminal


class LayerProgress:
    """A ``progress(done, total, name)`` callback for :func:`cbn_inspect.inspect_source` that draws a bar once
    the report has run for :data:`DELAY_SECONDS`. Use as a context manager; the bar is removed at the end."""

    def __init__(self, console: Console, *, enabled: bool = True, delay: float = DELAY_SECONDS) -> None:
        self.console = console
        self.active = progress_wanted(console, enabled)
        self.delay = delay
        self.started = time.monotonic()
        self.bar: Progress | None = None
        self.task = None

    def __enter__(self) -> "LayerProgress | None":
        self.started = time.monotonic()
        return self if self.active else None

    def __call__(self, done: int, total: int, name: str) -> None:
        if self.bar is None:
            if time.monotonic() - self.started < self.delay:
                return
            self.bar = Progress(TextColumn("analysing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.fields[layer]}", markup=False), console=self.console,
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task("layers", total=total, layer="")
        self.bar.update(self.task, completed=done, layer=name[-40:])

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


@contextmanager
def batch_progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing a rich bar, or None when disabled or piped."""
    if not enabled or not stderr.is_terminal:
        yield None
        return
    bar = Progress(TextColumn("activations"), BarColumn(), MofNCompleteColumn(), TextColumn("inputs"),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=stderr, transient=True)
    task = bar.add_task("activations", total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
