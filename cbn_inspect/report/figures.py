"""Figures of the bottleneck (matplotlib, the optional ``plot`` extra, imported only when drawing).

Four panels, each drawn from :mod:`figure_data` (which reads the report's records and computes nothing
new):

1. heat maps, layers x frequency degree, of kept counts (log colour) and of energy share, bottleneck rows
   marked;
2. every layer's singular values against depth, coloured by frequency degree (kept ones at full colour,
   discarded ones faded, each layer's threshold as a tick);
3. for the bottleneck layers (at most six, evenly picked), maps over the frequency grid of how many
   directions each frequency keeps (zero frequency at the centre);
4. with activations, the activation profile beside the weight profile (utilisation per layer).

:func:`plot_report` composes them into one figure; :func:`save_report_figure` writes PNG, SVG or PDF by the
file's extension. Layer labels are thinned to about 40 so that a 150-layer model stays legible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._parse import FIGURE_FORMATS as FORMATS  # noqa: F401  (re-exported)
from .._parse import figure_format  # noqa: F401  (re-exported: defined without numpy for the command line)
from ..errors import MissingExtraError, UsageError
from ..records import ModelReport
from .figure_data import (bottleneck_summary, degree_matrix, frequency_map, grid_summary, map_layers,
                          profile_series, short_name, spectrum_points)

MAX_LABELS = 40
MAGENTA = "#b0209a"
FLOOR = 1e-6  # relative values below this are drawn on it: float32 zeros, not structure


def require_matplotlib() -> Any:
    """Import matplotlib, or raise :class:`MissingExtraError`. Figures are plain ``Figure`` objects, not
    pyplot's: no backend is chosen or changed (a notebook's inline backend stays), nothing needs closing,
    and Jupyter shows a returned figure once."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("figures need matplotlib, which is not installed",
                                hint="pip install 'cbn-inspect[plot]'") from exc
    return matplotlib


def _label_ticks(ax: Any, names: tuple[str, ...], axis: str = "y") -> None:
    step = max(1, int(np.ceil(len(names) / MAX_LABELS)))
    ticks = list(range(0, len(names), step))
    labels = [f"{i} {short_name(names[i], 24 if len(names) <= MAX_LABELS else 20)}" for i in ticks]
    fontsize = 7 if len(names) <= 20 else 6
    if axis == "y":
        ax.set_yticks(ticks, labels, fontsize=fontsize)
    else:
        ax.set_xticks(ticks, [str(i) for i in ticks], fontsize=fontsize)


def _mark_rows(ax: Any, inside: np.ndarray) -> None:
    """Magenta lines above and below the bottleneck's rows, its row labels magenta and bold."""
    idx = np.flatnonzero(inside)
    if not len(idx):
        return
    for y in (idx[0] - 0.5, idx[-1] + 0.5):
        ax.axhline(y, color=MAGENTA, lw=1.5)
    for tick, label in zip(ax.get_yticks(), ax.get_yticklabels()):
        if idx[0] <= tick <= idx[-1]:
            label.set_color(MAGENTA)
            label.set_fontweight("bold")


def draw_heatmaps(fig: Any, report: ModelReport) -> None:
    """Panel 1: kept counts and energy share, layers (rows) x degree bins (columns)."""
    from matplotlib.colors import LogNorm

    data = degree_matrix(report)
    axes = fig.subplots(1, 2)
    counts = np.where(data.counts > 0, data.counts, np.nan)
    vmax = np.nanmax(counts) if np.isfinite(counts).any() else 1.0
    cmap = _cmap("viridis")
    top_share = float(np.nanmax(data.energy)) if np.isfinite(data.energy).any() else 1.0
    used = np.flatnonzero(np.nansum(np.nan_to_num(data.counts), axis=0) > 0)
    width = int(used[-1]) + 1 if len(used) else 1  # the counts panel stops at the last degree kept anywhere
    panels = ((counts[:, :width], data.labels[:width], "kept modes per degree", LogNorm(vmin=1, vmax=max(vmax, 2))),
              (data.energy, data.labels, "share of the layer's Σσ² per degree", None))
    for ax, (matrix, labels, title, norm) in zip(axes, panels):
        image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
                          vmin=None if norm else 0.0, vmax=None if norm else max(top_share, 1e-9))
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90 if len(labels) > 12 else 0)
        ax.set_xlabel(f"frequency degree ({data.metric})", fontsize=8)
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        if norm is not None:
            from matplotlib.ticker import LogLocator, ScalarFormatter

            bar.ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            bar.ax.yaxis.set_major_formatter(ScalarFormatter())
            bar.ax.yaxis.set_minor_formatter(ScalarFormatter())
            bar.ax.yaxis.set_minor_locator(LogLocator(subs=()))
        bar.ax.tick_params(labelsize=6)
    _label_ticks(axes[0], data.names)
    axes[1].set_yticks(axes[0].get_yticks(), [])
    for ax in axes:
        _mark_rows(ax, data.inside)
    if len(data.names) <= 16:  # small models: the counts themselves, readable in the cells
        for (i, j), v in np.ndenumerate(data.counts):
            if v > 0:
                axes[0].text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6, color="white")


