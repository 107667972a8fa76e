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
from .json_report import format_type, order_is_guessed

BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 10
SPARK_DECADES = 4  # the sparkline spans sigma_max down to sigma_max * 10^-4


# Row markers (the "!" column), in the order shown, with the line that explains each under the table.
MARKERS = (
    ("zero", "z", "all weights zero"),
    ("nonfinite", "n", "NaN/Inf weights, not analysed"),
    ("default-grid", "d", "default grid: no architecture or metadata declared it"),
    ("approximate", "a", "approximate: zero/reflect/unknown padding, spectrum of the circular conv"),
    ("quantised", "q", "quantised weights, dequantised for the analysis"),
    ("assumed-geometry", "s", "stride, groups and padding assumed (stride 1, groups 1), not declared"),
)


def format_degrees(counts: Mapping[int, int]) -> str:
    """``{0: 3, 1: 4}`` -> ``"0:3 1:4"``: every degree, never cut."""
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


def degrees_cell(counts: Mapping[int, int], width: int) -> tuple[str, bool]:
    """The table cell: every degree when they fit in ``width``; else the first ones and ``+N`` (how many more),
    with True: the row's degrees are then listed whole under the table."""
    text = format_degrees(counts)
    if len(text) <= width:
        return text, False
    entries = text.split(" ")
    best, length = 0, -1
    for shown, entry in enumerate(entries[:-1], start=1):  # linear: a 1x44100 grid has 22,051 degrees
        length += len(entry) + 1
        if length > width:
            break
        if length + len(f" +{len(entries) - shown}") <= width:
            best = shown
    if best:
        return " ".join(entries[:best]) + f" +{len(entries) - best}", True
    return f"+{len(entries)}", True


def shorten_middle(name: str, width: int, tail: int | None = None) -> str:
    """``name`` cut to ``width`` characters in the middle (``head…tail``): the ends of a layer name are what
    tells rows apart (``…/encoder/3/conv``). ``tail`` characters are kept from the end (default: two thirds)."""
    if len(name) <= width or width < 5:
        return name
    tail = (width - 1) * 2 // 3 if tail is None else min(tail, width - 1)
    return name[: width - 1 - tail] + "…" + name[len(name) - tail:]


def short_names(names: list[str], width: int) -> list[str]:
    """Every name cut to ``width`` so that distinct names stay distinct: a prefix all long names share (an
    exporter's scope, ``If_0.then_branch/...``) becomes a leading ``…``, and the rest is cut in the middle,
    the cut moved until no two rows look alike."""
    import os
    import re

    if all(len(n) <= width for n in names):
        return list(names)
    distinct = len(set(names))
    long = [n for n in names if len(n) > width]
    prefix = os.path.commonprefix(long) if len(long) > 1 else ""
    prefix = prefix[: max((m.end() for m in re.finditer(r"[./]", prefix)), default=0)]
    candidates = []
    for lead in ((prefix, "…"), ("", "")) if prefix else (("", ""),):
        room = width - len(lead[1])
        for tail in [(room - 1) * 2 // 3] + list(range(room - 1, 0, -1)):
            out = [n if len(n) <= width else
                   lead[1] + shorten_middle(n[len(lead[0]):], room, tail) if n.startswith(lead[0]) else
                   shorten_middle(n, width, tail) for n in names]
            if len(set(out)) == distinct:
                return out
            candidates.append(out)
    return candidates[0]


def row_markers(report: LayerReport) -> str:
    """The letters of :data:`MARKERS` that apply to the row (flags of the analysis and of the layer)."""
    flags = set(report.flags)
    if report.layer.geometry_source == "assumed":
        flags.add("assumed-geometry")
    return "".join(letter for flag, letter, _ in MARKERS if flag in flags)


def _shape(shape: Iterable[int]) -> str:
    return "×".join(str(v) for v in shape)


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3g}" if value < 1e4 else f"{value:.1e}"


