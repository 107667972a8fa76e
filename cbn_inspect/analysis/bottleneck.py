"""Locating the bottleneck in a sequence of analysed layers (THEORY.md, "Locating the bottleneck").

The call is a heuristic built on three kinds of evidence, each reported on its own:

- plateau: a contiguous run of main-path layers (entered after the first ``edge`` layers of the path, left
  before the last ``edge``) whose mode counts stay within ``plateau_tolerance`` of the run's lowest, the
  run's rank. Side layers (:mod:`._path`: SE pairs, gates, heads, 1x1-grid layers) are transparent: they
  neither break a run nor belong to one. Layers not analysed, or with all weights zero, break runs.
- utilisation: the run's largest mode count / capacity must stay at or below ``max_utilisation``;
- gap: the smallest kept singular value over the largest discarded one, per layer. The call needs a median
  over the run of at least ``weak_gap``; the bottleneck is *clean* when every layer of the run reaches
  ``min_gap``, and is labelled ``weak`` otherwise.

Every candidate run is examined, not only the one at the lowest count: for each count level, the maximal
runs at that level, except a run beside a lower plateau (a step on the way down to it, or a bump on it).
Each candidate's edges follow the evidence: an end layer whose gap at the run's rank is below ``min_gap``
and more than ``EDGE_FACTOR`` times below the median of the other layers' gaps is an entry or exit layer
and is trimmed off (while the run keeps ``min_plateau`` layers). The best-supported candidate is reported: one that
passes every test before one that does not, then the higher strength, the longer run, the lower rank. The
runner-up (or, when nothing passes, the best candidate) is reported as ``rejected``, with why.

A run with a layer analysed with wrapped taps (grid smaller than the kernel) is never labelled better than
``weak``: its spectra are of the wrapped operator, not of the layer the network runs.

``strength`` (0..1) is the product of a gap score (log10 of the median gap over 2, clipped), a utilisation
score (1 - utilisation / max_utilisation, clipped) and a plateau score (run length / 3, clipped). It is
computed for the best candidate run even when no bottleneck is called, so that checkpoints of one training
run can be compared. Pure code: no I/O.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

from ..records import Bottleneck, LayerEvidence, LayerMetrics, Settings
from ._path import side_layers
from .counting import LEADING_POINTS, NUMERICAL_FLOOR

EDGE_FACTOR = 10.0  # an end layer this many times below the rest of the run (in gap) is not on the plateau


def _strength(gap: float, utilisation: float, length: int, settings: Settings) -> float:
    gap_score = min(1.0, max(0.0, math.log10(gap) / 2.0)) if gap > 0 else 0.0
    util_score = min(1.0, max(0.0, 1.0 - utilisation / settings.max_utilisation))
    plateau_score = min(1.0, length / 3.0)
    return round(gap_score * util_score * plateau_score, 4)


def _label(strength: float) -> str:
    return "strong" if strength >= 0.6 else "moderate" if strength >= 0.3 else "weak"


def _gap(m: LayerMetrics) -> float:
    # A layer that discards nothing has no split at all: its gap counts as 1.
    return m.gap_ratio if m.gap_ratio is not None else 1.0


@dataclass(frozen=True)
class _Candidate:
    run: tuple[int, ...]
    rank: int
    trimmed: tuple[tuple[int, str], ...]
    gaps: tuple[float, ...]
    utilisation: float
    strength: float
    failures: tuple[str, ...]

    @property
    def passes(self) -> bool:
        return not self.failures

    def key(self) -> tuple:
        return (self.passes, self.strength, len(self.run), -self.rank)


def _candidate_runs(segments: list[list[int]], counts: dict[int, int], tolerance: float,
                    min_plateau: int) -> list[list[int]]:
    """Maximal runs per count level, except those beside a lower plateau (module docstring)."""
    out = []
    for seg in segments:
        position = {i: k for k, i in enumerate(seg)}
        plateau: set[int] = set()  # layers of runs at lower levels that persist over min_plateau layers
        for level in sorted({counts[i] for i in seg}):
            limit = level * (1.0 + tolerance)
            runs, current = [], []
            for i in seg + [None]:  # type: ignore[operator]
                if i is not None and level <= counts[i] <= limit:
                    current.append(i)
                    continue
                if current and any(counts[j] == level for j in current):
                    runs.append(current)
                current = []
            for run in runs:
                first, last = position[run[0]], position[run[-1]]
                beside = [seg[k] for k in (first - 1, last + 1) if 0 <= k < len(seg)]
                if not any(counts[j] < level and j in plateau for j in beside):
                    out.append(run)
            plateau.update(i for run in runs if len(run) >= min_plateau for i in run)
    return out


def _trim(run: list[int], metrics: Sequence[LayerMetrics], names: Sequence[str],
          settings: Settings) -> tuple[list[int], list[tuple[int, str]]]:
    """Drop entry/exit layers whose gap at the run's rank is far below the rest of the run."""
    trimmed: list[tuple[int, str]] = []
    while len(run) > settings.min_plateau:
        rank = min(metrics[i].mode_count for i in run)
        worst = None
        for end in (0, len(run) - 1):
            m = metrics[run[end]]
            at_rank = m.gap_at(rank)
            gap = at_rank if at_rank is not None else _gap(m)
            rest = statistics.median(_gap(metrics[j]) for k, j in enumerate(run) if k != end)
            if gap < settings.min_gap and gap * EDGE_FACTOR < rest and (worst is None or gap / rest < worst[0]):
                worst = (gap / rest, end, gap, rest)
        if worst is None:
            break
        _, end, gap, rest = worst
        index = run.pop(end)
        trimmed.append((index, f"{'entry' if end == 0 else 'exit'} layer: its gap at {rank} modes is "
                               f"{gap:.3g}x, far below the rest of the run (median {rest:.3g}x)"))
    return run, trimmed