def _cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="#f2f2f2")


def draw_spectra(fig: Any, report: ModelReport) -> None:
    """Panel 2: singular values (relative to each layer's largest) against depth, coloured by degree."""
    from matplotlib.colors import BoundaryNorm

    pts = spectrum_points(report, floor=FLOOR)
    ax = fig.subplots()
    n = len(report.layers)
    jitter = np.random.default_rng(0).uniform(-0.28, 0.28, len(pts.layer)) if n <= 60 else 0.0
    x = pts.layer + jitter
    if pts.from_spectra and len(pts.degree):
        # Colours for the degrees that are kept somewhere (and one more); higher ones share the last colour.
        kept_top = int(pts.degree[pts.kept].max()) if pts.kept.any() else 3
        top = int(min(pts.degree.max(), max(kept_top, 3) + 1, 24))
        cmap = _cmap("tab10" if top <= 9 else "turbo").resampled(top + 1)
        norm = BoundaryNorm(np.arange(-0.5, top + 1.5), cmap.N)
        deg = np.minimum(pts.degree, top)
        ax.scatter(x[~pts.kept], pts.sigma[~pts.kept], c=deg[~pts.kept], cmap=cmap, norm=norm, s=3, alpha=0.25,
                   linewidths=0, rasterized=True)
        sc = ax.scatter(x[pts.kept], pts.sigma[pts.kept], c=deg[pts.kept], cmap=cmap, norm=norm, s=10, alpha=0.9,
                        linewidths=0.2, edgecolors="black", rasterized=True)
        bar = fig.colorbar(sc, ax=ax, fraction=0.03, pad=0.01, ticks=range(0, top + 1, 1 if top <= 12 else 2))
        bar.set_label("degree" + (f" ({top} = {top} and above)" if pts.degree.max() > top else ""), fontsize=7)
        bar.ax.tick_params(labelsize=6)
    else:
        ax.scatter(x[pts.kept], pts.sigma[pts.kept], s=10, color="tab:green", label="kept")
        ax.scatter(x[~pts.kept], pts.sigma[~pts.kept], s=4, color="grey", alpha=0.5, label="discarded")
        ax.legend(fontsize=7, loc="lower left")
        ax.text(0.99, 0.02, "16-point profiles: pass keep_spectra (--spectra) for per-degree colours",
                transform=ax.transAxes, ha="right", fontsize=7, color="dimgrey")
    ok = np.isfinite(pts.threshold)
    ax.scatter(np.flatnonzero(ok), pts.threshold[ok], marker="_", s=120, color="black", lw=1,
               label="threshold", zorder=3)
    b = report.bottleneck
    if b.found and b.start_index is not None:
        ax.axvspan(b.start_index - 0.5, b.end_index + 0.5, color=MAGENTA, alpha=0.08, lw=0)
    ax.set_yscale("log")
    low = float(pts.sigma.min()) if len(pts.sigma) else 1.0
    ax.set_ylim(low / 2, 1.6)
    if low <= FLOOR:
        ax.axhline(FLOOR, color="grey", lw=0.5, ls=":")
        ax.text(n - 0.35, FLOOR * 1.25, f"≤ {FLOOR:g} (numerical zeros)", ha="right", fontsize=6, color="dimgrey")
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_ylabel("σ / layer's largest", fontsize=8)
    ax.set_xlabel("layer (data-flow order); shaded: bottleneck; ticks: each layer's threshold", fontsize=8)
    _label_ticks(ax, tuple(r.layer.name for r in report.layers), axis="x")
    ax.tick_params(labelsize=7)
    ax.set_title(f"singular values by depth ({pts.per_layer // 2} kept + {pts.per_layer // 2} discarded "
                 "values per layer at most, evenly over ranks)", fontsize=9)


def draw_frequency_maps(fig: Any, report: ModelReport) -> None:
    """Panel 3: kept directions per frequency of the bottleneck layers (or the narrowest layer)."""
    maps = [m for m in (frequency_map(report, i) for i in map_layers(report)) if m is not None]
    if not maps:
        fig.text(0.5, 0.5, "no analysed layer to map", ha="center")
        return
    slots = np.atleast_1d(fig.subplots(1, max(len(maps), 4)))
    for ax in slots[len(maps):]:
        ax.set_axis_off()
    axes = slots[: len(maps)]
    vmax = max(int(m.counts.max()) for m in maps) or 1
    cmap = _cmap("magma_r")
    for ax, m in zip(axes, maps):
        counts = m.counts if m.counts.ndim == 2 else m.counts[None, :]
        image = ax.imshow(counts, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest",
                          aspect="equal")
        if max(counts.shape) <= 15:
            for (i, j), v in np.ndenumerate(counts):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                            color="white" if v > vmax / 2 else "black")
        ax.set_title(f"{m.index} {short_name(m.name, 22)}\n{m.total} kept, grid {'x'.join(map(str, m.grid))}", fontsize=7)
        if m.counts.ndim == 2:
            ax.set_xticks([m.origin[1]], ["0"], fontsize=6)
            ax.set_yticks([m.origin[0]], ["0"], fontsize=6)
        else:
            ax.set_xticks([m.origin[0]], ["0"], fontsize=6)
            ax.set_yticks([])
        if m.note:
            ax.set_xlabel(m.note, fontsize=6)
    from matplotlib.ticker import MaxNLocator

    bar = fig.colorbar(image, ax=list(axes), fraction=0.02, pad=0.01)
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    bar.ax.tick_params(labelsize=6)
    which = "bottleneck layers" if report.bottleneck.found else "no bottleneck: best candidate run or narrowest layer"
    fig.suptitle(f"kept directions per frequency, {which} (zero frequency at the ticks)", fontsize=9)


