"""Figures of ``cbn-inspect needs`` (matplotlib, the optional ``plot`` extra, imported only when drawing).

Two panels, drawn from a :class:`~cbn_inspect.interventions.NeedsReport` and nothing else (no analysis is
recomputed; :func:`curve_series` and :func:`ring_series` are the plain arrays the pictures show):

1. **need curves**: the outputs' relative change (log scale) against the kept band, one line per probed
   layer, for the three searches side by side: the box low-pass (band as a fraction of Nyquist), the l1 ball
   (degree as a fraction of the grid's highest degree) and the rank truncation (kept (frequency, direction)
   pairs as a fraction of all ``|N| * C``, log scale). The tolerance (``max_change``) is a dashed line; each
   layer's needed band is a large dot, points that do not hold (change or top-1 agreement) are hollow;
2. **ring importances**: the change when one degree ring (or one group of rings) is removed, against the
   ring's degrees as a fraction of the layer's highest degree, one line per layer, tolerance marked: a ring
   above the line matters on its own (high rings that matter are frequency shortcuts).

:func:`plot_needs` composes them; :func:`save_needs_figure` writes PNG, SVG or PDF by the file's extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .figures import require_matplotlib, write_figure, figure_format

FLOOR = 1e-4  # changes below this (the full band's float32 round-off, cuts that do nothing) are drawn on it
KIND_TITLES = {"box": "low-pass box: kept band (fraction of Nyquist)",
               "ball": "low-pass l1 ball: kept degree (fraction of the grid's highest)",
               "rank": "rank truncation: kept directions (fraction of |N|·C)"}
MAX_LEGEND = 12
PANELS = ("curves", "rings")


@dataclass(frozen=True)
class Series:
    """One layer's line: ``x`` and ``y`` (relative L2 change), which points hold, and the needed point."""

    name: str
    x: np.ndarray
    y: np.ndarray
    holds: np.ndarray  # bool per point
    needed: float | None  # x of the needed band (None: no band held)
    labels: tuple[str, ...] = ()  # per point, for the rings: "3" or "5-16"
    index: int = 0  # the layer's position among the probed layers (its colour)


def highest_degree(grid: tuple[int, ...], metric: str) -> int:
    """The largest wrapped degree on ``grid``: ``sum(n // 2)`` (l1) or ``max(n // 2)`` (linf); at least 1."""
    halves = [int(n) // 2 for n in grid]
    return max(1, sum(halves) if metric == "l1" else max(halves, default=0))


def _scale(layer: Any, kind: str, metric: str) -> float:
    if kind == "ball":
        return float(highest_degree(layer.grid, "l1"))  # the ball is an l1 ball whatever the ring metric
    if kind == "rank":
        return float(max(1, layer.directions))
    return 1.0


def curve_series(report: Any, kind: str) -> list[Series]:
    """Per probed layer, the points of its ``kind`` search (box, ball, rank), x normalised as in the figure."""
    out = []
    for i, layer in enumerate(report.layers):
        curve = getattr(layer, kind)
        if not curve.points:
            continue
        scale = _scale(layer, kind, report.settings.degree_metric)
        x = np.array([p.value for p in curve.points], dtype=float) / scale
        y = np.array([p.change.relative_l2 for p in curve.points], dtype=float)
        holds = np.array([bool(p.change.holds) for p in curve.points])
        needed = None if curve.needed is None else float(curve.needed) / scale
        out.append(Series(layer.name, x, y, holds, needed, index=i))
    return out


def ring_series(report: Any) -> list[Series]:
    """Per probed layer, the band-stop changes against each ring group's mid degree / the highest degree."""
    out = []
    for i, layer in enumerate(report.layers):
        if not layer.rings:
            continue
        top = float(highest_degree(layer.grid, report.settings.degree_metric))
        x = np.array([(r.low + r.high) / 2.0 / top for r in layer.rings], dtype=float)
        y = np.array([r.change.relative_l2 for r in layer.rings], dtype=float)
        holds = np.array([bool(r.change.holds) for r in layer.rings])
        labels = tuple(str(r.low) if r.low == r.high else f"{r.low}-{r.high}" for r in layer.rings)
        out.append(Series(layer.name, x, y, holds, None, labels, index=i))
    return out


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(1, count - 1)) for i in range(count)]


def _short(name: str, width: int = 28) -> str:
    from ._text import clean

    text = clean(name)
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _tolerance(ax: Any, report: Any) -> None:
    value = report.settings.max_change
    ax.axhline(value, color="#b00020", lw=1.0, ls="--", zorder=1)
    ax.text(0.99, value, f" tolerance {value:.3g}", color="#b00020", fontsize=7, ha="right", va="bottom",
            transform=ax.get_yaxis_transform())