def _evaluate(run: list[int], metrics: Sequence[LayerMetrics], names: Sequence[str],
              settings: Settings) -> _Candidate:
    run, trimmed = _trim(list(run), metrics, names, settings)
    return _judge(run, tuple(trimmed), tuple(_gap(metrics[i]) for i in run), metrics, names, settings)


def _bounds(m: LayerMetrics, counted: bool) -> tuple[float, float]:
    """(lower, upper) bounds on :func:`_gap` of a layer: the value itself where known, else (a counts-route
    layer that keeps some values and discards others) its ``gap_bounds``. A counts-route layer that keeps
    every value or none has no gap on either route: 1."""
    if counted and m.gap_bounds is not None:
        return m.gap_bounds
    gap = _gap(m)
    return gap, gap


def _bounds_at(m: LayerMetrics, rank: int, counted: bool) -> tuple[float, float]:
    """Bounds on what :func:`_trim` reads of an end layer at ``rank``: ``m.gap_at(rank)``, or ``_gap(m)``
    where that is None. A counts-route layer has no ``leading`` values, but the full route's would hold
    ``min(LEADING_POINTS, capacity)`` of them, so which case applies is known. An unknown ``gap_at`` is a
    ratio of two of the layer's largest values (descending) with the denominator floored at 1e-7 sigma_max:
    at least 1 where both lie above that floor. Where the layer keeps every value both lie above the
    threshold t, so it is at least ``t / max(t, floor)``; otherwise nothing is known (0)."""
    if not counted:
        at = m.gap_at(rank)
        gap = at if at is not None else _gap(m)
        return gap, gap
    if rank == m.mode_count or rank < 1 or rank >= min(LEADING_POINTS, m.capacity):
        return _bounds(m, counted)
    if m.mode_count == m.capacity and m.spectral_norm > 0:
        floor = m.spectral_norm * NUMERICAL_FLOOR
        return m.threshold / max(m.threshold, floor), math.inf
    return 0.0, math.inf


