"""Counting kept directions of one layer (THEORY.md, "Counting kept directions").

A tolerance rule splits the layer's singular values (over every frequency of the full grid) into kept and
discarded; the kept ones are counted in total (the mode count), per frequency degree (l1 and l-inf), per
complex frequency and per conjugate pair. Threshold-free companions (stable rank, entropy effective rank,
spectral norm, energy share per degree) come with them. Pure numpy: no I/O.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from ..records import LayerMetrics, Spectrum, ToleranceRule

if TYPE_CHECKING:
    from .counts import FrequencyCounts

TOLERANCE_RULES = ("relative", "absolute", "gap", "energy")
DEGREE_METRICS = ("l1", "linf")
# Values below this share of the layer's largest are numerical zero in float32; gap ratios use it as floor.
NUMERICAL_FLOOR = 1e-7
PROFILE_POINTS = 16
# The largest values kept in LayerMetrics.leading (for the gap at another layer's count, THEORY.md
# "Locating the bottleneck"); a bottleneck's rank is far below it.
LEADING_POINTS = 1024


def frequency_degrees(freqs: np.ndarray, grid: tuple[int, ...], metric: str) -> np.ndarray:
    """Wrapped distance of each frequency from 0, combined over axes by the l1 sum or the l-inf max."""
    grid_arr = np.asarray(grid, dtype=np.int64)
    wrapped = np.minimum(freqs, grid_arr - freqs)
    if metric == "l1":
        return wrapped.sum(axis=1)
    if metric == "linf":
        return wrapped.max(axis=1)
    raise ValueError(f"unknown degree metric {metric!r}")


def _threshold(values: np.ndarray, weights: np.ndarray, rule: ToleranceRule, vmax: float) -> tuple[float, bool]:
    """Threshold for the rule, and whether a value equal to it is kept (energy rule) or not."""
    if rule.name == "relative":
        return rule.value * vmax, False
    if rule.name == "absolute":
        return rule.value, False
    if rule.name == "gap":
        # Sorted distinct levels; values below the numerical floor are zeros, always discarded, and the
        # step down to them counts as a gap only when there are such zeros.
        floor = vmax * NUMERICAL_FLOOR
        levels = np.unique(values[values > floor])[::-1]
        if (values <= floor).any():
            levels = np.append(levels, floor)
        if len(levels) < 2:
            return (floor if (values <= floor).any() else 0.0), False
        ratios = levels[:-1] / levels[1:]
        best = int(np.argmax(ratios))
        if ratios[best] < rule.value:  # no step large enough to be a split: every non-zero value is kept
            return floor, False
        return float(levels[best + 1]), False
    if rule.name == "energy":
        order = np.argsort(values)[::-1]
        energy = np.cumsum(values[order] ** 2 * weights[order])
        k = int(np.searchsorted(energy, rule.value * energy[-1] * (1 - 1e-12)))
        return float(values[order][min(k, len(order) - 1)]), True
    raise ValueError(f"unknown tolerance rule {rule.name!r}")


def _by_degree(degrees: np.ndarray, per_row: np.ndarray) -> dict[int, float]:
    totals = np.bincount(degrees, weights=per_row)
    return {int(deg): float(v) for deg, v in enumerate(totals)}


def count_modes(spectrum: Spectrum, rule: ToleranceRule) -> LayerMetrics:
    """Mode count, per-degree counts and soft measures of one layer's spectrum under ``rule``.

    Only what the layer can hold counts: structural zeros (``spectrum.rank_bound``, the empty polyphase
    components of a strided 1x1 conv) are neither capacity nor discarded values.
    """
    vals, mult = spectrum.values[:, : spectrum.width], spectrum.multiplicity
    flat = vals.ravel()
    weights = np.repeat(mult, vals.shape[1]).astype(np.float64)
    vmax = float(flat.max()) if flat.size else 0.0
    capacity = spectrum.count

    if vmax <= 0.0:
        kept = np.zeros(vals.shape, dtype=bool)
        threshold = 0.0
    else:
        threshold, inclusive = _threshold(flat, weights, rule, vmax)
        kept = vals >= threshold if inclusive else vals > threshold
        kept &= vals > 0

    kept_rows = kept.sum(axis=1)
    smallest_kept = float(vals[kept].min()) if kept.any() else None
    largest_discarded = float(vals[~kept].max()) if (~kept).any() else None
    gap = None
    if smallest_kept is not None and largest_discarded is not None:
        gap = smallest_kept / max(largest_discarded, vmax * NUMERICAL_FLOOR)
    if vmax > 0:
        p = flat * weights / float((flat * weights).sum())
        nz = p > 0
        effective_rank = float(np.exp(-(p[nz] * np.log(p[nz] / weights[nz])).sum()))
    else:
        effective_rank = 0.0
    return _assemble(spectrum.frequencies, spectrum.grid, mult, kept_rows, (vals**2).sum(axis=1), vmax,
                     threshold, capacity, effective_rank=effective_rank, smallest_kept=smallest_kept,
                     largest_discarded=largest_discarded, gap=gap, profile=_profile(flat, weights),
                     leading=_leading(flat, weights))


def metrics_from_counts(counts: "FrequencyCounts") -> LayerMetrics:
    """The layer's metrics from the counts route (:mod:`.counts`): every count, the largest value, the
    stable rank and the energy per degree, as :func:`count_modes` gives them from the full spectrum; what
    needs every value (effective rank, smallest kept and largest discarded value, gap, profile) is None
    or empty. Where the layer keeps some values and discards others, ``gap_bounds`` brackets the gap ratio
    the full route gives (:func:`gap_bounds`), so the bottleneck call can often do without it."""
    kept_rows = np.minimum(counts.counts, counts.width)
    metrics = _assemble(counts.frequencies, counts.grid, counts.multiplicity, kept_rows, counts.energy,
                        counts.vmax, counts.threshold, counts.capacity)
    if 0 < metrics.mode_count < metrics.capacity:
        metrics = dataclasses.replace(metrics, gap_bounds=gap_bounds(counts))
    return metrics


def gap_bounds(counts: "FrequencyCounts") -> tuple[float, float]:
    """Bounds on the gap ratio :func:`count_modes` gives, ``smallest kept / max(largest discarded, floor)``
    with ``floor = vmax * NUMERICAL_FLOOR``, from what the counts route knows (a layer that keeps some values
    and discards others). Every kept value lies above the threshold t and every discarded one at or below
    it, so the ratio is at least ``t / max(t, floor)``; the smallest kept value is at most the smallest kept
    at the solved frequencies and the largest discarded at least theirs, so it is at most their ratio
    (unbounded when the solved frequencies hold no kept or no discarded value). Floating-point division is
    monotone, so the bounds hold for the computed ratio too."""
    floor = counts.vmax * NUMERICAL_FLOOR
    t = counts.threshold
    lower = t / max(t, floor)
    if counts.kept_floor is None or counts.discarded_ceiling is None:
        return lower, math.inf
    return lower, counts.kept_floor / max(counts.discarded_ceiling, floor)


def _assemble(frequencies: np.ndarray, grid: tuple[int, ...], mult: np.ndarray, kept_rows: np.ndarray,
              row_energy: np.ndarray, vmax: float, threshold: float, capacity: int, *,
              effective_rank: float | None = None, smallest_kept: float | None = None,
              largest_discarded: float | None = None, gap: float | None = None,
              profile: tuple[float, ...] = (), leading: tuple[float, ...] = ()) -> LayerMetrics:
    """LayerMetrics from per-frequency kept counts and energies (sum sigma^2), shared by both routes."""
    mode_count = int((kept_rows * mult).sum())
    energy = row_energy * mult
    total_energy = float(energy.sum())
    degree_counts, pair_counts, energy_share = {}, {}, {}
    for metric in DEGREE_METRICS:
        deg = frequency_degrees(frequencies, grid, metric)
        degree_counts[metric] = _nonzero_ints(_by_degree(deg, kept_rows * mult))
        pair_counts[metric] = _nonzero_ints(_by_degree(deg, kept_rows.astype(np.float64)))
        shares = _by_degree(deg, energy / total_energy if total_energy > 0 else energy * 0)
        energy_share[metric] = shares
    stable_rank = total_energy / vmax**2 if vmax > 0 else 0.0
    rows = np.flatnonzero(kept_rows)
    kept_freqs = tuple(zip(map(tuple, np.asarray(frequencies, dtype=np.int64)[rows].tolist()),
                           np.asarray(kept_rows, dtype=np.int64)[rows].tolist()))
    return LayerMetrics(
        mode_count=mode_count,
        capacity=capacity,
        threshold=float(threshold),
        spectral_norm=vmax,
        stable_rank=stable_rank,
        effective_rank=effective_rank,
        smallest_kept=smallest_kept,
        largest_discarded=largest_discarded,
        gap_ratio=gap,
        degree_counts=degree_counts,
        pair_degree_counts=pair_counts,
        energy_by_degree=energy_share,
        kept_frequencies=kept_freqs,
        grid=tuple(grid),
        profile=profile,
        leading=leading,
    )


def _profile(values: np.ndarray, weights: np.ndarray) -> tuple[float, ...]:
    """Every singular value of the full grid (value repeated by its weight) sorted descending, sampled at
    PROFILE_POINTS evenly spaced ranks; without materialising the repeated array."""
    total = int(weights.sum())
    if total == 0:
        return ()
    order = np.argsort(values)[::-1]
    ends = np.cumsum(weights[order].astype(np.int64))  # rank r (0-based) lies in the first block with end > r
    ranks = np.linspace(0, total - 1, PROFILE_POINTS).round().astype(np.int64)
    return tuple(float(values[order[i]]) for i in np.searchsorted(ends, ranks, side="right"))


def _leading(values: np.ndarray, weights: np.ndarray) -> tuple[float, ...]:
    """The first LEADING_POINTS values of the full grid's sorted spectrum (each repeated by its weight)."""
    k = min(len(values), LEADING_POINTS)
    if k == 0:
        return ()
    top = np.argpartition(-values, k - 1)[:k] if k < len(values) else np.arange(len(values))
    top = top[np.argsort(-values[top], kind="stable")]
    return tuple(float(v) for v in np.repeat(values[top], weights[top].astype(np.int64))[:LEADING_POINTS])


def _nonzero_ints(counts: dict[int, float]) -> dict[int, int]:
    return {deg: int(round(v)) for deg, v in counts.items() if round(v) > 0}