def spark(report: LayerReport, width: int = SPARK_WIDTH) -> Text:
    """The layer's sorted singular values (all frequencies) on a log scale; kept ones green, the rest dim. A
    layer on the counts route (no profile) shows its kept share instead: green full bars, then dim dots."""
    metrics = report.metrics
    if metrics is None:
        return Text("not analysed", style="red")
    if not metrics.spectral_norm > 0 or not math.isfinite(metrics.spectral_norm):
        return Text("")
    if not metrics.profile:  # the counts route: no values but the largest; the kept share as a flat bar
        kept = round(metrics.utilisation * width)
        return Text(BARS[-1] * kept, style="green") + Text("·" * (width - kept), style="dim")
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


def degree_width(report: ModelReport, width: int) -> int:
    """The kept-degrees column's width: what the other columns leave of ``width`` (at least 11, at most the
    longest row's degrees)."""
    metric = report.settings.degree_metric
    wide = width >= 100
    texts = [format_degrees(r.metrics.degree_counts[metric]) for r in report.layers if r.metrics is not None]
    want = max([11] + [len(t) for t in texts])
    names = short_names([r.layer.name for r in report.layers], 24 if wide else 15)
    shapes = [_shape(r.layer.shape) for r in report.layers]
    grids = [_shape(r.layer.grid or ()) + "*" for r in report.layers]
    markers = [row_markers(r) for r in report.layers]
    others = [len(str(len(report.layers))) + 1, max(len(n) for n in names),
              min(max(len(v) for v in shapes), 100 if wide else 11), max(5, max(len(g) for g in grids)), 5, 4, 5,
              SPARK_WIDTH] + ([max(len(m) for m in markers)] if any(markers) else [])
    room = width - sum(others) - (len(others) + 1) * (2 if wide else 1)
    return max(11, min(want, room))


def _table(report: ModelReport, width: int) -> Table:
    b = report.bottleneck
    wide = width >= 100
    markers = [row_markers(r) for r in report.layers]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0) if wide else 0, show_edge=False,
                  expand=False)
    name_width = 24 if wide else 15
    degrees = degree_width(report, width)
    table.add_column("#", justify="right", no_wrap=True, min_width=len(str(len(report.layers))) + 1)
    table.add_column("layer", no_wrap=True, max_width=name_width)
    table.add_column("shape", no_wrap=True, overflow="ellipsis", max_width=None if wide else 11)
    table.add_column("grid", no_wrap=True, min_width=5)
    table.add_column("modes", justify="right", no_wrap=True, min_width=5)
    table.add_column("use", justify="right", no_wrap=True, min_width=4)
    table.add_column("kept degrees", no_wrap=True, min_width=11)
    table.add_column("σmax", justify="right", no_wrap=True, min_width=5)
    table.add_column("spectrum", no_wrap=True, min_width=SPARK_WIDTH)
    if any(markers):
        table.add_column("!", no_wrap=True, style="yellow")
    metric = report.settings.degree_metric
    names = short_names([clean(r.layer.name) for r in report.layers], name_width)
    for i, r in enumerate(report.layers):
        m = r.metrics
        inside = _inside(b, i)
        grid = _shape(r.layer.grid or ()) + ("*" if r.layer.grid_source == "default" else "")
        row = [
            f"▸{i}" if inside else str(i),
            safe(names[i]),
            _shape(r.layer.shape),
            grid,
            _count(m.mode_count) if m else "–",
            _use(m) if m else "–",
            degrees_cell(m.degree_counts[metric], degrees)[0] if m else "–",
            _num(m.spectral_norm) if m else "–",
            spark(r),
        ]
        if any(markers):
            row.append(markers[i])
        table.add_row(*row, style="bold magenta" if inside else None)
    return table


def _names(report: ModelReport, indices: Iterable[int], limit: int = 3) -> str:
    names = [report.layers[i].layer.name for i in indices]
    more = f", … {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(clean(n) for n in names[:limit]) + more


