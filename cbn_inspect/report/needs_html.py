"""The HTML section of ``cbn-inspect needs``: what each probed layer needs, the advice and its checks.

:func:`needs_fragment` is the section (a ``<div>``, what a Jupyter cell shows; it can also sit inside a model's
HTML report); :func:`needs_html` wraps it in the same self-contained page as :mod:`.html` (no network, a
Content-Security-Policy that forbids any fetch, the table sorted by clicking a heading). The section holds:
the summary sentences, the joint checks, a sortable table (layer, grid, needed band as a fraction of Nyquist
and as a degree, needed rank against the profile's rank and all directions, its degree type, the safe
down-sampling factor and its held-out change, rings that matter on their own, notes), the figures of
:mod:`.needs_figures` as embedded PNG (omitted with a note when matplotlib is missing), the inputs, the split,
the cost and the settings. Every string read from a model or a file is HTML-escaped. Nothing is recomputed.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from html import escape
from pathlib import Path
from typing import Any

from .._version import __version__
from .html import STYLE, _page, _settings_table
from ._text import clean
from .json_report import format_type

EXTRA_STYLE = (".cbn .holds{color:#1a7f37}.cbn .fails{color:#b00020}.cbn ul.summary{margin:4px 0 4px 18px;padding:0}"
               ".cbn td.w{white-space:normal;min-width:12em;max-width:22em}")

COLUMNS = ("#", "layer", "C×grid", "probe", "band (ν/νN)", "degree", "needed rank", "profile rank",
           "directions", "needed type", "safe ↓", "change (held-out)", "top-1", "rings that matter", "notes")
LEFT = {"layer", "probe", "needed type", "notes", "rings", "rings that matter"}
WRAP = {"needed type", "notes", "rings"}


def _e(text: Any) -> str:
    """Text from a model or a file, control characters spelled out, then HTML-escaped."""
    return escape(clean(text))


def _pct(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2%}" if value >= 1e-4 else f"{value:.1e}"


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _cell(column: str, text: str, sort: Any, css: str = "") -> str:
    classes = " ".join(c for c in ("l" if column in LEFT else "", "w" if column in WRAP else "", css) if c)
    attr = f' class="{classes}"' if classes else ""
    return f'<td{attr} data-v="{_e(sort)}">{_e(text)}</td>'


def _type_cell(counts: Any, limit: int = 6) -> str:
    """The needed type, its first ``limit`` degrees and ``+N more``; the whole type in the tooltip."""
    full = format_type(counts) or "–"
    items = sorted(counts.items())
    text = full if len(items) <= limit else (format_type(dict(items[:limit])) + f", +{len(items) - limit} more degrees")
    return (f'<td class="l w" data-v="{sum(counts.values())}" title="{_e(full)}">{_e(text)}</td>')


def _change_cell(column: str, change: Any) -> str:
    if change is None:
        return _cell(column, "–", -1)
    return _cell(column, _pct(change.relative_l2), change.relative_l2, "holds" if change.holds else "fails")


def _row(i: int, layer: Any) -> str:
    grid = "×".join(str(n) for n in layer.grid)
    size = 1
    for n in layer.grid:
        size *= int(n)
    mattering = [r for r in layer.rings if not r.change.holds]
    rings = ", ".join(str(r.low) if r.low == r.high else f"{r.low}-{r.high}" for r in mattering) or "none"
    notes = "; ".join(layer.notes)
    if layer.also_read_by:
        notes = "; ".join(x for x in (f"also read by {', '.join(layer.also_read_by)}", notes) if x)
    top1 = layer.safe_change.top1_agreement if layer.safe_change is not None else None
    cells = [
        _cell("#", str(i), i), _cell("layer", layer.name, layer.name),
        _cell("grid", f"{layer.channels}×{grid}", size * layer.channels), _cell("probe", layer.reason, layer.reason),
        _cell("band", _num(layer.needed_band), layer.needed_band if layer.needed_band is not None else 2),
        _cell("degree", _num(layer.needed_degree), layer.needed_degree if layer.needed_degree is not None else -1),
        _cell("needed rank", _num(layer.needed_rank), layer.needed_rank if layer.needed_rank is not None else -1),
        _cell("profile rank", _num(layer.profile_rank), layer.profile_rank),
        _cell("directions", _num(layer.directions), layer.directions),
        _type_cell(layer.needed_rank_type),
        _cell("safe", f"{layer.safe_factor}×", layer.safe_factor),
        _change_cell("change", layer.safe_change),
        _cell("top-1", "–" if top1 is None else f"{top1:.1%}", -1 if top1 is None else top1),
        _cell("rings", rings, len(mattering)),
        _cell("notes", notes or "", notes),
    ]
    return f'<tr class="{"" if layer.everything_needed else "in"}">{"".join(cells)}</tr>'


def needs_table(report: Any) -> str:
    """The sortable table of probed layers; rows where something can be cut are tinted."""
    head = "".join(f'<th class="{"l" if c in LEFT else ""}">{escape(c)}</th>' for c in COLUMNS)
    body = "".join(_row(i, layer) for i, layer in enumerate(report.layers))
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _describe_change(change: Any) -> str:
    if change is None:
        return "no cut to check"
    parts = [f"relative change {_pct(change.relative_l2)}"]
    if change.top1_agreement is not None:
        parts.append(f"top-1 agreement {change.top1_agreement:.1%}")
    if change.kl is not None:
        parts.append(f"KL {change.kl:.3g}")
    if change.argmax_agreement is not None:
        parts.append(f"per-position argmax agreement {change.argmax_agreement:.1%}")
    verdict = "holds" if change.holds else "does not hold"
    return f"{', '.join(parts)} on {change.inputs} {change.part} inputs: {verdict}"


def joint_list(report: Any) -> str:
    items = []
    for check in report.joint:
        cuts = ", ".join(f"{name} {'↓' if check.kind == 'downsampling' else 'rank '}{value}"
                         + ("×" if check.kind == "downsampling" else "") for name, value in check.cuts)
        css = "" if check.change is None else ("holds" if check.change.holds else "fails")
        items.append(f'<li><b>{_e(check.kind)}</b> ({len(check.cuts)} cut{"s" if len(check.cuts) != 1 else ""}'
                     f'{": " + _e(cuts) if cuts else ""}): <span class="{css}">{_e(_describe_change(check.change))}'
                     "</span></li>")
    return f"<ul>{''.join(items)}</ul>" if items else '<p class="dim">no joint check (no cut recommended)</p>'


def figure_images(report: Any) -> tuple[list[tuple[str, str]], str | None]:
    """(caption, data URL) per panel, or ([], note) when matplotlib is missing."""
    from ..errors import MissingExtraError
    from .figures import require_matplotlib
    from .needs_figures import PANELS, plot_needs_panel

    try:
        require_matplotlib()
    except MissingExtraError as exc:
        return [], f"figures omitted: {exc.one_line()}"
    captions = {"curves": "need curves: output change against the kept band, one line per probed layer",
                "rings": "ring importances: output change when one degree ring is removed"}
    out = []
    for name in PANELS:
        if name == "rings" and not any(layer.rings for layer in report.layers):
            continue
        buffer = io.BytesIO()
        plot_needs_panel(report, name).savefig(buffer, format="png", dpi=96, metadata={"Software": "cbn-inspect"})
        out.append((captions[name], "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()))
    return out, None


def _inputs_line(report: Any) -> str:
    inputs = report.inputs
    get = inputs.get if hasattr(inputs, "get") else (lambda k, d=None: d)
    split = report.split
    return (f"{_num(get('count'))} inputs ({_e(get('source') or get('kind') or '?')}); split: "
            f"{_e(split.rule)}: {split.decide} decide, {split.held_out} held out · output "
            f"{_e(report.output.get('kind', '?'))} {_e(report.output.get('shape', ''))}")


def _cost_line(report: Any) -> str:
    c = report.cost
    plain = (f"; one plain pass over all inputs {c.plain_forward_seconds:.3g} s"
             if c.plain_forward_seconds is not None else "")
    return (f"{c.forward_passes} forward passes (estimated {c.estimated}), {c.input_evaluations} input evaluations; "
            f"CPU {c.cpu_seconds:.3g} s, wall {c.wall_seconds:.3g} s{plain}")


def needs_fragment(report: Any, figures: bool = True) -> str:
    """The needs section as an HTML block (no ``<html>`` around it)."""
    needed, total = report.needed_directions
    verdict = ("everything is needed: no probed layer can be cut within tolerance" if report.everything_needed
               else f"needs {needed:,} of {total:,} frequency-channel directions over the probed layers")
    parts = [f'<div class="cbn"><style>{STYLE}{EXTRA_STYLE}</style>',
             f"<h1>What {_e(Path(str(report.source)).name or report.source)} needs</h1>",
             f'<div class="dim">{_e(report.source)} · {len(report.layers)} probed layers · run by {_e(report.runner)} · '
             f"{_inputs_line(report)}</div>",
             f'<div class="call{" none" if report.everything_needed else ""}"><b>{escape(verdict)}</b>'
             f'<ul class="summary">{"".join(f"<li>{_e(s)}</li>" for s in report.summary)}</ul></div>',
             f"<h2>Joint checks (held-out inputs)</h2>{joint_list(report)}"]
    if figures:
        images, note = figure_images(report)
        parts.append("<h2>Figures</h2>")
        if note:
            parts.append(f'<p class="dim">{escape(note)}</p>')
        for caption, url in images:
            parts.append(f'<figure><img alt="{escape(caption)}" src="{url}"><figcaption class="dim">'
                         f"{escape(caption)}</figcaption></figure>")
    tolerance = (f"an intervention holds when the outputs change by at most {report.settings.max_change:.3g} "
                 f"(relative L2) and, for class outputs, keep top-1 agreement of at least "
                 f"{report.settings.min_agreement:.3g}")
    parts.append(f"<h2>Probed layers</h2><p class=\"dim\">{escape(tolerance)}; profile rank: "
                 f"{_e(report.tolerance or 'the activation profile')}; safe ↓: the largest down-sampling "
                 f"factor whose band holds; click a heading to sort</p>{needs_table(report)}")
    if report.notes:
        parts.append(f"<h2>Notes</h2><ul>{''.join(f'<li>{_e(n)}</li>' for n in report.notes)}</ul>")
    parts.append(f"<h2>Cost</h2><p>{escape(_cost_line(report))}</p>")
    parts.append(f"<h2>Settings</h2>{_settings_table(dataclasses.asdict(report.settings))}")
    parts.append(f'<p class="dim">cbn-inspect {escape(__version__)}</p></div>')
    return "".join(parts)


def needs_html(report: Any, figures: bool = True) -> str:
    """A whole self-contained page around :func:`needs_fragment`."""
    return _page(f"cbn-inspect needs: {clean(report.source)}", needs_fragment(report, figures=figures))
