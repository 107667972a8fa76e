"""A progress bar over the batches of ``--activations`` on stderr (off when stderr is not a terminal)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ._app import stderr


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