def _side_summary(report: ModelReport) -> str:
    """``3 layers (2 on a 1x1 grid, 1 off the channel chain): a, b, c``."""
    kinds: dict[str, int] = {}
    for _, why in report.bottleneck.side_layers:
        kind = why.split(" (")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    n = len(report.bottleneck.side_layers)
    detail = ", ".join(f"{v} {k}" for k, v in kinds.items())
    names = _names(report, (i for i, _ in report.bottleneck.side_layers))
    return f"{n} layer{'s' if n > 1 else ''} ({detail}): {names}"


def _basis(report: ModelReport) -> tuple[Text, list[Text]]:
    """The dim line of what the call rests on, and the warnings about it (order guessed, wrapped, inexact)."""
    settings = report.settings
    sources = sorted({r.layer.grid_source for r in report.layers})
    exact = sum(r.exact for r in report.layers)
    wrapped = [i for i, r in enumerate(report.layers) if "wrapped-kernel" in r.flags]
    line = Text(
        f"\norder: {report.order_source}; grid from {', '.join(sources)}; {exact}/{len(report.layers)} spectra "
        f"exact (circular padding); kept: {settings.tolerance.describe()}",
        style="dim",
    )
    warnings = []
    if order_is_guessed(report.order_source, report.order_confidence):
        warnings.append(Text("\norder only guessed (from layer names, or a low-confidence shape chain): the run "
                             "and its edges may be wrong (a trace or a declared order fixes it)", style="yellow"))
    if wrapped:
        warnings.append(Text(f"\n{len(wrapped)} layer(s) with kernels larger than their grid, taps wrapped "
                             f"({_names(report, wrapped)}): not the layer the network runs; no strong call",
                             style="yellow"))
    return line, warnings


def _span(candidate: Mapping) -> str:
    if candidate["start"] == candidate["end"]:
        return f"layer {clean(candidate['start'])}"
    return f"{clean(candidate['start'])} → {clean(candidate['end'])}"


def _use(m) -> str:
    return f"{m.utilisation:.1%}" if m.utilisation < 0.0995 else f"{m.utilisation:.0%}"


def _inside(b, i: int | None) -> bool:
    """Whether layer ``i`` belongs to the bottleneck run (its members: side layers inside the span do not)."""
    if i is None or not b.found:
        return False
    if b.members:
        return i in b.members
    return b.start_index is not None and b.start_index <= i <= (b.end_index or -1)


def _side_by_side(report: ModelReport, width: int) -> Table:
    """Weights and activations per layer, matched by name, in the activations' execution order."""
    acts = report.activations
    assert acts is not None
    wide = width >= 100
    metric = report.settings.degree_metric
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0) if wide else 0, show_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("layer", no_wrap=True)
    table.add_column("W modes", justify="right", no_wrap=True)
    table.add_column("use", justify="right", no_wrap=True, min_width=4)
    table.add_column("W kept", no_wrap=True, min_width=11)
    table.add_column("grid", no_wrap=True, justify="right", min_width=5)
    table.add_column("A modes", justify="right", no_wrap=True)
    table.add_column("use", justify="right", no_wrap=True, min_width=4)
    table.add_column("A kept", no_wrap=True, min_width=11)
    table.add_column("ν/νN", justify="right", no_wrap=True, min_width=4)
    weights = {r.layer.name: (i, r) for i, r in enumerate(report.layers)}
    rows = [(layer.name, j, layer) for j, layer in enumerate(acts.layers)]
    seen = {layer.name for layer in acts.layers}
    rows += [(r.layer.name, None, None) for r in report.layers if r.layer.name not in seen]
    degrees = 16 if wide else 11
    shown = dict(zip((name for name, _, _ in rows), short_names([clean(name) for name, _, _ in rows], 24 if wide else 12)))
    for name, j, act in rows:
        wi, wr = weights.get(name, (None, None))
        wm = wr.metrics if wr is not None else None
        am = act.metrics if act is not None else None
        w_in, a_in = _inside(report.bottleneck, wi), _inside(acts.bottleneck, j)
        table.add_row(
            str(j if j is not None else "–"),
            safe(shown[name]),  # a name from the file is data, never rich markup
            Text(("▸" if w_in else "") + (_count(wm.mode_count) if wm else "–"), style="bold magenta" if w_in else ""),
            _use(wm) if wm else "–",
            degrees_cell(wm.degree_counts[metric], degrees)[0] if wm else "–",
            _shape(act.grid) if act is not None else "–",
            Text(("▸" if a_in else "") + (_count(am.mode_count) if am else "–"), style="bold cyan" if a_in else ""),
            _use(am) if am else "–",
            degrees_cell(am.degree_counts[metric], degrees)[0] if am else "–",
            f"{act.nyquist_fraction:.2f}" if act is not None and act.nyquist_fraction is not None else "–",
        )
    return table


