"""The figure of a series (``track --plot FILE``): mode counts per layer over training, and the call's strength.

Top panel: one line per layer (log scale; colour runs with depth, so the first and last layers stand out from
the middle ones), the steps with a bottleneck shaded and the steps where it first appears and where it
settles marked. Bottom panel: the strength of the call at each step (filled where a bottleneck is called,
hollow where not) against the ``moderate`` (0.3) and ``strong`` (0.6) lines. It draws the series' own
numbers and computes nothing. matplotlib is imported here only, and a plain ``Figure`` is made (no pyplot
state, no backend switch: saving needs no display, and Jupyter shows the returned figure once).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..series.records import Series

STRONG, MODERATE = 0.6, 0.3  # the strength labels' thresholds (README, "The bottleneck call")
LEGEND_MAX = 14  # more layers than this: a colour bar instead of a legend


def _values(values) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def plot_series(series: Series, path: str | Path | None = None, *, title: str | None = None,
                dpi: int = 110) -> Any:
    """Draw the series; save it to ``path`` (format from the suffix: .png, .svg, .pdf) when given.

    Returns the matplotlib ``Figure``: its first axes hold one line per layer (label = layer name, y = the
    mode counts), its second the strength line, so callers and tests can read the data back.
    """
    import matplotlib
    from matplotlib import cm, colors
    from matplotlib.figure import Figure

    steps = list(series.steps)
    fig = Figure(figsize=(7.2, 5.6), constrained_layout=True)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.4, 1]})
    n = max(len(series.layers), 1)
    cmap = matplotlib.colormaps["viridis"]
    for i, track in enumerate(series.layers):
        top.plot(steps, _values(track.mode_count), marker="o", markersize=3, linewidth=1.3,
                 color=cmap(i / max(n - 1, 1)), label=track.name)
    top.set_yscale("log")
    top.set_ylabel("modes kept (log)")
    if n <= LEGEND_MAX:
        top.legend(fontsize=7, ncol=2 if n > 7 else 1, loc="upper right", frameon=False)
    else:
        bar = fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(0, n - 1), cmap=cmap), ax=top, pad=0.01)
        bar.set_label("layer (data-flow order)")
    found = [c is not None and c.found for c in series.calls]
    for ax in (top, bottom):
        for i, is_found in enumerate(found):
            if is_found:
                left = (steps[i - 1] + steps[i]) / 2 if i > 0 else steps[i]
                right = (steps[i] + steps[i + 1]) / 2 if i + 1 < len(steps) else steps[i]
                ax.axvspan(left, right, color="tab:green", alpha=0.08, linewidth=0)
        ax.grid(True, which="major", alpha=0.3)
    marks = [(series.first_found, "first appears", "tab:green", "--"),
             (series.settled, "settles", "tab:blue", ":")]
    if series.first_found is not None and series.first_found == series.settled:
        marks = [(series.first_found, "first appears\nand settles", "tab:green", "--")]
    for step, label, colour, style in marks:
        if step is not None:
            for ax in (top, bottom):
                ax.axvline(step, color=colour, linestyle=style, linewidth=1.1)
            top.annotate(f"{label}\n{series.unit} {step}", xy=(step, 1), xycoords=("data", "axes fraction"),
                         xytext=(3, -3), textcoords="offset points", va="top", fontsize=7, color=colour,
                         linespacing=1.1)
    strength = _values(c.strength if c is not None else None for c in series.calls)
    bottom.plot(steps, strength, color="black", linewidth=1.2, label="strength")
    for i, (x, y) in enumerate(zip(steps, strength)):
        bottom.plot([x], [y], marker="o", markersize=5, color="black",
                    markerfacecolor="black" if found[i] else "white", linestyle="none")
    for level, name in ((STRONG, "strong"), (MODERATE, "moderate")):
        bottom.axhline(level, color="grey", linewidth=0.8, linestyle="--")
        bottom.annotate(name, xy=(0, level), xycoords=("axes fraction", "data"), xytext=(2, 2),
                        textcoords="offset points", fontsize=7, color="grey")
    bottom.set_ylim(-0.03, 1.03)
    bottom.set_ylabel("strength")
    bottom.set_xlabel(series.unit)
    final = next((c for c in reversed(series.calls) if c is not None), None)
    if title is None:
        call = (f"{final.start} → {final.end}, rank {final.rank}" if final is not None and final.found
                else "no bottleneck at the last step")
        title = f"Convolution Bottleneck over training: {call}"
    top.set_title(title, fontsize=10)
    if path is not None:
        fig.savefig(str(path), dpi=dpi)
    return fig
