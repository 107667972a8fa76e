"""Small inline SVG pictures that need no matplotlib: sparklines and the layer x degree heat map.

Used by the HTML report (and the Jupyter view), so that a report has a picture even without the ``plot``
extra. Every string that reaches the SVG is escaped by the caller's :func:`html.escape` or is a number.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

import numpy as np

from .figure_data import DegreeMatrix

GREEN, GREY, MAGENTA = "#2e9d4a", "#9a9a9a", "#b0209a"


def _log(v: float, top: float, decades: float) -> float:
    """0 (at top) .. 1 (``decades`` below top) on a log scale."""
    if not (v and v > 0 and top > 0):
        return 1.0
    return min(1.0, max(0.0, -math.log10(v / top) / decades))


def profile_sparkline(profile: Sequence[float | None], kept_from: float | None, top: float | None,
                      width: int = 120, height: int = 24, decades: float = 4.0) -> str:
    """A layer's sorted singular values (its profile) on a log scale over ``decades``; kept points green."""
    vals = [v for v in profile if v is not None]
    if not vals or not top:
        return ""
    xs = np.linspace(2, width - 2, len(vals))
    ys = [2 + (height - 4) * _log(v, top, decades) for v in vals]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" fill="{GREEN if kept_from is not None and v >= kept_from else GREY}"/>'
        for x, y, v in zip(xs, ys, vals))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<title>sorted singular values, log scale over {decades:g} decades; green: kept</title>'
            f'<polyline points="{line}" fill="none" stroke="#555" stroke-width="1"/>{dots}</svg>')


def depth_sparkline(values: Sequence[float | None], span: tuple[int, int] | None, width: int = 160,
                    height: int = 28) -> str:
    """Utilisation per layer against depth (log scale, 1 down to 1e-4), the bottleneck span shaded."""
    n = len(values)
    if not n:
        return ""
    xs = np.linspace(3, width - 3, n) if n > 1 else np.array([width / 2])
    step = (xs[1] - xs[0]) if n > 1 else width
    shade = ""
    if span is not None:
        lo, hi = span
        shade = (f'<rect x="{xs[lo] - step / 2:.1f}" y="0" width="{(hi - lo + 1) * step:.1f}" height="{height}" '
                 f'fill="{MAGENTA}" fill-opacity="0.15"/>')
    pts = [(x, 2 + (height - 4) * _log(v, 1.0, 4.0)) for x, v in zip(xs, values) if v is not None]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<title>share of capacity kept per layer (log scale, 100% to 0.01%); shaded: bottleneck</title>'
            f'{shade}<polyline points="{line}" fill="none" stroke="#2060b0" stroke-width="1.3"/></svg>')


def _colour(level: float) -> str:
    """0..1 -> a light-to-dark blue (viridis-like enough for a small picture)."""
    stops = [(247, 251, 255), (107, 174, 214), (33, 113, 181), (8, 48, 107)]
    pos = level * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    t = pos - i
    rgb = [round(a + (b - a) * t) for a, b in zip(stops[i], stops[i + 1])]
    return "#%02x%02x%02x" % tuple(rgb)


def heatmap_svg(data: DegreeMatrix, cell: int = 14, label_width: int = 150) -> str:
    """Kept modes per layer (rows) and degree (columns), log colour, counts written in the cells."""
    rows, cols = data.counts.shape
    h = max(4, min(cell, 900 // max(rows, 1)))
    w = max(cell + 10, 6 * max((len(label) for label in data.labels), default=1) + 4)
    top = float(np.nanmax(data.counts)) if np.isfinite(data.counts).any() else 0.0
    width, height = label_width + cols * w + 10, 30 + rows * h
    out = [f'<svg class="heat" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
           f'<title>kept modes per layer and frequency degree ({escape(data.metric)}), log colour</title>']
    for j, label in enumerate(data.labels):
        out.append(f'<text x="{label_width + j * w + w / 2:.1f}" y="12" font-size="9" text-anchor="middle">'
                   f'{escape(label)}</text>')
    step = max(1, math.ceil(rows * 11 / (rows * h))) if h < 11 else 1
    for i in range(rows):
        y = 18 + i * h
        if i % step == 0:
            colour = MAGENTA if data.inside[i] else "#333"
            out.append(f'<text x="{label_width - 4}" y="{y + h - 2}" font-size="{min(10, h + 1)}" '
                       f'text-anchor="end" fill="{colour}">{i} {escape(data.names[i][-24:])}</text>')
        for j in range(cols):
            v = data.counts[i, j]
            level = 0.0 if not np.isfinite(v) or v <= 0 or top <= 0 else 0.15 + 0.85 * math.log1p(v) / math.log1p(top)
            fill = "#eeeeee" if not np.isfinite(v) else _colour(level)
            out.append(f'<rect x="{label_width + j * w}" y="{y}" width="{w - 1}" height="{h - (1 if h > 5 else 0)}" '
                       f'fill="{fill}"><title>{escape(data.names[i])}, degree {escape(data.labels[j])}: '
                       f'{0 if not np.isfinite(v) else v:.4g}</title></rect>')
            if h >= 11 and np.isfinite(v) and v > 0:
                out.append(f'<text x="{label_width + j * w + w / 2:.1f}" y="{y + h - 3}" font-size="8" '
                           f'text-anchor="middle" fill="{"white" if level > 0.55 else "black"}">{v:.0f}</text>')
    idx = np.flatnonzero(data.inside)
    if len(idx):
        y0, y1 = 18 + idx[0] * h, 18 + (idx[-1] + 1) * h
        out.append(f'<rect x="{label_width - 1}" y="{y0 - 1}" width="{cols * w + 1}" height="{y1 - y0 + 1}" '
                   f'fill="none" stroke="{MAGENTA}" stroke-width="2"/>')
    out.append("</svg>")
    return "".join(out)
