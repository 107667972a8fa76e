"""The terminal report: a layer table, the bottleneck highlighted, and a summary panel.

:class:`TerminalReport` wraps a :class:`ModelReport` and joins rich's world through ``__rich_console__``;
the record underneath stays plain. Fits an 80-column terminal; colour follows rich (``NO_COLOR`` honoured).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .._version import __version__
from ..records import LayerReport, ModelReport
from ._text import clean, safe
from .json_report import format_type

BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 10
SPARK_DECADES = 4  # the sparkline spans sigma_max down to sigma_max * 10^-4


def format_degrees(counts: Mapping[int, int], width: int = 12) -> str:
    """``{0: 3, 1: 4}`` -> ``"0:3 1:4"``, cut with an ellipsis to ``width`` characters."""
    text = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if text[width - 1] != " ":  # the cut fell inside an entry: drop that entry
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip() + "…"


def _shape(shape: Iterable[int]) -> str:
    return "×".join(str(v) for v in shape)


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3g}" if value < 1e4 else f"{value:.1e}"


def spark(report: LayerReport, width: int = SPARK_WIDTH) -> Text:
    """The layer's sorted singular values (all frequencies) on a log scale; kept ones green, the rest dim."""
    metrics = report.metrics
    if metrics is None:
        return Text("not analysed", style="red")
    if not metrics.profile or not metrics.spectral_norm > 0 or not math.isfinite(metrics.spectral_norm):
        return Text("")
    profile = np.asarray(metrics.profile)
    picks = profile[np.linspace(0, len(profile) - 1, width).round().astype(int)]
    keep_from = metrics.smallest_kept if metrics.smallest_kept is not None else math.inf
    text = Text()
    for v in picks:
        ratio = v / metrics.spectral_norm if math.isfinite(v) else 1.0
        level = 1 + math.log10(max(ratio, 1e-300)) / SPARK_DECADES
        char = BARS[min(len(BARS) - 1, max(0, int(level * len(BARS))))]
        text.append(char, style="green" if v >= keep_from else "dim")
    return text


def _count(value: int) -> str:
    return str(value) if value < 100_000 else f"{value / 1000:.0f}k"


def _table(report: ModelReport, width: int) -> Table:
    b = report.bottleneck
    wide = width >= 100
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0) if wide else 0, show_edge=False,
                  expand=False)
    table.add_column("#", justify="right", no_wrap=True, min_width=len(str(len(report.layers))) + 1)
    table.add_column("layer", overflow="ellipsis", no_wrap=True, max_width=24 if wide else 15)
    table.add_column("shape", no_wrap=True, overflow="ellipsis", max_width=None if wide else 11)
    table.add_column("grid", no_wrap=True, min_width=5)
    table.add_column("modes", justify="right", no_wrap=True, min_width=5)
    table.add_column("use", justify="right", no_wrap=True, min_width=4)
    table.add_column("kept degrees", no_wrap=True, min_width=11)
    table.add_column("σmax", justify="right", no_wrap=True, min_width=5)
    table.add_column("spectrum", no_wrap=True, min_width=SPARK_WIDTH)
    metric = report.settings.degree_metric
    for i, r in enumerate(report.layers):
        m = r.metrics
        inside = b.found and b.start_index is not None and b.start_index <= i <= (b.end_index or -1)
        grid = _shape(r.layer.grid or ()) + ("*" if r.layer.grid_source == "default" else "")
        row = [
            f"▸{i}" if inside else str(i),
            safe(r.layer.name),
            _shape(r.layer.shape),
            grid,
            _count(m.mode_count) if m else "–",
            (f"{m.utilisation:.1%}" if m.utilisation < 0.0995 else f"{m.utilisation:.0%}") if m else "–",
            format_degrees(m.degree_counts[metric], 16 if wide else 11) if m else "–",
            _num(m.spectral_norm) if m else "–",
        ]
        table.add_row(*row, spark(r), style="bold magenta" if inside else None)
    return table


def _summary(report: ModelReport) -> Panel:
    b = report.bottleneck
    lines = Text()
    if b.found:
        lines.append(f"Bottleneck: {clean(b.start)} → {clean(b.end)}", style="bold magenta")
        lines.append(f"  ({b.plateau_length} layers)\n")
        lines.append(f"rank {b.rank} = {format_type(b.degree_counts)}")
        lines.append(f"  (degree: {report.settings.degree_metric})\n")
        lines.append(f"strength {b.strength:.2f} ({b.strength_label}): ", style="bold")
        if b.clean:
            lines.append(f"kept values ≥ {b.gap_ratio:.3g}× the rest, {b.utilisation:.1%} of capacity used")
        else:
            lines.append(
                f"kept values a median {b.typical_gap_ratio:.3g}× the rest (≥ {report.settings.min_gap:g}× in "
                f"{b.clean_layers} of {b.plateau_length} layers), {b.utilisation:.1%} of capacity used"
            )
        if not b.consistent_type:
            lines.append("\nthe kept degrees vary inside the run", style="yellow")
    else:
        lines.append("No bottleneck", style="bold")
        lines.append(f": {clean(b.reason)}")
    settings = report.settings
    sources = sorted({r.layer.grid_source for r in report.layers})
    exact = sum(r.exact for r in report.layers)
    lines.append(
        f"\nkept: {settings.tolerance.describe()}; grid from {', '.join(sources)}; "
        f"{exact}/{len(report.layers)} spectra exact (circular padding)",
        style="dim",
    )
    return Panel(lines, title="CBN summary", title_align="left", border_style="magenta" if b.found else "white")


class TerminalReport:
    """A printable view of a :class:`ModelReport` (``console.print(TerminalReport(report))``)."""

    def __init__(self, report: ModelReport) -> None:
        self.report = report

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        r = self.report
        head = Text()
        head.append("cbn-inspect ", style="bold")
        head.append(f"{__version__} · {clean(r.source.path)}\n", style="dim")
        head.append(f"{len(r.layers)} conv layers ({r.source.format}, order: {r.order_source})")
        folded = sum("batchnorm-folded" in layer.flags for layer in r.layers)
        if folded:
            head.append(f", BatchNorm folded into {folded}")
        if r.skipped:
            head.append(f", {len(r.skipped)} tensors skipped", style="dim")
        parts = [head, _table(r, options.max_width), _summary(r)]
        if any(layer.layer.grid_source == "default" for layer in r.layers):
            parts.append(Text("* default grid: no architecture or metadata declared it", style="dim"))
        for warning in r.warnings:
            parts.append(Text(f"warning: {clean(warning)}", style="yellow"))
        yield Group(*parts)
