"""``cbn-inspect report SOURCE``: analyse one checkpoint, print the report, optionally write JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..errors import CbnError, UsageError
from ._app import Metric, OnnxBranch, Precision, Rule, app, guarded, stderr, warn
from ._progress import LayerProgress, batch_progress
from ..report._text import safe
from ._options import (
    ArchOption, InputSizeOption, OnnxBranchOption,
    DegreeOption, DeviceOption, FoldBnOption, GridOption, KeyOption, LayersOption, MaxUtilisationOption,
    MaxLayersOption, MaxMemoryOption, MemoryBudgetOption,
    MinGapOption, PrecisionOption, SpectraOption, ExactValuesOption, CountsRouteOption, TolValueOption, ToleranceOption, TrustCodeOption,
    build_settings,
    ActivationSideOption, ActivationsOption, BatchSizeOption, CenterOption, InterpolationOption, MaxInputsOption,
    MeanOption, SkipNonfiniteOption, QuietOption, SeedOption, StdOption, build_activation_settings,
)

EPILOG = """
**Examples**

* `cbn-inspect model.safetensors`: the report in the terminal.
* `cbn-inspect model.pt --grid 32 --json report.json`: every layer on a 32x32 grid, JSON to a file too.
* `cbn-inspect model.safetensors --json - | jq .bottleneck`: JSON only, on stdout.
* `cbn-inspect model.safetensors --tolerance gap --layers 'layer[2-3]'`: largest-gap rule, some layers.
* `cbn-inspect timm:resnet50`: a timm architecture (random weights), grids traced at its input size.
* `cbn-inspect weights.safetensors --arch timm:resnet50 --input-size 288`: a file's weights in that architecture.
* `cbn-inspect model.safetensors --plot cbn.png --html cbn.html`: the figures, and a self-contained HTML report.
* `cbn-inspect timm:resnet18 --activations samples`: also run the model on bundled photographs and profile
  every conv layer's input feature map, weights and activations side by side.
* `cbn-inspect model.onnx --activations images/ --center --json -`: an ONNX model on a folder of images.

