"""``cbn-inspect report SOURCE``: analyse one checkpoint, print the report, optionally write JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..errors import UsageError
from ..inspect import inspect_source
from ..report import TerminalReport, to_json
from ..report._text import safe
from ._app import Metric, Precision, Rule, app, guarded, stderr
from ._options import (
    ArchOption, InputSizeOption,
    DegreeOption, DeviceOption, FoldBnOption, GridOption, KeyOption, LayersOption, MaxUtilisationOption,
    MemoryBudgetOption,
    MinGapOption, PrecisionOption, SpectraOption, TolValueOption, ToleranceOption, TrustCodeOption,
    build_settings,
)

EPILOG = """
**Examples**

* `cbn-inspect model.safetensors`: the report in the terminal.
* `cbn-inspect model.pt --grid 32 --json report.json`: every layer on a 32x32 grid, JSON to a file too.
* `cbn-inspect model.safetensors --json - | jq .bottleneck`: JSON only, on stdout.
* `cbn-inspect model.safetensors --tolerance gap --layers 'layer[2-3]'`: largest-gap rule, some layers.
* `cbn-inspect timm:resnet50`: a timm architecture (random weights), grids traced at its input size.
* `cbn-inspect weights.safetensors --arch timm:resnet50 --input-size 288`: a file's weights in that architecture.

Exit codes: 0 ok, 2 usage, 3 unreadable input, 4 no conv layers, 5 unsafe pickle refused, 6 analysis
error, 7 out of memory, 70 internal error (`--debug` shows its traceback).
"""


@app.command("report", epilog=EPILOG)
@guarded
def report_command(
    source: Annotated[str, typer.Argument(help="Checkpoint file (.safetensors or its .index.json, .pt/.pth/.bin/.ckpt, TorchScript, .onnx), a model folder, or timm:NAME.")],
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="FILE", help="Write the JSON report to FILE; `-` for stdout (then nothing else goes there).")] = None,
    spectra: SpectraOption = False,
    layers: LayersOption = None,
    grid: GridOption = None,
    tolerance: ToleranceOption = Rule.relative,
    tol_value: TolValueOption = None,
    degree: DegreeOption = Metric.l1,
    precision: PrecisionOption = Precision.float32,
    fold_bn: FoldBnOption = True,
    trust_code: TrustCodeOption = False,
    key: KeyOption = None,
    arch: ArchOption = None,
    input_size: InputSizeOption = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for the analysis (default: the cores available); each runs single-threaded kernels.")] = None,
    device: DeviceOption = "cpu",
    min_gap: MinGapOption = 10.0,
    max_utilisation: MaxUtilisationOption = 0.5,
    memory_budget: MemoryBudgetOption = 256,
) -> None:
    """Analyse one checkpoint: per-frequency spectra of every conv layer and the bottleneck they form."""
    settings = build_settings(grid, tolerance, tol_value, degree, precision, fold_bn, layers, spectra,
                              device, min_gap, max_utilisation, threads=threads, memory_budget=memory_budget)
    report = inspect_source(source, settings, trust_code=trust_code, key=key, arch=arch,
                            input_size=input_size)
    if json_out == "-":
        sys.stdout.write(to_json(report) + "\n")
        return
    Console(highlight=False).print(TerminalReport(report))
    if json_out:
        try:
            Path(json_out).write_text(to_json(report) + "\n")
        except OSError as exc:
            raise UsageError(f"--json {json_out}: cannot write ({exc.strerror or exc})") from exc
        stderr.print(safe(f"wrote {json_out}", style="dim"))