def _evaluate_bounded(run: list[int], metrics: Sequence[LayerMetrics], names: Sequence[str],
                      settings: Settings, counted: Collection[int]) -> _Candidate | None:
    """:func:`_evaluate` where the layers in ``counted`` (counts route) have only bounded gaps, or None where
    the bounds leave anything it reports or decides open. It decides when no end layer can be trimmed
    whatever the gaps within their bounds, the run's smallest and median gap are pinned (min and median are
    monotone in every argument, so they lie between their values at the lower and at the upper bounds), and
    every layer is either surely clean or surely not. Then the candidate is the one exact gaps give: the
    lower bounds have the same minimum, median and clean layers."""
    run = list(run)
    bounds = [_bounds(metrics[i], i in counted) for i in run]
    if len(run) > settings.min_plateau:  # _trim's first step must surely trim nothing
        rank = min(metrics[i].mode_count for i in run)
        for end in (0, len(run) - 1):
            low, _ = _bounds_at(metrics[run[end]], rank, run[end] in counted)
            rest_high = statistics.median(b[1] for k, b in enumerate(bounds) if k != end)
            # trimmed iff gap < min_gap and gap * EDGE_FACTOR < rest; gap >= low and rest <= rest_high
            if not (low >= settings.min_gap or low * EDGE_FACTOR >= rest_high):
                return None
    lows, highs = [b[0] for b in bounds], [b[1] for b in bounds]
    if min(lows) != min(highs) or statistics.median(lows) != statistics.median(highs):
        return None
    if any(low < settings.min_gap <= high for low, high in bounds):
        return None
    return _judge(run, (), tuple(lows), metrics, names, settings)


def _judge(run: list[int], trimmed: tuple[tuple[int, str], ...], gaps: tuple[float, ...],
           metrics: Sequence[LayerMetrics], names: Sequence[str], settings: Settings) -> _Candidate:
    """The candidate of a trimmed run with these gaps (one per layer)."""
    run_metrics = [metrics[i] for i in run]
    rank = min(m.mode_count for m in run_metrics)
    typical = float(statistics.median(gaps))
    utilisation = max(m.utilisation for m in run_metrics)
    failures = []
    if len(run) < settings.min_plateau:
        failures.append(f"a count of {rank} modes (layer {names[run[0]]}) does not persist over "
                        f"{settings.min_plateau} layers")
    if utilisation > settings.max_utilisation:
        failures.append(f"the narrowest layers still use {utilisation:.0%} of their capacity "
                        f"(a bottleneck uses at most {settings.max_utilisation:.0%})")
    if typical <= 1.0:
        failures.append("no split between kept and discarded singular values")
    elif typical < settings.weak_gap:
        failures.append(f"kept singular values are only {typical:.3g}x above the discarded ones (median over the "
                        f"run; a split needs {settings.weak_gap:g}x, a clean one {settings.min_gap:g}x)")
    return _Candidate(run=tuple(run), rank=rank, trimmed=trimmed, gaps=gaps, utilisation=utilisation,
                      strength=_strength(typical, utilisation, len(run), settings), failures=tuple(failures))


def _key_bound(run: list[int], metrics: Sequence[LayerMetrics], settings: Settings) -> tuple:
    """An upper bound on ``_evaluate(run).key()`` from counts alone (no gaps): trimming only removes end
    layers while more than ``min_plateau`` remain, so the trimmed run is at most as long, its rank at least the
    lowest count, and its utilisation at least the least, over windows of ``min_plateau`` layers, of a
    window's largest; the gap score is at most 1."""
    width = min(len(run), settings.min_plateau)
    util = [metrics[i].utilisation for i in run]
    least = min(max(util[k: k + width]) for k in range(len(run) - width + 1))
    passes = len(run) >= settings.min_plateau and least <= settings.max_utilisation
    strength = _strength(100.0, least, len(run), settings)  # gap 100x: the gap score's ceiling of 1
    return (passes, strength, len(run), -min(metrics[i].mode_count for i in run))


