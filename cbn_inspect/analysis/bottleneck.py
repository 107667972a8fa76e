"""Locating the bottleneck in a sequence of analysed layers (THEORY.md, "Locating the bottleneck").

The call is a heuristic built on three kinds of evidence, each reported on its own:

- plateau: a contiguous run of interior layers (entered after the first ``edge`` layers, left before the
  last ``edge``) whose mode counts stay within ``plateau_tolerance`` of the lowest interior count;
- utilisation: the run's largest mode count / capacity must stay at or below ``max_utilisation``;
- gap: the smallest kept singular value over the largest discarded one, per layer. The call needs a median
  over the run of at least ``weak_gap``; the bottleneck is *clean* when every layer of the run reaches
  ``min_gap``, and is labelled ``weak`` otherwise (a few layers with values between the kept and the
  discarded ones must not hide a plateau, nor pass for a clean one).

``strength`` (0..1) is the product of a gap score (log10 of the median gap over 2, clipped), a utilisation score
(1 - utilisation / max_utilisation, clipped) and a plateau score (run length / 3, clipped). It is
computed for the best candidate run even when no bottleneck is called, so that checkpoints of one training
run can be compared. Pure code: no I/O.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

from ..records import Bottleneck, LayerMetrics, Settings


def _runs(indices: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _strength(gap: float, utilisation: float, length: int, settings: Settings) -> float:
    gap_score = min(1.0, max(0.0, math.log10(gap) / 2.0)) if gap > 0 else 0.0
    util_score = min(1.0, max(0.0, 1.0 - utilisation / settings.max_utilisation))
    plateau_score = min(1.0, length / 3.0)
    return round(gap_score * util_score * plateau_score, 4)


def _label(strength: float) -> str:
    return "strong" if strength >= 0.6 else "moderate" if strength >= 0.3 else "weak"


def locate_bottleneck(
    names: Sequence[str], metrics: Sequence[LayerMetrics | None], settings: Settings
) -> Bottleneck:
    """The bottleneck of layers in data-flow order; ``metrics[i]`` is None for a layer not analysed."""
    metric = settings.degree_metric
    edge = settings.edge_layers
    # Layers not analysed, and layers whose weights are all zero (nothing flows through them: e.g. timm's
    # zero-initialised last BatchNorm of a residual block, folded in), are not candidates.
    interior = [i for i in range(edge, len(names) - edge)
                if metrics[i] is not None and metrics[i].spectral_norm > 0]  # type: ignore[union-attr]
    if len(interior) < settings.min_plateau:
        need = 2 * edge + settings.min_plateau
        return Bottleneck(
            found=False, reason=f"too few analysed layers ({len(names)}); a bottleneck needs at least {need}"
        )
    lowest = min(metrics[i].mode_count for i in interior)  # type: ignore[union-attr]
    limit = lowest * (1.0 + settings.plateau_tolerance)
    low = [i for i in interior if metrics[i].mode_count <= limit]  # type: ignore[union-attr]
    candidates = [r for r in _runs(low) if any(metrics[i].mode_count == lowest for i in r)]  # type: ignore
    run = max(candidates, key=len)

    run_metrics = [metrics[i] for i in run]
    narrowest = next(m for m in run_metrics if m.mode_count == lowest)  # type: ignore[union-attr]
    # A layer that discards nothing has no split at all: its gap counts as 1.
    gaps = [m.gap_ratio if m.gap_ratio is not None else 1.0 for m in run_metrics]  # type: ignore[union-attr]
    gap, typical_gap = min(gaps), float(statistics.median(gaps))
    clean_layers = sum(g >= settings.min_gap for g in gaps)
    utilisation = max(m.utilisation for m in run_metrics)  # type: ignore[union-attr]
    types = [dict(m.degree_counts[metric]) for m in run_metrics]  # type: ignore[union-attr]
    clean = gap >= settings.min_gap
    strength = _strength(typical_gap, utilisation, len(run), settings)
    start, end = names[run[0]], names[run[-1]]

    failures = []
    if len(run) < settings.min_plateau:
        failures.append(
            f"the lowest mode count ({lowest}, layer {start}) does not persist over {settings.min_plateau} layers"
        )
    if utilisation > settings.max_utilisation:
        failures.append(
            f"the narrowest layers still use {utilisation:.0%} of their capacity "
            f"(a bottleneck uses at most {settings.max_utilisation:.0%})"
        )
    if typical_gap <= 1.0:
        failures.append("no split between kept and discarded singular values")
    elif typical_gap < settings.weak_gap:
        failures.append(
            f"kept singular values are only {typical_gap:.3g}x above the discarded ones (median over the "
            f"run; a split needs {settings.weak_gap:g}x, a clean one {settings.min_gap:g}x)"
        )
    found = not failures
    if found and clean:
        reason = (
            f"layers {start} to {end} keep {lowest} modes ({utilisation:.1%} of capacity at most), "
            f"kept values at least {gap:.3g}x above the rest"
        )
    elif found:
        reason = (
            f"layers {start} to {end} keep {lowest} modes ({utilisation:.1%} of capacity at most), but the "
            f"split is clean ({settings.min_gap:g}x) in only {clean_layers} of {len(run)} layers: kept values "
            f"are a median {typical_gap:.3g}x (at least {gap:.3g}x) above the rest"
        )
    else:
        reason = "; ".join(failures)
    label = ("weak" if not clean else _label(strength)) if found else "none"
    return Bottleneck(
        found=found,
        reason=reason,
        start=start if found else None,
        end=end if found else None,
        start_index=run[0] if found else None,
        end_index=run[-1] if found else None,
        rank=lowest if found else None,
        degree_counts=dict(narrowest.degree_counts[metric]) if found else {},  # type: ignore[union-attr]
        frequencies=narrowest.kept_on_full_grid() if found else (),  # type: ignore[union-attr]
        strength=strength,
        strength_label=label,
        gap_ratio=gap,
        typical_gap_ratio=typical_gap,
        clean=found and clean,
        clean_layers=clean_layers,
        utilisation=utilisation,
        plateau_length=len(run),
        consistent_type=all(t == types[0] for t in types),
        candidate={"start": start, "end": end, "rank": lowest},
    )
