"""The records of a series of checkpoints (``track``) and of a pair (``compare``).

They hold the JSON reports (dicts, exactly what ``cbn-inspect SOURCE --json`` writes and what the audit's
JSONL store keeps) and the per-layer, per-step views derived from them by :mod:`.summary`; reporters
(terminal, JSON, figure) read these and never recompute analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .steps import StepInfo


@dataclass(frozen=True)
class SeriesPoint:
    """One checkpoint of a series: its step, and its JSON report (None when its analysis failed)."""

    source: str
    step: StepInfo
    report: Mapping[str, Any] | None = field(default=None, compare=False)
    error_kind: str | None = None
    error_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.report is not None


@dataclass(frozen=True)
class LayerTrack:
    """One layer across the series: a value per point (None where the point lacks the layer or failed)."""

    name: str
    mode_count: tuple[int | None, ...]
    utilisation: tuple[float | None, ...]
    gap_ratio: tuple[float | None, ...]
    spectral_norm: tuple[float | None, ...]
    degree_counts: tuple[Mapping[str, int] | None, ...]
    in_bottleneck: tuple[bool, ...]


@dataclass(frozen=True)
class StepCall:
    """The bottleneck call of one point (``found`` False with ``reason`` when none; ``strength`` always)."""

    step: int
    found: bool
    reason: str
    start: str | None = None
    end: str | None = None
    rank: int | None = None
    type: str | None = None
    strength: float | None = None
    strength_label: str = "none"


@dataclass(frozen=True)
class Series:
    """A training run as checkpoints in step order, per layer and per step.

    ``first_found`` is the first step whose checkpoint has a bottleneck; ``settled`` the first step from
    which every later checkpoint has the same call (start, end, rank and type) as the last one; both None
    when there is none. ``partial_layers`` are layers missing from some successful points.
    """

    points: tuple[SeriesPoint, ...]
    unit: str
    step_source: str
    layers: tuple[LayerTrack, ...]
    calls: tuple[StepCall | None, ...]  # None for a failed point
    first_found: int | None
    settled: int | None
    partial_layers: tuple[str, ...] = ()
    settings: Mapping[str, Any] | None = None

    @property
    def steps(self) -> tuple[int, ...]:
        return tuple(p.step.step for p in self.points)

    @property
    def failed(self) -> tuple[SeriesPoint, ...]:
        return tuple(p for p in self.points if not p.ok)


@dataclass(frozen=True)
class LayerChange:
    """One layer of a comparison: its JSON layer entry on each side (None where absent) and what changed."""

    name: str
    a: Mapping[str, Any] | None = field(compare=False)
    b: Mapping[str, Any] | None = field(compare=False)
    changed: tuple[str, ...]  # of mode_count, degree_counts, spectral_norm, gap_ratio, analysed

    @property
    def paired(self) -> bool:
        return self.a is not None and self.b is not None


@dataclass(frozen=True)
class Comparison:
    """Two reports side by side, layers paired by name; ``rtol`` is the relative change that counts."""

    a: Mapping[str, Any] = field(compare=False)
    b: Mapping[str, Any] = field(compare=False)
    layers: tuple[LayerChange, ...]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    bottleneck_changed: tuple[str, ...]  # of found, start, end, rank, type, strength
    settings_differ: bool
    rtol: float

    @property
    def changed_layers(self) -> tuple[LayerChange, ...]:
        return tuple(c for c in self.layers if c.changed)

    @property
    def unchanged(self) -> bool:
        return not (self.changed_layers or self.only_a or self.only_b or self.bottleneck_changed)