Exit codes: 0 ok, 2 usage, 3 unreadable input, 4 no conv layers, 5 unsafe content refused, 6 analysis
error, 7 resource limit (--max-memory, --max-layers, --timeout), 10 an optional extra is missing (--plot
needs matplotlib), 11 --activations without an executable architecture, 70 internal error (`--debug` shows its
traceback). With `--json -`
a failure also writes a JSON object `{"error": {"kind", "message", "hint", "exit_code"}}` to stdout.
"""


def _report(source, *, json_out, spectra, plot, html, quiet, settings, activation_settings, trust_code, key, arch,
            input_size, onnx_branch, timeout):
    """Load and analyse (with activations, pictures and the time budget as asked) and return the report."""
    if spectra and not json_out:
        warn("--spectra does nothing without --json: the spectra only go into the JSON report")
    if plot is not None:  # fail before the analysis, not after it
        from .._parse import figure_format

        figure_format(plot)  # a usage error before anything heavy is imported
        from ..report.figures import require_matplotlib

        require_matplotlib()
    from .._limits import hard_deadline
    from ..inspect import inspect_source

    pictures = plot is not None or html is not None
    # The figures colour singular values by degree, so they need the spectra; the JSON gets them only with --spectra.
    deadline = hard_deadline(timeout, source)
    try:
        with LayerProgress(stderr, enabled=not quiet) as progress, \
                batch_progress(enabled=activation_settings is not None and not quiet) as batches:
            report = inspect_source(source, replace(settings, keep_spectra=True) if pictures else settings,
                                    trust_code=trust_code, key=key, arch=arch, input_size=input_size,
                                    onnx_branch=onnx_branch, progress=progress,
                                    activations=activation_settings, activation_progress=batches)
    finally:
        if deadline is not None:
            deadline.cancel()
    if pictures:
        _write_pictures(report, plot, html)
        report = replace(report, settings=settings) if not spectra else report
    return report


@app.command("report", epilog=EPILOG)
@guarded
def report_command(
    source: Annotated[str, typer.Argument(help="Checkpoint file (.safetensors or its .index.json, .pt/.pth/.bin/.ckpt, TorchScript, .onnx), a model folder, or timm:NAME.")],
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="FILE", help="Write the JSON report to FILE; `-` for stdout (then nothing else goes there).")] = None,
    spectra: SpectraOption = False,
    exact_values: ExactValuesOption = False,
    counts_route: CountsRouteOption = False,
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
    onnx_branch: OnnxBranchOption = OnnxBranch.then,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for the analysis (default: the cores available); each runs single-threaded kernels.")] = None,
    device: DeviceOption = "cpu",
    min_gap: MinGapOption = 10.0,
    max_utilisation: MaxUtilisationOption = 0.5,
    memory_budget: MemoryBudgetOption = 256,
    plot: Annotated[Optional[Path], typer.Option("--plot", metavar="FILE", help="Write the figures to FILE: .png, .svg or .pdf (needs the plot extra: pip install 'cbn-inspect[plot]').")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="Write a self-contained HTML report (summary, sortable layer table, figures, settings) to FILE.")] = None,
    max_memory: MaxMemoryOption = None,
    max_layers: MaxLayersOption = 10_000,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", help="Time budget for this source (load and analysis); past it the run stops with exit 7. Checked between layers, and a step that overruns it by 5 s ends the process.")] = None,
    activations: ActivationsOption = None,
    activation_side: ActivationSideOption = "input",
    center: CenterOption = False,
    batch_size: BatchSizeOption = 32,
    max_inputs: MaxInputsOption = None,
    skip_nonfinite: SkipNonfiniteOption = False,
    seed: SeedOption = 0,
    mean: MeanOption = None,
    std: StdOption = None,
    interpolation: InterpolationOption = None,
    quiet: QuietOption = False,
    full_degrees: Annotated[bool, typer.Option("--full-degrees", help="List every layer's kept degrees in full under the table (folded into one line by default; the JSON always has them).")] = False,
) -> None:
    """Analyse one checkpoint: per-frequency spectra of every conv layer and the bottleneck they form."""
    from .._parse import parse_input_size

    try:
        parse_input_size(input_size)  # usage errors before anything heavy is imported
        settings = build_settings(grid, tolerance, tol_value, degree, precision, fold_bn, layers, spectra,
                                  device, min_gap, max_utilisation, threads=threads, memory_budget=memory_budget,
                                  max_memory=max_memory, max_layers=max_layers, timeout=timeout,
                                  exact_values=exact_values or json_out is None,
                                  counts_route=counts_route)
        activation_settings = build_activation_settings(activations, activation_side, center, batch_size,
                                                        max_inputs, seed, mean, std, interpolation, device,
                                                        skip_nonfinite=skip_nonfinite)
        report = _report(source, json_out=json_out, spectra=spectra, plot=plot, html=html, quiet=quiet,
                         settings=settings, activation_settings=activation_settings, trust_code=trust_code, key=key,
                         arch=arch, input_size=input_size, onnx_branch=onnx_branch.value, timeout=timeout)
    except CbnError as error:
        if json_out == "-":  # a script reading stdout gets JSON either way
            from ..report.json_report import error_to_dict

            sys.stdout.write(json.dumps(error_to_dict(error), indent=2) + "\n")
        raise
    from ..report import TerminalReport, to_json

    if json_out == "-":
        sys.stdout.write(to_json(report) + "\n")
        return
    Console(highlight=False).print(TerminalReport(report, full_degrees=full_degrees))
    if json_out:
        _write(json_out, to_json(report) + "\n", "--json")


def _write(path: str | Path, text: str, option: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write ({exc.strerror or exc})") from exc
    stderr.print(safe(f"wrote {path}", style="dim"))


def _write_pictures(report, plot: Path | None, html: Path | None) -> None:
    if plot is not None:
        from ..report.figures import save_report_figure

        save_report_figure(report, plot)
        stderr.print(safe(f"wrote {plot}", style="dim"))
    if html is not None:
        from ..report.html import report_html

        _write(html, report_html(report), "--html")
