"""Series of checkpoints: ``track`` (one training run, in step order), ``compare`` (two checkpoints), and the
training-time :class:`Monitor` (the same analysis on a live module).

A series is records too (:mod:`.records`): the JSON reports of its checkpoints, computed by the audit's
workers and kept in its resumable JSONL store (:mod:`.track`), lined up per layer and per step by the pure
functions of :mod:`.summary`. Reporters: ``report/series_terminal.py``, ``report/series_json.py``,
``report/series_figures.py``.
"""

from .monitor import Monitor
from .records import Comparison, LayerChange, LayerTrack, Series, SeriesPoint, StepCall
from .steps import StepInfo, order_by_step, step_from_file, step_from_name
from .summary import build_series, compare_reports
from .track import expand_series_sources, read_monitor_file, run_track

__all__ = [
    "Comparison", "LayerChange", "LayerTrack", "Monitor", "Series", "SeriesPoint", "StepCall", "StepInfo",
    "build_series", "compare_reports", "expand_series_sources", "order_by_step", "read_monitor_file",
    "run_track", "step_from_file", "step_from_name",
]
