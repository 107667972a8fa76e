"""Resource bounds of one analysis: memory (``--max-memory``), layers (``--max-layers``), time (``--timeout``).

Checked before the work they bound: the layer count right after loading, every layer's estimated working
set (:func:`cbn_inspect.analysis.budget.layer_working_set`) against what is left of ``--max-memory`` after
the process's own resident memory, before any weight is read; the time budget between layers. A source past
a bound raises :class:`ResourceLimitError` (exit code 7, an error row in a batch) naming the layer and the
bound. :func:`hard_deadline` backs the cooperative time check for the CLI: a single step that overruns by
more than a grace period ends the process with the same one line and exit code.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Iterable

from .analysis.budget import format_bytes, layer_working_set, spectrum_bytes
from .errors import ResourceLimitError
from .loaders._policy import default_max_memory_mb
from .records import ConvLayer, Settings

HARD_DEADLINE_GRACE_S = 5.0


def current_rss_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``; the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def max_memory_bytes(settings: Settings) -> int:
    return (settings.max_memory_mb or default_max_memory_mb()) * 2**20


def check_layer_count(count: int, settings: Settings, path: str) -> None:
    if count > settings.max_layers:
        raise ResourceLimitError(f"{path}: {count} conv layers, more than --max-layers {settings.max_layers}",
                                 hint="raise --max-layers, or pick some with --layers REGEX")


def memory_room(settings: Settings) -> int:
    """Bytes of --max-memory not yet used by this process."""
    return max_memory_bytes(settings) - current_rss_bytes()


def check_memory(layers: Iterable[ConvLayer], settings: Settings, path: str) -> list[int]:
    """Each layer's estimated working set; refuses, before any analysis, a layer (with the spectra kept
    before it) that would pass ``--max-memory``. The caller keeps layers in flight within the room left."""
    limit = max_memory_bytes(settings)
    room = memory_room(settings)
    kept, needs = 0, []
    for layer in layers:
        need = layer_working_set(layer, settings.memory_budget_mb)
        if need + kept > room:
            grid = "x".join(str(v) for v in layer.grid or ())
            raise ResourceLimitError(
                f"{path}: layer {layer.name} on grid {grid} ({layer.grid_source}) needs about "
                f"{format_bytes(need + kept)} to analyse; --max-memory {limit // 2**20} MB leaves "
                f"{format_bytes(max(room, 0))} after the {format_bytes(limit - room)} in use",
                hint="a smaller --grid, fewer layers (--layers), or a larger --max-memory")
        if settings.keep_spectra:
            kept += spectrum_bytes(layer)
        needs.append(need)
    return needs


class TimeBudget:
    """A per-source deadline, checked between steps (load, each layer)."""

    def __init__(self, seconds: float | None, path: str) -> None:
        self.seconds = seconds
        self.path = path
        self.started = time.monotonic()

    def check(self, where: str) -> None:
        if self.seconds is not None and time.monotonic() - self.started > self.seconds:
            raise ResourceLimitError(f"{self.path}: time budget of {self.seconds:g} s (--timeout) exceeded {where}")


def hard_deadline(seconds: float | None, path: str) -> threading.Timer | None:
    """For the CLI: past ``seconds`` + grace, print the timeout line and end the process (exit 7).

    The cooperative checks of :class:`TimeBudget` end a run between layers; this catches one step (a single
    huge layer, a slow read) that overruns. Returns the started timer (cancel it when done), or None.
    """
    if seconds is None:
        return None

    def expire() -> None:
        sys.stderr.write(f"cbn-inspect: error: {path}: time budget of {seconds:g} s (--timeout) exceeded "
                         f"(stopped {HARD_DEADLINE_GRACE_S:g} s after it, in the middle of a step)\n")
        sys.stderr.flush()
        os._exit(ResourceLimitError.exit_code)

    timer = threading.Timer(seconds + HARD_DEADLINE_GRACE_S, expire)
    timer.daemon = True
    timer.start()
    return timer