def _full_degrees(report: ModelReport, width: int, show: bool = True) -> Text | None:
    """The kept degrees of every row whose cell could not hold them all, whole, one row per line; folded into
    one line unless ``show`` (``--full-degrees``): on a big network the list is most of the output."""
    metric = report.settings.degree_metric
    width = degree_width(report, width)
    lines = [f"{i} {clean(r.layer.name)}: {format_degrees(r.metrics.degree_counts[metric])}"
             for i, r in enumerate(report.layers)
             if r.metrics is not None and degrees_cell(r.metrics.degree_counts[metric], width)[1]]
    if not lines:
        return None
    if not show:
        return Text(f"kept degrees: 'd:n' is n modes kept at degree d; '+N' means N more degrees, listed for "
                    f"{len(lines)} row(s) by --full-degrees (the JSON has them all)", style="dim")
    return Text("kept degrees in full (degree:count):\n" + "\n".join(lines), style="dim")


def _legend(report: ModelReport) -> Text | None:
    """One line per marker that appears in the table, saying what it means (and why, where it is known)."""
    used = "".join(row_markers(r) for r in report.layers)
    lines = [f"{letter} {meaning}{_why(report, flag)}" for flag, letter, meaning in MARKERS if letter in used]
    return Text("! " + "\n! ".join(lines), style="dim") if lines else None


def _why(report: ModelReport, flag: str) -> str:
    """What a newcomer needs to read a mark: zero convs behind a zero-initialised BatchNorm (timm's ResNets)."""
    if flag != "zero":
        return ""
    from ..analysis.layer import ZERO_SCALE_NOTE

    zero = [r for r in report.layers if "zero" in r.flags]
    scaled = sum(ZERO_SCALE_NOTE in r.notes for r in zero)
    if not scaled:
        return ""
    which = "" if scaled == len(zero) else f" ({scaled} of these {len(zero)})"
    return (f": their kernels are not, but the BatchNorm folded in after them{which} has scale 0 - timm and "
            "torchvision zero-initialise the last BatchNorm of each residual block, so an untrained model shows "
            "it; --no-fold-bn analyses the kernels")