def draw_profiles(fig: Any, report: ModelReport) -> None:
    """Panel 4: the weight profile beside the activation profile (utilisation per layer, log scale)."""
    series = profile_series(report)
    axes = np.atleast_1d(fig.subplots(1, len(series), sharey=True))
    for ax, s in zip(axes, series):
        x = np.arange(len(s.names))
        ax.plot(x, s.utilisation, marker="o", ms=3 if len(x) <= 40 else 0, lw=1.2, color="tab:blue")
        if s.start is not None:
            ax.axvspan(s.start - 0.5, s.end + 0.5, color=MAGENTA, alpha=0.12, lw=0, label="bottleneck")
            ax.legend(fontsize=7, loc="upper center")
        ax.set_yscale("log")
        where = f" (bottleneck {s.names[s.start]} → {s.names[s.end]})" if s.start is not None else " (no bottleneck)"
        ax.set_title(f"{s.label}: kept share of capacity{where}", fontsize=9)
        ax.set_xlabel("layer", fontsize=8)
        _label_ticks(ax, s.names, axis="x")
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("utilisation", fontsize=8)


PANELS = {"heatmap": draw_heatmaps, "spectra": draw_spectra, "maps": draw_frequency_maps,
          "profiles": draw_profiles}


def panel_names(report: ModelReport) -> tuple[str, ...]:
    """The panels a report gets: the profiles only when it has activations to set beside the weights."""
    names = ["heatmap", "spectra", "maps"]
    if len(profile_series(report)) > 1:
        names.append("profiles")
    return tuple(names)


def _heights(report: ModelReport, names: tuple[str, ...]) -> list[float]:
    n = len(report.layers)
    rows = {"heatmap": float(np.clip(0.16 * n + 1.4, 3.0, 11.0)), "spectra": 3.6, "maps": 2.3,
            "profiles": 2.6}
    return [rows[name] for name in names]


def title(report: ModelReport) -> str:
    return (f"{Path(report.source.path).name} · {len(report.layers)} conv layers · grid {grid_summary(report)}\n"
            f"{bottleneck_summary(report)}")


def plot_report(report: ModelReport, panels: tuple[str, ...] | None = None) -> Any:
    """One matplotlib figure with the report's panels stacked, titled with the model, grid and bottleneck."""
    require_matplotlib()
    from matplotlib.figure import Figure

    names = panels or panel_names(report)
    heights = _heights(report, names)
    fig = Figure(figsize=(11, sum(heights) + 0.9), layout="constrained")
    subs = np.atleast_1d(fig.subfigures(len(names), 1, height_ratios=heights))
    for sub, name in zip(subs, names):
        PANELS[name](sub, report)
    fig.suptitle(title(report), fontsize=10)
    return fig


def plot_panel(report: ModelReport, name: str) -> Any:
    """One panel as its own figure (the HTML report embeds them apart)."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, _heights(report, (name,))[0] + 0.4), layout="constrained")
    PANELS[name](fig, report)
    return fig




def write_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write a drawn figure to ``path``, PNG, SVG or PDF by its extension."""
    fmt = figure_format(path)
    try:
        fig.savefig(path, format=fmt, dpi=dpi, metadata=_metadata(fmt))
    except OSError as exc:
        raise UsageError(f"--plot {path}: cannot write ({exc.strerror or exc})") from exc
    return Path(path)


def save_report_figure(report: ModelReport, path: str | Path, dpi: int = 110) -> Path:
    """Draw :func:`plot_report` and write it to ``path`` (PNG, SVG or PDF by extension)."""
    figure_format(path)  # a bad extension fails before any drawing
    return write_figure(plot_report(report), path, dpi)


def _metadata(fmt: str) -> dict[str, Any]:
    """No creation dates in the files, so that the same report gives the same bytes."""
    if fmt == "png":
        return {"Software": "cbn-inspect"}
    if fmt == "svg":
        return {"Date": None, "Creator": "cbn-inspect"}
    return {"CreationDate": None, "Creator": "cbn-inspect"}
