"""``cbn-inspect report SOURCE``: analyse one checkpoint, print the report, optionally write JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..errors import UsageError
from ..inspect import inspect_source
from ..loaders import parse_grid
from ..records import Settings, ToleranceRule
from ..report import TerminalReport, to_json
from ._app import Metric, Precision, Rule, app, guarded, stderr

ArchOption = Annotated[Optional[str], typer.Option("--arch", metavar="timm:NAME", help="Analyse the file's weights in this timm architecture (grids, strides and order traced; pretrained=False, nothing downloaded).")]
InputSizeOption = Annotated[Optional[str], typer.Option("--input-size", metavar="N|HxW|CxHxW", help="Input size for the trace (default: the model's pretrained_cfg; needed for whole modules and TorchScript).")]

DEFAULT_TOLERANCE = {"relative": 0.1, "absolute": 0.1, "gap": 10.0, "energy": 0.99}

EPILOG = """
**Examples**

* `cbn-inspect model.safetensors`: the report in the terminal.
* `cbn-inspect model.pt --grid 32 --json report.json`: every layer on a 32x32 grid, JSON to a file too.
* `cbn-inspect model.safetensors --json - | jq .bottleneck`: JSON only, on stdout.
* `cbn-inspect model.safetensors --tolerance gap --layers 'layer[2-3]'`: largest-gap rule, some layers.
* `cbn-inspect timm:resnet50`: a timm architecture (random weights), grids traced at its input size.
* `cbn-inspect weights.safetensors --arch timm:resnet50 --input-size 288`: a file's weights in that architecture.

Exit codes: 0 ok, 2 usage, 3 unreadable input, 4 no conv layers, 5 unsafe pickle refused, 6 analysis
error, 70 internal error.
"""


def build_settings(
    grid: str | None,
    tolerance: Rule,
    tol_value: float | None,
    degree: Metric,
    precision: Precision,
    fold_bn: bool,
    layers: str | None,
    spectra: bool,
    device: str,
    min_gap: float,
    max_utilisation: float,
    threads: int | None = None,
) -> Settings:
    """Validate the CLI's options before any work starts, and turn them into :class:`Settings`."""
    parsed_grid = None
    if grid is not None:
        try:
            parsed_grid = parse_grid(grid)
        except ValueError as exc:
            raise UsageError(f"--grid {grid!r}: use N (every axis) or HxW, e.g. 32 or 14x14") from exc
    value = DEFAULT_TOLERANCE[tolerance.value] if tol_value is None else tol_value
    if tolerance.value in ("relative", "absolute") and value < 0:
        raise UsageError(f"--tol-value must be >= 0 for the {tolerance.value} rule")
    if tolerance.value == "energy" and not 0 < value <= 1:
        raise UsageError("--tol-value must be in (0, 1] for the energy rule")
    if device != "cpu":
        import torch

        if not device.startswith("cuda") or not torch.cuda.is_available():
            raise UsageError(f"--device {device}: not available here (use cpu)")
    return Settings(
        tolerance=ToleranceRule(tolerance.value, float(value)),
        degree_metric=degree.value,
        grid=parsed_grid,
        precision=precision.value,
        fold_batchnorm=fold_bn,
        layer_filter=layers,
        keep_spectra=spectra,
        device=device,
        min_gap=min_gap,
        max_utilisation=max_utilisation,
        threads=threads,
    )


@app.command("report", epilog=EPILOG)
@guarded
def report_command(
    source: Annotated[str, typer.Argument(help="Checkpoint file (.safetensors or its .index.json, .pt/.pth/.bin/.ckpt, TorchScript, .onnx), a model folder, or timm:NAME.")],
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="FILE", help="Write the JSON report to FILE; `-` for stdout (then nothing else goes there).")] = None,
    spectra: Annotated[bool, typer.Option("--spectra", help="Include every layer's per-frequency singular values in the JSON.")] = False,
    layers: Annotated[Optional[str], typer.Option("--layers", metavar="REGEX", help="Analyse only layers whose name matches REGEX.")] = None,
    grid: Annotated[Optional[str], typer.Option("--grid", metavar="N|HxW", help="Input grid of layers whose grid the checkpoint does not declare (default 32 per axis).")] = None,
    tolerance: Annotated[Rule, typer.Option("--tolerance", help="Rule that decides which singular values are kept.")] = Rule.relative,
    tol_value: Annotated[Optional[float], typer.Option("--tol-value", help="Parameter of the rule: relative 0.1 (of the layer's largest), absolute 0.1, gap 10 (smallest ratio that counts as a gap), energy 0.99.")] = None,
    degree: Annotated[Metric, typer.Option("--degree", help="How frequency degree combines axes: l1 (sum) or linf (max).")] = Metric.l1,
    precision: Annotated[Precision, typer.Option("--precision", help="Arithmetic of the SVDs.")] = Precision.float32,
    fold_bn: Annotated[bool, typer.Option("--fold-bn/--no-fold-bn", help="Fold a BatchNorm that follows a conv into it.")] = True,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow pickles that need more than tensors. Runs code from the file: only for files you trust.")] = False,
    key: Annotated[Optional[str], typer.Option("--key", help="Entry of a checkpoint dict holding the weights, e.g. state_dict_ema.")] = None,
    arch: ArchOption = None,
    input_size: InputSizeOption = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for the analysis (default: the cores available); each runs single-threaded kernels.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, or cuda where a GPU is present.")] = "cpu",
    min_gap: Annotated[float, typer.Option("--min-gap", help="Smallest kept / largest discarded value needed inside a bottleneck.")] = 10.0,
    max_utilisation: Annotated[float, typer.Option("--max-utilisation", help="Largest share of capacity a bottleneck layer may use.")] = 0.5,
) -> None:
    """Analyse one checkpoint: per-frequency spectra of every conv layer and the bottleneck they form."""
    settings = build_settings(grid, tolerance, tol_value, degree, precision, fold_bn, layers, spectra,
                              device, min_gap, max_utilisation, threads=threads)
    report = inspect_source(source, settings, trust_pickle=trust_pickle, key=key, arch=arch,
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
        stderr.print(f"wrote {json_out}", style="dim")