def _bottleneck_lines(b, settings, lines: Text, style: str, names: list[str]) -> None:
    """The call itself: span, rank and type, strength, and what was trimmed or rejected (weights or activations)."""
    if b.found:
        lines.append(f"Bottleneck: {clean(b.start)} → {clean(b.end)}", style=f"bold {style}")
        lines.append(f"  ({b.plateau_length} layers)\n")
        lines.append(f"rank {b.rank} = {format_type(b.degree_counts)}")
        lines.append(f"  (degree: {settings.degree_metric})\n")
        lines.append(f"strength {b.strength:.2f} ({b.strength_label}): ", style="bold")
        if b.clean:
            lines.append(f"kept values ≥ {b.gap_ratio:.3g}× the rest, {b.utilisation:.1%} of capacity used")
        else:
            lines.append(
                f"kept values a median {b.typical_gap_ratio:.3g}× the rest (≥ {settings.min_gap:g}× in "
                f"{b.clean_layers} of {b.plateau_length} layers), {b.utilisation:.1%} of capacity used"
            )
        if not b.consistent_type:
            lines.append("\nthe kept degrees vary inside the run", style="yellow")
        if b.label_cap:
            lines.append(f"\nlabelled weak at most: {b.label_cap}", style="yellow")
        for i, why in b.trimmed:
            lines.append(f"\nleft out of the run: {clean(names[i])}, {clean(why)}")
        if b.rejected:
            r = b.rejected
            lines.append(f"\nnext candidate {_span(r)} (rank {r['rank']}) rejected: {clean(r['reason'])}", style="dim")
    else:
        lines.append("No bottleneck", style="bold")
        lines.append(f": {clean(b.reason)}")
        if b.rejected:
            r = b.rejected
            lines.append(f"\nbest candidate, rejected: {_span(r)} (rank {r['rank']}, strength {r['strength']:.2f})",
                         style="dim")


def _activation_summary(report: ModelReport) -> Panel:
    acts = report.activations
    assert acts is not None
    lines = Text()
    _bottleneck_lines(acts.bottleneck, report.settings, lines, "cyan", [layer.name for layer in acts.layers])
    inputs = acts.inputs
    centre = "batch mean removed at frequency 0" if acts.settings.center else "not centred"
    shape = "×".join(str(v) for v in inputs.get("preprocessing", {}).get("input_shape", []))
    lines.append(
        f"\n{inputs.get('count')} inputs ({inputs.get('source')}, {shape}), each layer's {acts.settings.side} "
        f"feature map, {centre}; run by {acts.runner}; capacity |grid| × min(C, inputs)",
        style="dim",
    )
    return Panel(lines, title="CBN summary · activations", title_align="left",
                 border_style="cyan" if acts.bottleneck.found else "white")


def _summary(report: ModelReport) -> Panel:
    b = report.bottleneck
    lines = Text()
    _bottleneck_lines(b, report.settings, lines, "magenta", [r.layer.name for r in report.layers])
    if b.side_layers:
        lines.append(f"\noff the main path (neither break nor form a run): {_side_summary(report)}", style="dim")
    line, warnings = _basis(report)
    lines.append_text(line)
    for warning in warnings:
        lines.append_text(warning)
    title = "CBN summary · weights" if report.activations is not None else "CBN summary"
    return Panel(lines, title=title, title_align="left", border_style="magenta" if b.found else "white")


class TerminalReport:
    """A printable view of a :class:`ModelReport` (``console.print(TerminalReport(report))``)."""

    def __init__(self, report: ModelReport, full_degrees: bool = False) -> None:
        self.report = report
        self.full_degrees = full_degrees  # list every row's kept degrees under the table (else one line)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        r = self.report
        head = Text()
        head.append("cbn-inspect ", style="bold")
        head.append(f"{__version__} · {clean(r.source.path)}\n", style="dim")
        head.append(f"{len(r.layers)} conv layers ({clean(r.source.format)}, order: {r.order_source}"
                    + (f", {r.order_confidence} confidence" if r.order_confidence not in (None, "high") else "") + ")")
        folded = sum("batchnorm-folded" in layer.flags for layer in r.layers)
        if folded:
            head.append(f", BatchNorm folded into {folded}")
        if r.skipped:
            head.append(f", {len(r.skipped)} tensors skipped", style="dim")
        if r.activations is None:
            parts = [head, _table(r, options.max_width)]
            for extra in (_legend(r), _full_degrees(r, options.max_width, self.full_degrees)):
                if extra is not None:
                    parts.append(extra)
            parts += [HeatStrip(r), _summary(r)]
        else:
            parts = [head, _side_by_side(r, options.max_width), HeatStrip(r), _summary(r), _activation_summary(r)]
        if any(layer.layer.grid_source == "default" for layer in r.layers):
            parts.append(Text("* default grid: no architecture or metadata declared it", style="dim"))
        for warning in r.warnings:
            parts.append(Text(f"warning: {clean(warning)}", style="yellow"))
        if r.activations is not None:
            for note in (*r.activations.inputs.get("notes", ()), *r.activations.notes):
                parts.append(Text(f"note: {clean(note)}", style="dim"))
        yield Group(*parts)