def _describe(c: _Candidate, names: Sequence[str], reason: str) -> dict:
    return {"start": names[c.run[0]], "end": names[c.run[-1]], "start_index": c.run[0], "end_index": c.run[-1],
            "rank": c.rank, "strength": c.strength, "reason": reason}


def _rejection(other: _Candidate, best: _Candidate) -> str:
    if not other.passes:
        return "; ".join(other.failures)
    return (f"weaker support than the reported run (strength {other.strength:.2f} against {best.strength:.2f}, "
            f"{len(other.run)} layers against {len(best.run)})")


def locate_bottleneck(
    names: Sequence[str],
    metrics: Sequence[LayerMetrics | None],
    settings: Settings,
    *,
    layers: Sequence[LayerEvidence | None] | None = None,
    counts_only: Collection[int] = (),
    full_metrics: Callable[[int], LayerMetrics] | None = None,
) -> Bottleneck:
    """The bottleneck of layers in data-flow order; ``metrics[i]`` is None for a layer not analysed.

    ``layers`` (optional, one per name) adds what the counts alone do not say: channels and grids (to find
    side layers) and whether taps were wrapped. Without it, side layers are judged from the metrics' grids
    and capacities and the names.

    ``counts_only`` names layers analysed by the counts route (their gaps are only bounded, ``gap_bounds``)
    and ``full_metrics(i)`` gives such a layer's full-route metrics. Candidate runs depend on counts alone.
    A candidate is first evaluated on the bounds (:func:`_evaluate_bounded`); only where they leave its
    trimming, smallest or median gap or clean layers open are its counts-route layers completed. Candidates
    are evaluated in the order of an upper bound on their sort key (:func:`_key_bound`, from counts alone)
    until the two best are known. The call is therefore the one every layer on the full route gives, at the
    cost of the layers it needs.
    """
    evidence = list(layers) if layers is not None else [None] * len(names)
    side = side_layers(names, metrics, evidence)
    side_info = tuple(side.items())
    edge = settings.edge_layers
    path = [i for i in range(len(names)) if i not in side]
    # Layers not analysed, and layers whose weights are all zero (nothing flows through them: e.g. timm's
    # zero-initialised last BatchNorm of a residual block, folded in), are not candidates and break runs.
    interior = path[edge: len(path) - edge]
    usable = {i for i in interior if metrics[i] is not None and metrics[i].spectral_norm > 0}  # type: ignore
    if len(usable) < settings.min_plateau:
        need = 2 * edge + settings.min_plateau
        off = f", {len(side)} more off the main path" if side else ""
        return Bottleneck(found=False, side_layers=side_info, reason=(
            f"too few analysed layers ({len(path)}{off}); a bottleneck needs at least {need}"))
    segments: list[list[int]] = [[]]
    for i in interior:
        if i in usable:
            segments[-1].append(i)
        elif segments[-1]:
            segments.append([])
    counts = {i: metrics[i].mode_count for i in usable}  # type: ignore[union-attr]
    ms: list[LayerMetrics] = list(metrics)  # type: ignore[arg-type]
    runs = _candidate_runs([s for s in segments if s], counts, settings.plateau_tolerance, settings.min_plateau)
    pending = set(counts_only) if full_metrics is not None else set()

    def evaluate(run: list[int]) -> _Candidate:
        if pending.intersection(run):
            bounded = _evaluate_bounded(run, ms, names, settings, pending)
            if bounded is not None:
                return bounded  # the gaps' bounds decide everything: no layer need be completed
        for i in run:
            if i in pending:
                ms[i] = full_metrics(i)  # type: ignore[misc]
                pending.discard(i)
        return _evaluate(run, ms, names, settings)

    if not pending.intersection(i for run in runs for i in run):
        evaluated = {k: evaluate(run) for k, run in enumerate(runs)}
    else:
        bounds = [_key_bound(run, ms, settings) for run in runs]
        evaluated = {}
        for k in sorted(range(len(runs)), key=lambda k: bounds[k], reverse=True):
            keys = sorted((c.key() for c in evaluated.values()), reverse=True)
            if len(keys) >= 2 and bounds[k] < keys[1]:
                break  # neither this candidate nor any after it can be among the two best
            evaluated[k] = evaluate(runs[k])
    candidates = sorted((evaluated[k] for k in sorted(evaluated)), key=_Candidate.key, reverse=True)
    best = candidates[0]
    runner_up = candidates[1] if len(candidates) > 1 else None
    return _bottleneck(best, runner_up, ms, names, evidence, side_info, settings)


