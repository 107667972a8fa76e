"""The HTML report: one self-contained file (no network, no external script, style or font).

:func:`report_html` writes a model's summary, a sortable layer table (with inline SVG sparklines), the
figures (PNG embedded as base64 when matplotlib is installed, else omitted with a note; the inline SVG heat
map is always there) and the settings. :func:`report_fragment` is the same without the page around it
(the Jupyter view). :func:`audit_html` gives an audit's overview: one row per model with its call, rank,
strength and utilisation profile, failures listed. Every string read from a file is HTML-escaped; a
Content-Security-Policy forbids any fetch.
"""

from __future__ import annotations

import base64
import io
import json
import math
from html import escape
from typing import Any, Mapping, Sequence

from .._version import __version__
from ..records import ModelReport
from ._svg import depth_sparkline, heatmap_svg, profile_sparkline
from .figure_data import bottleneck_summary, degree_matrix, grid_summary, in_bottleneck
from .json_report import format_type, report_to_dict

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
.cbn{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:14px;color:#222;max-width:1200px}
.cbn h1{font-size:20px;margin:0 0 4px}.cbn h2{font-size:16px;margin:22px 0 6px}
.cbn .dim{color:#666}.cbn .call{border-left:4px solid #b0209a;padding:6px 10px;background:#fbf3fa}
.cbn .none{border-left-color:#999;background:#f5f5f5}.cbn .warn{color:#9a6700}
.cbn table{border-collapse:collapse;font-size:12px}.cbn th,.cbn td{padding:2px 7px;text-align:right;white-space:nowrap}
.cbn th{position:sticky;top:0;background:#eee;cursor:pointer;user-select:none}
.cbn td.l,.cbn th.l{text-align:left}.cbn tr.in td{background:#fbeaf8}.cbn tr:hover td{background:#eef4ff}
.cbn th.asc::after{content:" \\25B2"}.cbn th.desc::after{content:" \\25BC"}
.cbn pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}.cbn img{max-width:100%}
.cbn .fail td{color:#b00020}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var asc=!th.classList.contains('asc');
      t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc?'asc':'desc');
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[i].getAttribute('data-v'),y=b.cells[i].getAttribute('data-v');
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:String(x).localeCompare(String(y));
        return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
  t.setAttribute('data-sort','ready');
});
"""

COLUMNS = (("#", "index"), ("layer", "name"), ("kind", "kind"), ("shape", "shape"), ("grid", "grid"),
           ("modes", "mode_count"), ("capacity", "capacity"), ("use", "utilisation"),
           ("kept degrees", "degree_counts"), ("σmax", "spectral_norm"), ("stable rank", "stable_rank"),
           ("gap", "gap_ratio"), ("flags", "flags"))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "×".join(str(v) for v in value)
    return str(value)


def _cell(key: str, value: Any) -> str:
    if key == "utilisation" and value is not None:
        text, sort = f"{value:.2%}", value
    elif key == "degree_counts":
        text, sort = " ".join(f"{k}:{v}" for k, v in value.items()), sum(value.values())
    elif key == "flags":
        text, sort = ", ".join(value), ", ".join(value)
    elif isinstance(value, list):
        text, sort = _fmt(value), _prod(value)
    else:
        text, sort = _fmt(value), "" if value is None else value
    left = key in ("name", "kind", "degree_counts", "flags")
    return f'<td{" class=l" if left else ""} data-v="{escape(str(sort))}">{escape(text)}</td>'


def _prod(values: list) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def layer_table(report: ModelReport, data: Mapping[str, Any]) -> str:
    """The sortable layer table (click a heading), the bottleneck's rows tinted, a sparkline per layer."""
    inside = in_bottleneck(report)
    head = "".join(f'<th class="{"l" if key in ("name", "kind", "degree_counts", "flags") else ""}">'
                   f"{escape(title)}</th>" for title, key in COLUMNS)
    rows = []
    for i, (layer, rec) in enumerate(zip(data["layers"], report.layers)):
        m = rec.metrics
        spark = profile_sparkline(layer["profile"], m.smallest_kept if m else None, m.spectral_norm if m else None)
        cells = "".join(_cell(key, layer[key]) for _, key in COLUMNS)
        rows.append(f'<tr class="{"in" if inside[i] else ""}">{cells}<td class=l data-v="{i}">{spark}</td></tr>')
    return (f'<table class="sortable"><thead><tr>{head}<th class="l">spectrum</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _summary(report: ModelReport) -> str:
    b = report.bottleneck
    title = escape(bottleneck_summary(report))
    detail = escape(b.reason)
    extra = ""
    if b.found:
        util = f"{b.utilisation:.2%}" if b.utilisation is not None else "–"
        extra = (f"<br>kept values a median {_fmt(b.typical_gap_ratio)}× the rest (smallest {_fmt(b.gap_ratio)}×), "
                 f"clean in {b.clean_layers} of {b.plateau_length} layers, {util} of capacity used; "
                 f"type {escape(format_type(b.degree_counts))} (degree {escape(report.settings.degree_metric)})")
    return f'<div class="call{"" if b.found else " none"}"><b>{title}</b>{extra}<br><span class="dim">{detail}</span></div>'


def figure_images(report: ModelReport) -> tuple[list[tuple[str, str]], str | None]:
    """(caption, data URL) per panel, or ([], note) when matplotlib is missing."""
    from ..errors import MissingExtraError
    from .figures import panel_names, plot_panel, require_matplotlib

    try:
        require_matplotlib()
    except MissingExtraError as exc:
        return [], f"figures omitted: {exc.one_line()}; the heat map above needs no extra"
    captions = {"heatmap": "kept modes and energy share per degree", "spectra": "singular values by depth",
                "maps": "kept directions per frequency (bottleneck layers)",
                "profiles": "weight and activation profiles"}
    out = []
    for name in panel_names(report):
        fig = plot_panel(report, name)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=96, metadata={"Software": "cbn-inspect"})
        out.append((captions[name], "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()))
    return out, None


def report_fragment(report: ModelReport, figures: bool = False) -> str:
    """The report as an HTML block (no ``<html>`` around it): what a Jupyter cell shows."""
    data = report_to_dict(report)
    src = report.source
    parts = [f'<div class="cbn"><style>{STYLE}</style>',
             f"<h1>{escape(src.path)}</h1>",
             f'<div class="dim">{len(report.layers)} conv layers · {escape(src.format)} · order: '
             f"{escape(report.order_source)} · grid {escape(grid_summary(report))}"
             + (f" · {escape(src.architecture)}" if src.architecture else "") + "</div>",
             _summary(report)]
    for warning in report.warnings:
        parts.append(f'<div class="warn">warning: {escape(warning)}</div>')
    parts.append(f"<h2>Kept modes by layer and degree</h2>{heatmap_svg(degree_matrix(report, min_energy=math.inf))}")
    if figures:
        images, note = figure_images(report)
        parts.append("<h2>Figures</h2>")
        if note:
            parts.append(f'<p class="dim">{escape(note)}</p>')
        for caption, url in images:
            parts.append(f'<figure><img alt="{escape(caption)}" src="{url}"><figcaption class="dim">'
                         f"{escape(caption)}</figcaption></figure>")
    parts.append(f"<h2>Layers</h2>{layer_table(report, data)}")
    if report.skipped:
        items = "".join(f"<li>{escape(n)}: {escape(r)}</li>" for n, r in report.skipped)
        parts.append(f"<h2>Skipped tensors</h2><ul>{items}</ul>")
    parts.append(f"<h2>Settings</h2>{_settings_table(data['settings'])}")
    if src.metadata:
        parts.append(f"<h2>Checkpoint metadata</h2><pre>{escape(json.dumps(dict(src.metadata), indent=2, ensure_ascii=False))}</pre>")
    parts.append(f'<p class="dim">cbn-inspect {escape(__version__)}</p></div>')
    return "".join(parts)


def _flatten(prefix: str, value: Any):
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, value


def _settings_table(settings: Mapping[str, Any]) -> str:
    """Every setting that changes a result, one row each (``tolerance.rule``, ``bottleneck.min_gap``, ...)."""
    rows = "".join(f'<tr><td class="l">{escape(k)}</td><td class="l">{escape(json.dumps(v, ensure_ascii=False))}</td></tr>'
                   for k, v in _flatten("", settings))
    return f'<table class="settings"><tbody>{rows}</tbody></table>'


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title></head><body>{body}<script>{SORT_JS}</script></body></html>\n")


def report_html(report: ModelReport, figures: bool = True) -> str:
    """A whole self-contained page: the fragment, with figures, and the table sorting script."""
    return _page(f"cbn-inspect: {report.source.path}", report_fragment(report, figures=figures))


def audit_html(rows: Sequence[Any], title: str = "cbn-inspect audit") -> str:
    """An audit's overview page from its rows (:class:`AuditRow`): one line per model, failures listed."""
    from ..batch.summary import _common_folder, flatten_row

    common = _common_folder([r.item for r in rows])
    if common:
        title = f"{title}: {common}"

    head = ("<tr><th class=l>item</th><th>layers</th><th class=l>bottleneck</th><th>rank</th>"
            "<th class=l>type</th><th>strength</th><th class=l>profile</th><th class=l>status</th></tr>")
    body, failures = [], []
    for row in rows:
        flat = flatten_row(row)
        report = row.report or {}
        b = report.get("bottleneck") or {}
        found = bool(b.get("found"))
        util = [layer.get("utilisation") for layer in report.get("layers", [])]
        span = (b["start_index"], b["end_index"]) if found and b.get("start_index") is not None else None
        strength = flat["strength"]
        cells = [
            ("l", flat["item"][len(common):] if common and flat["item"].startswith(common) else flat["item"],
             flat["item"]),
            ("", _fmt(flat["layers"]), flat["layers"] or 0),
            ("l", f"{b.get('start')} → {b.get('end')}" if found else ("none" if row.ok else "–"), b.get("start_index") or -1),
            ("", _fmt(flat["rank"]) if found else "–", flat["rank"] if found else -1),
            ("l", flat["type"] or "–", flat["type"] or ""),
            ("", f"{strength:.2f} {flat['strength_label']}" if strength is not None else "–", strength if strength is not None else -1),
        ]
        tds = "".join(f'<td class="{c}" data-v="{escape(str(v))}">{escape(str(t))}</td>' for c, t, v in cells)
        status = "ok" if row.ok else (row.error_kind or "error")
        tds += f'<td class="l" data-v="0">{depth_sparkline(util, span)}</td><td class="l" data-v="{escape(status)}">{escape(status)}</td>'
        body.append(f'<tr class="{"" if row.ok else "fail"}">{tds}</tr>')
        if not row.ok:
            failures.append(f"<li><b>{escape(row.item)}</b>: {escape(row.error_kind or 'error')}: "
                            f"{escape(row.error_message or '')}</li>")
    ok = sum(r.ok for r in rows)
    parts = [f'<div class="cbn"><style>{STYLE}</style><h1>{escape(title)}</h1>',
             f'<div class="dim">{len(rows)} items: {ok} ok, {len(rows) - ok} failed · profile: share of capacity '
             f"kept per layer, log scale, bottleneck shaded · click a heading to sort</div>",
             f'<table class="sortable"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>']
    if failures:
        parts.append(f"<h2>Failures</h2><ul>{''.join(failures)}</ul>")
    parts.append(f'<p class="dim">cbn-inspect {escape(__version__)}</p></div>')
    return _page(title, "".join(parts))