HEAT_CHARS = " .:-=+*#%@"  # kept modes per cell: none, then nine steps of a log scale up to the largest cell
HEAT_ROWS = 8  # degree rows at most (low degrees single, higher ones in ranges of doubling width)
HEAT_LABEL = 10  # room for the row labels ("deg 64-112")


def heat_levels(counts: np.ndarray) -> np.ndarray:
    """Cell values -> indices into :data:`HEAT_CHARS` (0 for none, 1-9 on a log scale, -1 for no data)."""
    top = np.nanmax(counts) if np.isfinite(counts).any() else 0.0
    levels = np.zeros(counts.shape, dtype=np.int64)
    if top > 0:
        scaled = np.log1p(np.nan_to_num(counts)) / math.log1p(top)
        levels = np.where(counts > 0, 1 + np.minimum(8, (scaled * 9).astype(np.int64)), 0)
    return np.where(np.isnan(counts), -1, levels)


class HeatStrip:
    """Kept modes per frequency degree (rows) and layer (columns) as characters, readable without colour.

    A layer gets up to 3 character columns; with more layers than columns, a column is the mean of
    consecutive layers. The row under the cells marks the bottleneck's columns with ``^``.
    """

    def __init__(self, report: ModelReport, rows: int = HEAT_ROWS) -> None:
        self.report = report
        self.rows = rows

    def grid(self, width: int) -> tuple[list[str], list[str], int, int]:
        """The strip's lines and their labels for ``width`` cells; also layers per column and columns per layer."""
        from .figure_data import degree_matrix

        data = degree_matrix(self.report, limit=self.rows, min_energy=math.inf)
        n = len(data.names)
        per = max(1, math.ceil(n / max(width, 1)))
        repeat = max(1, min(3, width // max(n, 1)))
        groups = [list(range(i, min(n, i + per))) for i in range(0, n, per)]
        cols = np.full((len(data.bins), len(groups)), np.nan)
        for j, g in enumerate(groups):
            block = data.counts[g]
            if np.isfinite(block).any():
                cols[:, j] = np.nanmean(block, axis=0)
        levels = heat_levels(cols)
        labels = [f"deg {lab}" for lab in data.labels]
        lines = ["".join(("?" if v < 0 else HEAT_CHARS[v]) * repeat for v in row) for row in levels]
        marks = "".join(("^" if data.inside[g].any() else " ") * repeat for g in groups)
        if marks.strip():
            labels.append("")
            lines.append(marks.rstrip())
        return labels, lines, per, repeat

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        n = len(self.report.layers)
        width = max(8, options.max_width - HEAT_LABEL - 1)
        labels, lines, per, repeat = self.grid(width)
        span = f"{per} layers a column, " if per > 1 else ""
        out = Text(f"kept modes by degree × layer ({span}'{HEAT_CHARS[1:]}' few → most, log scale; ^ bottleneck)\n",
                   style="dim")
        pad = max(len(label) for label in labels)
        for label, line in zip(labels, lines):
            out.append(f"{label:>{pad}} ", style="dim")
            out.append(line)
            out.append("\n")
        cells = math.ceil(n / per) * repeat
        last = str(n - 1)
        axis = "0" + last.rjust(cells - 1) if cells > len(last) + 1 else ""
        out.append(" " * (pad + 1) + axis, style="dim")
        yield out
