"""What the pictures show, as plain arrays: built from a :class:`ModelReport`, drawn elsewhere.

The figures (``figures.py``, matplotlib), the HTML report (``html.py``) and the terminal heat strip
(``terminal.py``) draw these; tests compare them with the report's own numbers. Nothing here recomputes the
analysis: counts and energy shares come from :class:`LayerMetrics`, singular values from the kept
:class:`Spectrum` (or the 16-point ``profile`` when spectra were not kept), frequency maps from
:meth:`LayerMetrics.kept_on_full_grid`. Pure numpy, no matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.counting import frequency_degrees
from ..records import ModelReport

MAX_DEGREE_COLUMNS = 24  # wider degree ranges are binned (singletons first, then doubling widths)


@dataclass(frozen=True)
class DegreeMatrix:
    """Layers x degree bins: kept counts (``counts``) and share of ``sum sigma^2`` (``energy``).

    ``bins[j] = (lo, hi)`` is the inclusive degree range of column j; a row of a layer that was not analysed
    is NaN. ``inside[i]`` says whether layer i belongs to the bottleneck.
    """

    names: tuple[str, ...]
    bins: tuple[tuple[int, int], ...]
    counts: np.ndarray  # (L, B) float, NaN for layers not analysed
    energy: np.ndarray  # (L, B) float
    inside: np.ndarray  # (L,) bool
    metric: str

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.bins)


def degree_bins(max_degree: int, limit: int = MAX_DEGREE_COLUMNS) -> tuple[tuple[int, int], ...]:
    """Inclusive degree ranges covering 0..max_degree in at most ``limit`` bins.

    One bin per degree when they fit; otherwise the low degrees (where a bottleneck lives) stay single and
    the rest go into ranges of doubling width, so 0..112 becomes 0, 1, ..., 11, 12-13, 14-17, ...
    """
    if max_degree + 1 <= limit:
        return tuple((d, d) for d in range(max_degree + 1))
    for singles in range(max(1, limit // 2), 0, -1):
        bins = [(d, d) for d in range(singles)]
        lo, width = singles, 2
        while lo <= max_degree:
            hi = min(max_degree, lo + width - 1)
            bins.append((lo, hi))
            lo, width = hi + 1, width * 2
        if len(bins) <= limit:
            return tuple(bins)
    width = -(-(max_degree + 1) // limit)  # very few bins: equal widths
    return tuple((lo, min(max_degree, lo + width - 1)) for lo in range(0, max_degree + 1, width))


def in_bottleneck(report: ModelReport) -> np.ndarray:
    """Per layer: inside the called bottleneck (all False when none was called)."""
    b = report.bottleneck
    inside = np.zeros(len(report.layers), dtype=bool)
    if b.found and b.start_index is not None and b.end_index is not None:
        inside[b.start_index : b.end_index + 1] = True
    return inside


def degree_matrix(report: ModelReport, metric: str | None = None, limit: int = MAX_DEGREE_COLUMNS,
                  min_energy: float = 1e-3) -> DegreeMatrix:
    """The heat map's data: each layer's ``degree_counts`` and ``energy_by_degree``, binned to ``limit`` columns.

    Degrees above the highest one where some layer keeps a value or holds ``min_energy`` of its energy are
    left out (they would be empty columns); every kept count is in the matrix, so rows sum to the mode counts.
    """
    metric = metric or report.settings.degree_metric
    degrees = [d for r in report.layers if r.metrics for d, c in r.metrics.degree_counts[metric].items() if c]
    degrees += [d for r in report.layers if r.metrics for d, e in r.metrics.energy_by_degree[metric].items()
                if e >= min_energy]
    bins = degree_bins(max(degrees, default=0), limit)
    column = {d: j for j, (lo, hi) in enumerate(bins) for d in range(lo, hi + 1)}
    counts = np.full((len(report.layers), len(bins)), np.nan)
    energy = np.full_like(counts, np.nan)
    for i, r in enumerate(report.layers):
        if r.metrics is None:
            continue
        counts[i] = energy[i] = 0.0
        for d, c in r.metrics.degree_counts[metric].items():
            counts[i, column[d]] += c
        for d, e in r.metrics.energy_by_degree[metric].items():
            if d in column:
                energy[i, column[d]] += e
    return DegreeMatrix(names=tuple(r.layer.name for r in report.layers), bins=bins, counts=counts,
                        energy=energy, inside=in_bottleneck(report), metric=metric)


@dataclass(frozen=True)
class SpectrumPoints:
    """Singular values against depth: one point per (layer, sampled value), each with its degree.

    ``sigma`` is relative to the layer's largest value; ``degree`` is -1 where only the profile was kept (no
    per-frequency spectrum, so no degree). ``threshold[i]`` is layer i's kept threshold, relative too.
    """

    layer: np.ndarray  # (P,) int, the layer's index
    sigma: np.ndarray  # (P,) float, sigma / sigma_max of the layer
    degree: np.ndarray  # (P,) int
    kept: np.ndarray  # (P,) bool
    threshold: np.ndarray  # (L,) float, NaN for layers not analysed
    from_spectra: bool
    per_layer: int  # the sampling budget of one layer


def _quantile_pick(order_len: int, budget: int) -> np.ndarray:
    if order_len <= budget:
        return np.arange(order_len)
    return np.unique(np.linspace(0, order_len - 1, budget).round().astype(np.int64))


def spectrum_points(report: ModelReport, per_layer: int | None = None, floor: float = 1e-6) -> SpectrumPoints:
    """Sample every layer's singular values (kept and discarded apart, evenly over ranks) for the scatter.

    With spectra kept, every frequency's values carry their degree (each complex frequency counted, the
    way the counts are); without, the layer's 16-point profile stands in. ``per_layer`` defaults to a
    budget that keeps a 150-layer model readable (fewer points per layer the more layers there are).
    """
    n = len(report.layers)
    per_layer = per_layer or int(np.clip(6000 // max(n, 1), 40, 600))
    metric = report.settings.degree_metric
    xs, ys, ds, ks = [], [], [], []
    threshold = np.full(n, np.nan)
    from_spectra = all(r.spectrum is not None for r in report.layers if r.metrics is not None)
    for i, r in enumerate(report.layers):
        m = r.metrics
        if m is None or m.spectral_norm <= 0:
            continue
        threshold[i] = m.threshold / m.spectral_norm
        keep_from = m.smallest_kept if m.smallest_kept is not None else np.inf
        if from_spectra:
            s = r.spectrum
            deg = frequency_degrees(np.asarray(s.frequencies), tuple(s.grid), metric)
            vals = np.repeat(s.values, s.multiplicity, axis=0)
            degs = np.repeat(np.broadcast_to(deg[:, None], s.values.shape), s.multiplicity, axis=0)
            vals, degs = vals.ravel(), degs.ravel()
        else:
            vals = np.asarray(m.profile, dtype=float)
            degs = np.full(vals.shape, -1, dtype=np.int64)
        order = np.argsort(-vals, kind="stable")
        vals, degs = vals[order], degs[order]
        kept = vals >= keep_from
        for part in (np.flatnonzero(kept), np.flatnonzero(~kept)):
            pick = part[_quantile_pick(len(part), per_layer // 2)]
            xs.append(np.full(len(pick), i))
            ys.append(np.maximum(vals[pick] / m.spectral_norm, floor))
            ds.append(degs[pick])
            ks.append(kept[pick])
    cat = (lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
    return SpectrumPoints(layer=cat(xs, np.int64), sigma=cat(ys, float), degree=cat(ds, np.int64),
                          kept=cat(ks, bool), threshold=threshold, from_spectra=from_spectra, per_layer=per_layer)


@dataclass(frozen=True)
class FrequencyMap:
    """How many directions each frequency of one layer's grid keeps, zero frequency at the centre.

    ``counts`` has the layer's spectrum grid as shape (1-D or 2-D; a 3-D grid is summed over its last
    axis, and ``note`` says so); ``origin`` is the index of frequency 0 in each axis after centring.
    """

    index: int
    name: str
    grid: tuple[int, ...]
    counts: np.ndarray
    origin: tuple[int, ...]
    total: int
    note: str = ""


def frequency_map(report: ModelReport, index: int) -> FrequencyMap | None:
    """Layer ``index``'s kept count per frequency (from :meth:`LayerMetrics.kept_on_full_grid`), centred."""
    r = report.layers[index]
    m = r.metrics
    if m is None or not m.grid:
        return None
    counts = np.zeros(m.grid, dtype=np.int64)
    for freq, c in m.kept_on_full_grid():
        counts[freq] = c
    total = int(counts.sum())
    note = ""
    if counts.ndim == 3:
        counts, note = counts.sum(axis=2), "3-D grid: summed over the last axis"
    shifted = np.fft.fftshift(counts)
    origin = tuple(n // 2 for n in counts.shape)
    shifted, origin, crop = _crop(shifted, origin)
    if crop:
        note = "; ".join(filter(None, [note, f"|m| ≤ {crop} shown"]))
    return FrequencyMap(index=index, name=r.layer.name, grid=tuple(m.grid), counts=shifted, origin=origin,
                        total=total, note=note)


def _crop(counts: np.ndarray, origin: tuple[int, ...], margin: int = 2, least: int = 4) -> tuple:
    """Cut a centred map to the square (or interval) around 0 that holds every kept frequency, plus a
    margin, when that is well under the grid: a bottleneck on a 56x56 grid is then more than a dot."""
    nz = np.argwhere(counts > 0)
    if not len(nz):
        return counts, origin, 0
    reach = int(np.abs(nz - np.asarray(origin)).max()) + margin
    reach = max(reach, least)
    if 2 * reach + 1 > 0.75 * min(counts.shape):
        return counts, origin, 0
    slices = tuple(slice(o - reach, o + reach + 1) for o in origin)
    return counts[slices], tuple(reach for _ in origin), reach


def map_layers(report: ModelReport, limit: int = 6) -> tuple[int, ...]:
    """The layers whose frequency maps are drawn: the bottleneck's; when none was called, the best candidate
    run's, else the narrowest inner layer that keeps anything; evenly subsampled to ``limit``, ends included."""
    b = report.bottleneck
    names = {r.layer.name: i for i, r in enumerate(report.layers)}
    keeps = [i for i, r in enumerate(report.layers) if r.metrics is not None and r.metrics.mode_count > 0]
    if b.found and b.start_index is not None and b.end_index is not None:
        candidates = list(range(b.start_index, b.end_index + 1))
    elif b.candidate and b.candidate.get("start") in names and b.candidate.get("end") in names:
        candidates = [i for i in range(names[b.candidate["start"]], names[b.candidate["end"]] + 1) if i in keeps]
    else:
        candidates = []
    if not candidates:
        if not keeps:
            return ()
        inner = keeps[1:-1] or keeps
        candidates = [min(inner, key=lambda i: report.layers[i].metrics.utilisation)]
    if len(candidates) <= limit:
        return tuple(candidates)
    picks = np.linspace(0, len(candidates) - 1, limit).round().astype(int)
    return tuple(candidates[p] for p in dict.fromkeys(picks.tolist()))


def short_name(name: str, width: int = 22) -> str:
    """A layer name cut from the left with an ellipsis, keeping its most specific end."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


@dataclass(frozen=True)
class ProfileSeries:
    """A utilisation-per-layer series (weights or activations) for the side-by-side profile."""

    label: str
    names: tuple[str, ...]
    utilisation: np.ndarray  # (L,) float, NaN where not analysed
    mode_count: np.ndarray  # (L,) float
    start: int | None  # bottleneck span, indices into ``names``
    end: int | None


def _series(label: str, names, metrics, bottleneck) -> ProfileSeries:
    util = np.array([m.utilisation if m is not None else np.nan for m in metrics], dtype=float)
    modes = np.array([m.mode_count if m is not None else np.nan for m in metrics], dtype=float)
    found = bottleneck is not None and bottleneck.found and bottleneck.start_index is not None
    return ProfileSeries(label=label, names=tuple(names), utilisation=util, mode_count=modes,
                         start=bottleneck.start_index if found else None,
                         end=bottleneck.end_index if found else None)


def profile_series(report: ModelReport) -> tuple[ProfileSeries, ...]:
    """The weight profile, and the activation profile when the report has one (``report.activations``:
    ``.layers`` with ``.name`` and ``.metrics``, and ``.bottleneck``)."""
    out = [_series("weights", [r.layer.name for r in report.layers], [r.metrics for r in report.layers],
                   report.bottleneck)]
    acts = getattr(report, "activations", None)
    if acts is not None and getattr(acts, "layers", None):
        out.append(_series("activations", [a.name for a in acts.layers], [a.metrics for a in acts.layers],
                           getattr(acts, "bottleneck", None)))
    return tuple(out)


def grid_summary(report: ModelReport) -> str:
    """The grids the layers were analysed on, for titles: ``16x16`` or ``224x224 -> 7x7 (5 grids)``."""
    grids = [r.layer.grid for r in report.layers if r.layer.grid]
    if not grids:
        return "no grid"
    fmt = ["x".join(str(v) for v in g) for g in grids]
    distinct = list(dict.fromkeys(fmt))
    if len(distinct) == 1:
        return distinct[0]
    return f"{fmt[0]} → {fmt[-1]} ({len(distinct)} grids)"


def bottleneck_summary(report: ModelReport) -> str:
    """One line for titles: where the bottleneck is, its rank and type, its strength, or why there is none."""
    from .json_report import format_type

    b = report.bottleneck
    if b.found:
        return (f"bottleneck {b.start} → {b.end} ({b.plateau_length} layers), rank {b.rank} = "
                f"{format_type(b.degree_counts)}, strength {b.strength:.2f} ({b.strength_label})")
    return f"no bottleneck (best candidate strength {b.strength:.2f})"