def _line(ax: Any, s: Series, colour: Any, label: str | None) -> None:
    y = np.maximum(s.y, FLOOR)
    ax.plot(s.x, y, color=colour, lw=1.2, label=label, zorder=2)
    ax.scatter(s.x[s.holds], y[s.holds], color=colour, s=14, zorder=3)
    ax.scatter(s.x[~s.holds], y[~s.holds], facecolors="white", edgecolors=[colour], s=14, zorder=3)
    if s.needed is not None:
        at = np.flatnonzero(np.isclose(s.x, s.needed))
        if at.size:
            ax.scatter([s.needed], [y[at[0]]], color=colour, s=60, edgecolors="black", linewidths=0.6, zorder=4)


def _legend(fig: Any, axes: Any, count: int) -> None:
    """Layer names when they fit (at most MAX_LEGEND); else a colour bar of the probe index (depth order)."""
    if count <= MAX_LEGEND:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False, title="probed layer",
                   title_fontsize=7)
        return
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(0, (count - 1) / 0.9), cmap=colormaps["viridis"])
    bar = fig.colorbar(mappable, ax=axes, location="right", fraction=0.02, pad=0.01)
    bar.ax.set_ylim(0, count - 1)
    bar.set_label("probed layer (index, in data-flow order)", fontsize=7)
    bar.ax.tick_params(labelsize=7)


def draw_curves(fig: Any, report: Any) -> None:
    """Panel 1: the three need curves side by side, one line per probed layer."""
    axes = fig.subplots(1, 3, sharey=True)
    colours = _colours(len(report.layers))
    for ax, kind in zip(axes, ("box", "ball", "rank")):
        for s in curve_series(report, kind):
            i = s.index
            _line(ax, s, colours[i], f"{i} {_short(s.name)}" if len(report.layers) <= MAX_LEGEND else None)
        ax.set_yscale("log")
        if kind == "rank":
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, 1.05)
        _tolerance(ax, report)
        ax.set_title(KIND_TITLES[kind], fontsize=8)
        ax.grid(alpha=0.25, which="major")
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel(f"relative change of the outputs (floor {FLOOR:g})", fontsize=8)
    _legend(fig, axes, len(report.layers))
    fig.suptitle("need curves (decide inputs): large dot = needed band, hollow = does not hold", fontsize=9)


def draw_rings(fig: Any, report: Any) -> None:
    """Panel 2: band-stop by degree ring, one line per probed layer."""
    ax = fig.subplots(1, 1)
    colours = _colours(len(report.layers))
    series = ring_series(report)
    for s in series:
        i = s.index
        _line(ax, s, colours[i], f"{i} {_short(s.name)}" if len(report.layers) <= MAX_LEGEND else None)
    if len(series) == 1:  # one layer: name the rings on the axis
        ax.set_xticks(series[0].x, series[0].labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_xlim(-0.03, 1.03)
    _tolerance(ax, report)
    metric = report.settings.degree_metric
    ax.set_xlabel(f"removed ring: {metric} degree as a fraction of the layer's highest", fontsize=8)
    ax.set_ylabel(f"relative change (floor {FLOOR:g})", fontsize=8)
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=7)
    _legend(fig, [ax], len(report.layers))
    fig.suptitle("ring importances: one degree ring removed at a time (above the line: it matters)", fontsize=9)


DRAW = {"curves": draw_curves, "rings": draw_rings}
HEIGHTS = {"curves": 3.4, "rings": 3.0}


def title(report: Any) -> str:
    name = Path(str(report.source)).name or str(report.source)
    count = report.inputs.get("count") if hasattr(report.inputs, "get") else None
    return (f"{_short(name, 60)} · {report.runner} · {count} inputs ({report.split.decide} decide, "
            f"{report.split.held_out} held out) · tolerance: change ≤ {report.settings.max_change:.3g}")


def plot_needs(report: Any, panels: tuple[str, ...] | None = None) -> Any:
    """One matplotlib ``Figure`` with the need curves above the ring importances."""
    require_matplotlib()
    from matplotlib.figure import Figure

    names = tuple(panels or PANELS)
    unknown = [n for n in names if n not in DRAW]
    if unknown:
        from ..errors import UsageError

        raise UsageError(f"unknown needs panel(s) {', '.join(unknown)}; use {', '.join(PANELS)}")
    heights = [HEIGHTS[n] for n in names]
    fig = Figure(figsize=(12, sum(heights) + 0.6), layout="constrained")
    subs = np.atleast_1d(fig.subfigures(len(names), 1, height_ratios=heights))
    for sub, name in zip(subs, names):
        DRAW[name](sub, report)
    fig.suptitle(title(report), fontsize=10)
    return fig


def plot_needs_panel(report: Any, name: str) -> Any:
    """One panel as its own figure (the HTML section embeds them apart)."""
    return plot_needs(report, (name,))


def save_needs_figure(report: Any, path: str | Path, dpi: int = 110) -> Path:
    """Draw :func:`plot_needs` and write it to ``path`` (PNG, SVG or PDF by extension)."""
    figure_format(path)  # a bad extension fails before any drawing
    return write_figure(plot_needs(report), path, dpi)
