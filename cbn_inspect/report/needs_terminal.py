"""The terminal view of a :class:`~cbn_inspect.interventions.records.NeedsReport`: a header, one table row per
probed feature map, the plain-language summary, notes and cost. A rich renderable (``__rich_console__``);
names read from files go through :func:`~cbn_inspect.report._text.safe`."""

from __future__ import annotations

import math
from typing import Iterable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from ..analysis.interventions import format_type
from ..interventions.records import NeedsReport, OutputChange
from ._text import safe


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "inf"
    if value == 0:
        return "0%"
    return f"{100 * value:.2f}%" if value >= 1e-4 else f"{100 * value:.1e}%"


def change_text(change: OutputChange | None) -> str:
    """``0.31% (top-1 99.6%)``, the held-out change of a cut; ``-`` when there is none."""
    if change is None:
        return "-"
    text = _pct(change.relative_l2)
    if change.top1_agreement is not None:
        text += f" (top-1 {_pct(change.top1_agreement)})"
    elif change.argmax_agreement is not None:
        text += f" (argmax {_pct(change.argmax_agreement)})"
    return text + ("" if change.holds else " !")


class NeedsTerminal:
    """Render a needs report for a console."""

    def __init__(self, report: NeedsReport) -> None:
        self.report = report

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        r = self.report
        s = r.settings
        head = Text()
        head.append("needs  ", style="bold")
        head.append_text(safe(r.source))
        head.append(f"  ({r.runner}; output {r.output.get('kind', '?')})")
        yield head
        tol = f"max change {s.max_change:g}" + (f", min top-1 agreement {s.min_agreement:g}"
                                                if r.output.get("kind") == "class" else "")
        yield Text(f"inputs: {r.inputs.get('source', s.activations.inputs)}: {r.split.decide} decide, "
                   f"{r.split.held_out} held out ({r.split.rule}); tolerance: {tol}", style="dim")
        table = Table(show_edge=False, pad_edge=False, header_style="bold")
        for column, justify in (("layer", "left"), ("grid", "right"), ("band", "right"),
                                ("deg", "right"), ("rank/profile", "right"), ("type", "left"),
                                ("down", "right"), ("its change", "right"), ("rank change", "right")):
            table.add_column(column, justify=justify, overflow="fold")
        for layer in r.layers:
            name = safe(layer.name)
            if layer.also_read_by:
                name.append(f" (+{len(layer.also_read_by)})", style="dim")
            rank = "-" if layer.needed_rank is None else f"{layer.needed_rank} / {layer.profile_rank}"
            band = "-" if layer.needed_band is None else f"{layer.needed_band:.3g}"
            degree = "-" if layer.needed_degree is None else str(layer.needed_degree)
            factor = f"{layer.safe_factor}x" if layer.safe_factor > 1 else "none"
            change = layer.safe_change if layer.safe_factor > 1 else None
            table.add_row(name, "x".join(map(str, layer.grid)), band, degree, rank,
                          format_type(layer.needed_rank_type), factor, change_text(change),
                          change_text(layer.rank.held_out))
        yield table
        yield Text("band: needed box low-pass as a fraction of Nyquist; deg: needed l1-ball degree "
                   f"({s.degree_metric}); rank: needed (frequency, direction) pairs / the activation profile's "
                   "mode count; down: the largest safe down-sampling factor; its change, rank change: the outputs' "
                   "relative change on the held-out inputs under that down-sampling, under that rank", style="dim")
        yield Text("")
        for line in r.summary:
            yield safe(line)
        for note in self._notes():
            yield safe(note, style="dim")
        c = r.cost
        yield Text(f"cost: {c.forward_passes} forward passes (estimated {c.estimated}), {c.input_evaluations} input "
                   f"evaluations, {c.cpu_seconds:.1f} s CPU, {c.wall_seconds:.1f} s wall", style="dim")

    def _notes(self) -> Iterable[str]:
        for note in self.report.notes:
            yield f"note: {note}"
        for layer in self.report.layers:
            for note in layer.notes + layer.box.notes + layer.ball.notes + layer.rank.notes:
                yield f"note: {layer.name}: {note}"
        changes = [c for layer in self.report.layers for c in (layer.safe_change, layer.rank.held_out) if c is not None]
        if any(not c.holds for c in changes):
            yield "'!' marks a change beyond the tolerance on the held-out inputs"
