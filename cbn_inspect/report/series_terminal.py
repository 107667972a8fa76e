"""Terminal views of a series (``track``) and a comparison (``compare``), as rich renderables.

:class:`SeriesView`: a compact layer x step table of mode counts (counts of layers inside that step's
bottleneck in bold green; when the steps do not fit the width, evenly spaced ones are shown, always with the
first, the last, the first with a bottleneck and the one it settles at), rows for the call per step, a
per-layer first -> last table (modes, utilisation, gap, kept degrees) and a summary panel.
:class:`ComparisonView`: per layer what changed between A and B, and the bottleneck of each. Every name
read from a file is shown as plain text (never parsed as markup).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..series.records import Comparison, Series, StepCall

IN_RUN = "bold green"


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.3g}" if value < 1e4 else f"{value:.1e}"


def _pct(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}%" if value < 0.1 else f"{100 * value:.0f}%"


def _degrees(counts: Mapping[str, int] | None, width: int = 14) -> str:
    if counts is None:
        return "–"
    text = " ".join(f"{k}:{v}" for k, v in sorted(counts.items(), key=lambda kv: int(kv[0])))
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "…"


def describe_call(call: StepCall, *, with_type: bool = True) -> str:
    """``layers.1 → layers.10, rank 7 = 1 @ deg 0, ..., strength 0.97 (strong)``."""
    if not call.found:
        return f"no bottleneck ({call.reason})" if call.reason else "no bottleneck"
    kind = f" = {call.type}" if with_type and call.type else ""
    strength = f", strength {call.strength:.2f} ({call.strength_label})" if call.strength is not None else ""
    return f"{call.start} → {call.end}, rank {call.rank}{kind}{strength}"


def pick_columns(count: int, fit: int, keep: Sequence[int]) -> list[int]:
    """Indices of ``fit`` of ``count`` columns (all when they fit): ``keep`` first, then, one at a time, the
    column farthest from those chosen, so the shown steps spread evenly. Sorted."""
    if count <= fit:
        return list(range(count))
    chosen = {i for i in keep if 0 <= i < count}
    # distance of every column to the nearest chosen one, updated as columns are added: O(count) per pick
    far = [min((abs(i - j) for j in chosen), default=count) for i in range(count)] if chosen else [count] * count
    while len(chosen) < fit:
        pick = max((i for i in range(count) if i not in chosen), key=lambda i: (far[i], -i))
        chosen.add(pick)
        far = [min(d, abs(i - pick)) for i, d in enumerate(far)]
    return sorted(chosen)


class SeriesView:
    """A series in the terminal; see the module docstring."""

    def __init__(self, series: Series) -> None:
        self.series = series

    def _columns(self, fit: int) -> list[int]:
        s = self.series
        index = {step: i for i, step in enumerate(s.steps)}
        keep = [0, len(s.steps) - 1] + [index[v] for v in (s.first_found, s.settled) if v is not None]
        return pick_columns(len(s.steps), fit, keep)

    def table(self, console: Console, width: int) -> Table:
        """The widest table of evenly picked steps that fits ``width``."""
        from rich.measure import Measurement

        steps = self.series.steps
        digits = max([len(str(v)) for v in steps] + [4])
        # every step column takes at least its digits and one space; the layer column at least 10
        fit = max(2, min(len(steps), (width - 10) // (digits + 1)))
        while True:
            table = self._table(self._columns(fit))
            wide = console.options.update(max_width=10_000)
            if fit <= 2 or Measurement.get(console, wide, table).maximum <= width:
                return table
            fit -= 1

    def _table(self, cols: list[int]) -> Table:
        s = self.series
        shown = f" ({len(cols)} of {len(s.steps)} shown; --json for all)" if len(cols) < len(s.steps) else ""
        table = Table(box=box.SIMPLE_HEAD, title=Text(f"modes per layer, by {s.unit}{shown}"), title_justify="left",
                      pad_edge=False, padding=(0, 0, 0, 1), show_edge=False)
        table.add_column("layer", no_wrap=True, max_width=24, min_width=10)
        digits = max([len(str(v)) for v in s.steps] + [4])
        for i in cols:
            table.add_column(str(s.steps[i]), justify="right", no_wrap=True, min_width=digits)
        for track in s.layers:
            cells = []
            for i in cols:
                count = track.mode_count[i]
                cells.append(Text("–" if count is None else str(count), style=IN_RUN if track.in_bottleneck[i] else ""))
            table.add_row(Text(track.name), *cells)
        names = [t.name for t in s.layers]
        run, strength = [], []
        for i in cols:
            call = s.calls[i]
            if call is None:
                run.append(Text("error", style="red"))
                strength.append(Text("–"))
                continue
            if call.found and call.start in names and call.end in names:
                run.append(Text(f"{names.index(call.start)}–{names.index(call.end)}", style=IN_RUN))
            else:
                run.append(Text("–", style="dim"))
            value = "–" if call.strength is None else f"{call.strength:.2f}"
            strength.append(Text(value, style=IN_RUN if call.found else "dim"))
        table.add_section()
        table.add_row(Text("bottleneck", style="bold"), *run)
        table.add_row(Text("rank", style="bold"),
                      *[Text(str(s.calls[i].rank) if s.calls[i] and s.calls[i].found else "–") for i in cols])
        table.add_row(Text("strength", style="bold"), *strength)
        return table

    def evolution(self) -> Table:
        """Per layer, its first and last successful checkpoint: modes, utilisation, gap, kept degrees."""
        s = self.series
        ok = [i for i, p in enumerate(s.points) if p.ok]
        first, last = (ok[0], ok[-1]) if ok else (0, 0)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1), show_edge=False,
                      title=Text(f"per layer, {s.unit} {s.steps[first]} → {s.steps[last]}"), title_justify="left")
        for name, justify in (("layer", "left"), ("modes", "right"), ("use", "right"), ("gap", "right"),
                              ("kept degrees (last)", "left")):
            table.add_column(name, justify=justify, no_wrap=True, max_width=24 if name == "layer" else None)
        for t in s.layers:
            def pair(values, fmt):
                return f"{fmt(values[first])} → {fmt(values[last])}"
            table.add_row(Text(t.name), pair(t.mode_count, lambda v: "–" if v is None else str(v)),
                          pair(t.utilisation, _pct), pair(t.gap_ratio, _num), Text(_degrees(t.degree_counts[last], 24)))
        return table

    def summary(self) -> list[str]:
        s = self.series
        done = [c for c in s.calls if c is not None]
        lines = []
        if not done:
            return ["every checkpoint failed: nothing to show"]
        start = done[0]
        lines.append(f"{s.unit} {start.step}: " + (describe_call(start) if start.found else
                     f"no bottleneck (strength {_num(start.strength)})"))
        if s.first_found is None:
            best = max(done, key=lambda c: c.strength or 0.0)
            lines.append(f"no bottleneck at any {s.unit}; the best candidate's strength peaks at "
                         f"{_num(best.strength)} at {s.unit} {best.step}")
        else:
            first = next(c for c in done if c.step == s.first_found)
            final = done[-1]
            if first is not start:
                lines.append(f"first appears at {s.unit} {first.step}: {describe_call(first, with_type=False)}")
            if s.settled is not None:
                where = final.__class__(**{**final.__dict__, "strength": None})  # the place, without strength
                lines.append(f"settles from {s.unit} {s.settled}: {describe_call(where)}")
            else:
                lines.append(f"does not settle: the call at the last {s.unit} differs from the one before it")
            lines.append(f"at the last {s.unit}, {final.step}: " + (
                f"strength {final.strength:.2f} ({final.strength_label})" if final.found and final.strength is not None
                else describe_call(final)))
        lines.append(f"{len(s.points)} checkpoints; {s.unit}s from {s.step_source}")
        if s.failed:
            names = ", ".join(Path(p.source).name for p in s.failed[:4])
            lines.append(f"{len(s.failed)} failed: {names}")
        if s.partial_layers:
            lines.append(f"{len(s.partial_layers)} layer(s) missing from some checkpoints: "
                         + ", ".join(s.partial_layers[:4]))
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        parts: list[Any] = [self.table(console, options.max_width), Text(""), self.evolution()]
        parts.append(Panel(Text("\n".join(self.summary())), title="CBN over training", title_align="left",
                           box=box.ROUNDED))
        for point in self.series.failed:
            parts.append(Text(f"{point.source}: {point.error_kind}: {point.error_message}", style="red"))
        yield Group(*parts)


class ComparisonView:
    """A comparison in the terminal; see the module docstring."""

    def __init__(self, comparison: Comparison) -> None:
        self.comparison = comparison

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        c = self.comparison
        pa = (c.a.get("source") or {}).get("path") or "A"
        pb = (c.b.get("source") or {}).get("path") or "B"
        header = Text(f"A: {pa}\nB: {pb}\n(= unchanged; A → B where changed; kept degrees: B's)")
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1), show_edge=False)
        for name, justify in (("layer", "left"), ("modes", "right"), ("kept degrees", "left"), ("σmax", "right"),
                              ("gap", "right")):
            table.add_column(name, justify=justify, no_wrap=True, max_width=24 if name == "layer" else None)
        for change in c.layers:
            if not change.paired:
                side = "A" if change.b is None else "B"
                table.add_row(Text(change.name), Text(f"only in {side}", style="yellow"), "", "", "")
                continue
            a, b = change.a, change.b

            def cell(key: str, fmt) -> Text:
                if key not in change.changed:
                    return Text(f"= {fmt(b.get(key))}", style="dim")
                if key == "degree_counts":
                    return Text(f"→ {fmt(b.get(key))}", style="bold")
                return Text(f"{fmt(a.get(key))} → {fmt(b.get(key))}", style="bold")

            table.add_row(Text(change.name), cell("mode_count", lambda v: "–" if v is None else str(v)),
                          cell("degree_counts", lambda v: _degrees(v, 20)), cell("spectral_norm", _num),
                          cell("gap_ratio", _num))
        lines = [f"A: {self._call(c.a)}", f"B: {self._call(c.b)}"]
        if c.unchanged:
            lines.append(f"no change: every layer's mode count, kept degrees, spectral norm and gap agree "
                         f"(relative tolerance {c.rtol:g}), and so does the bottleneck")
        else:
            paired = [x for x in c.layers if x.paired]
            lines.append(f"{len(c.changed_layers)} of {len(paired)} paired layers changed"
                         + (f"; bottleneck changed: {', '.join(c.bottleneck_changed)}" if c.bottleneck_changed else
                            "; same bottleneck call"))
        if c.only_a or c.only_b:
            lines.append(f"layers only in A: {', '.join(c.only_a) or 'none'}; only in B: {', '.join(c.only_b) or 'none'}")
        if c.settings_differ:
            lines.append("warning: A and B were analysed with different settings")
        yield Group(header, table, Panel(Text("\n".join(lines)), title="compare", title_align="left", box=box.ROUNDED))

    @staticmethod
    def _call(report: Mapping[str, Any]) -> str:
        b = report.get("bottleneck") or {}
        call = StepCall(step=0, found=bool(b.get("found")), reason=str(b.get("reason", "")), start=b.get("start"),
                        end=b.get("end"), rank=b.get("rank"), type=b.get("type"), strength=b.get("strength"),
                        strength_label=str(b.get("strength_label", "none")))
        if not call.found:
            return f"no bottleneck (strength {_num(call.strength)})"
        return describe_call(call)
