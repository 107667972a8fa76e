"""``cbn-inspect layers SOURCE``: list the conv layers a source holds, without computing any spectrum.

Fast by construction: it only loads (safetensors headers are read, never the weights; BatchNorm is not
paired, since pairing reads its vectors). One row per layer: name, kind, stored shape, groups, stride,
grid (with its source), dtype and notes; ``--json -`` gives the same rows as JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .._version import SCHEMA_VERSION, __version__
from ..errors import CbnError, UsageError
from ..report._text import clean, safe
from ._app import app, guarded
from ._app import OnnxBranch
from ._options import ArchOption, InputSizeOption, KeyOption, OnnxBranchOption, TrustCodeOption

if TYPE_CHECKING:
    from ..records import ConvLayer, LoadedModel


GRID_MARK = {"metadata": "m", "flag": "f"}  # short marks keep the table within 80 columns; explained below it


def _axes(values) -> str:
    return "×".join(str(v) for v in values) if values else "–"


def layer_row(layer: ConvLayer) -> dict:
    """The JSON row of one layer (what the table shows, unformatted)."""
    return {
        "index": layer.order,
        "name": layer.name,
        "kind": layer.kind,
        "shape": list(layer.shape),
        "groups": layer.groups,
        "stride": list(layer.stride) if layer.stride else None,
        "dilation": list(layer.dilation) if layer.dilation else None,
        "padding_mode": layer.padding_mode,
        "grid": list(layer.grid) if layer.grid else None,
        "grid_source": layer.grid_source if layer.grid else "default",
        "geometry_source": layer.geometry_source,
        "dtype": layer.dtype,
        "notes": list(layer.notes),
        "flags": list(layer.flags),
        "branch": layer.branch,
    }


def listing(loaded: LoadedModel) -> dict:
    """The ``layers --json`` document; ``schema_version`` and ``tool`` as in the report."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "cbn-inspect", "version": __version__},
        "source": {"path": loaded.source.path, "format": loaded.source.format},
        "order_source": loaded.order_source,
        "order_confidence": loaded.confidence,
        "layers": [layer_row(layer) for layer in loaded.layers],
        "skipped": [{"name": n, "reason": r} for n, r in loaded.skipped],
        "notes": list(loaded.source.notes),
    }


def _table(loaded: LoadedModel, width: int = 80) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True, show_edge=False)
    rows = []
    for layer in loaded.layers:
        grid = _axes(layer.grid) if layer.grid else "default"
        if layer.grid and layer.grid_source != "trace":
            grid += f" ({GRID_MARK.get(layer.grid_source, layer.grid_source)})"
        rows.append((str(layer.order), clean(layer.name), layer.kind.replace("conv_transpose", "convT"),
                     _axes(layer.shape), str(layer.groups),
                     _axes(layer.stride or (1,) * layer.ndim) + ("" if layer.geometry_source != "assumed" else "?"), grid,
                     clean(layer.dtype) + ("*" if layer.notes else "")))
    columns = ("#", "layer", "kind", "shape", "groups", "stride", "grid", "dtype")
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    room = max(12, width - (sum(widths) - widths[1]) - 2 * (len(columns) - 1) - 1)
    rows = [r[:1] + (r[1] if len(r[1]) <= room else "…" + r[1][-(room - 1):],) + r[2:] for r in rows]
    widths[1] = max([5] + [len(r[1]) for r in rows])
    for column, size in zip(columns, widths):
        table.add_column(column, no_wrap=True, min_width=size,
                         justify="right" if column in ("#", "groups") else "left")
    for row in rows:
        table.add_row(*(safe(cell) for cell in row))
    return table


@app.command("layers")
@guarded
def layers_command(
    source: Annotated[str, typer.Argument(help="Checkpoint file, model folder, or timm:NAME (as for report).")],
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="FILE", help="Write the listing as JSON to FILE; `-` for stdout.")] = None,
    arch: ArchOption = None,
    input_size: InputSizeOption = None,
    trust_code: TrustCodeOption = False,
    key: KeyOption = None,
    onnx_branch: OnnxBranchOption = OnnxBranch.then,
) -> None:
    """List the conv layers found (name, kind, shape, groups, stride, grid, dtype, notes); no spectra."""
    from .._parse import parse_input_size

    try:
        parse_input_size(input_size)  # a usage error before anything heavy is imported
        from ..loaders import load

        loaded = load(source, trust_code=trust_code, key=key, fold_batchnorm=False, arch=arch,
                      input_size=input_size, onnx_branch=onnx_branch.value)
    except CbnError as error:
        if json_out == "-":
            from ..report.json_report import error_to_dict

            sys.stdout.write(json.dumps(error_to_dict(error), indent=2) + "\n")
        raise
    data = listing(loaded)
    if json_out == "-":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return
    console = Console(highlight=False)
    console.print(safe(f"{loaded.source.path} ({loaded.source.format}): {len(loaded.layers)} conv layers, "
                       f"order: {loaded.order_source} ({loaded.confidence} confidence)"))
    console.print(_table(loaded, console.width))
    marks = {layer.grid_source for layer in loaded.layers if layer.grid and layer.grid_source in GRID_MARK}
    if marks:
        console.print("grid: " + ", ".join(f"({GRID_MARK[m]}) from {'the file' if m == 'metadata' else '--grid'}"
                                           for m in sorted(marks)) + "; unmarked: traced", markup=False, style="dim")
    if any(layer.notes for layer in loaded.layers):
        console.print("* notes:", markup=False, style="dim")
    for layer in loaded.layers:
        for note in layer.notes:
            console.print(safe(f"  {layer.order} {layer.name}: {note}", style="dim"))
    for name, reason in loaded.skipped:
        console.print(safe(f"skipped {name}: {reason}", style="dim"))
    for note in loaded.source.notes:
        console.print(safe(f"note: {note}", style="dim"))
    if json_out:
        try:
            with open(json_out, "w") as handle:
                handle.write(json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            raise UsageError(f"--json {json_out}: cannot write ({exc.strerror or exc})") from exc