def _bottleneck(best: _Candidate, runner_up: _Candidate | None, metrics: Sequence[LayerMetrics],
                names: Sequence[str], evidence: Sequence[LayerEvidence | None], side_info: tuple,
                settings: Settings) -> Bottleneck:
    run, lowest = best.run, best.rank
    run_metrics = [metrics[i] for i in run]
    narrowest = next(m for m in run_metrics if m.mode_count == lowest)
    gaps = best.gaps
    gap, typical_gap = min(gaps), float(statistics.median(gaps))
    clean_layers = sum(g >= settings.min_gap for g in gaps)
    clean = gap >= settings.min_gap
    utilisation = best.utilisation
    metric = settings.degree_metric
    types = [dict(m.degree_counts[metric]) for m in run_metrics]
    wrapped = tuple(i for i in run if evidence[i] is not None and evidence[i].wrapped)  # type: ignore[union-attr]
    start, end = names[run[0]], names[run[-1]]
    found = best.passes
    if found and clean:
        reason = (f"layers {start} to {end} keep {lowest} modes ({utilisation:.1%} of capacity at most), "
                  f"kept values at least {gap:.3g}x above the rest")
    elif found:
        reason = (f"layers {start} to {end} keep {lowest} modes ({utilisation:.1%} of capacity at most), but the "
                  f"split is clean ({settings.min_gap:g}x) in only {clean_layers} of {len(run)} layers: kept values "
                  f"are a median {typical_gap:.3g}x (at least {gap:.3g}x) above the rest")
    else:
        reason = "; ".join(best.failures)
    label = ("weak" if not clean else _label(best.strength)) if found else "none"
    cap = None
    if found and wrapped:
        cap = (f"{len(wrapped)} layer(s) of the run were analysed with their taps wrapped (grid smaller than the "
               f"kernel): the spectra are those of the wrapped operator, not of the layer the network runs")
        label = "weak"
        reason += f"; labelled weak at most: {cap}"
    if found:
        rejected = _describe(runner_up, names, _rejection(runner_up, best)) if runner_up else None
    else:
        rejected = _describe(best, names, reason)
    return Bottleneck(
        found=found,
        reason=reason,
        start=start if found else None,
        end=end if found else None,
        start_index=run[0] if found else None,
        end_index=run[-1] if found else None,
        rank=lowest if found else None,
        degree_counts=dict(narrowest.degree_counts[metric]) if found else {},
        frequencies=narrowest.kept_on_full_grid() if found else (),
        strength=best.strength,
        strength_label=label,
        gap_ratio=gap,
        typical_gap_ratio=typical_gap,
        clean=found and clean,
        clean_layers=clean_layers,
        utilisation=utilisation,
        plateau_length=len(run),
        consistent_type=all(t == types[0] for t in types),
        candidate={"start": start, "end": end, "rank": lowest},
        members=run if found else (),
        side_layers=side_info,
        trimmed=best.trimmed,
        rejected=rejected,
        wrapped_layers=wrapped,
        label_cap=cap,
    )
