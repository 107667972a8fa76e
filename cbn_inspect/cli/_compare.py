"""``cbn-inspect compare A B``: two checkpoints (or two JSON reports), layer by layer, paired by name.

Each side is analysed with the same settings (or read from a ``--json`` report written earlier); the
comparison itself is :func:`cbn_inspect.series.compare_reports`, shown by the comparison reporters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import typer
from rich.console import Console

from ..errors import UnreadableInputError, UsageError
from ._app import Metric, Precision, Rule, app, guarded, stderr
from ._options import (
    ArchOption, DegreeOption, DeviceOption, FoldBnOption, GridOption, InputSizeOption, KeyOption, LayersOption,
    MaxUtilisationOption, MemoryBudgetOption, MinGapOption, PrecisionOption, TolValueOption, ToleranceOption,
    TrustCodeOption, build_settings,
)

EPILOG = """
**Examples**

* `cbn-inspect compare sample_checkpoints/cbn_demo_untrained.safetensors sample_checkpoints/cbn_demo.safetensors`
* `cbn-inspect compare before.pt after_pruning.pt --json diff.json`
* `cbn-inspect compare a.json b.json`: two reports written earlier by `cbn-inspect X --json a.json`.

A layer counts as changed when its mode count or kept degrees differ, or its spectral norm or gap differ by
more than `--rtol` (relative). Exit codes: 0 ok (changed or not), 2 usage, 3 unreadable input, 4 no conv
layers, 5 unsafe pickle refused, 6 analysis error, 70 internal error.
"""


def read_report_file(path: Path) -> Mapping[str, Any] | None:
    """A JSON report written by ``cbn-inspect X --json FILE``; None when ``path`` is not one (a checkpoint)."""
    if path.suffix.lower() != ".json" or path.name.endswith(".index.json") or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UnreadableInputError(f"{path}: not a JSON report ({exc})") from exc
    if not isinstance(data, dict) or "layers" not in data or "bottleneck" not in data:
        raise UnreadableInputError(f"{path}: a JSON file, but not a cbn-inspect report (no layers/bottleneck)")
    return data


@app.command("compare", epilog=EPILOG)
@guarded
def compare_command(
    a: Annotated[str, typer.Argument(help="The first checkpoint (or JSON report).", show_default=False)],
    b: Annotated[str, typer.Argument(help="The second checkpoint (or JSON report).", show_default=False)],
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="FILE", help="Write the comparison as JSON to FILE; `-` for stdout.")] = None,
    rtol: Annotated[float, typer.Option("--rtol", min=0.0, help="Relative change of spectral norm or gap that counts as a change (the reports keep 6 significant digits).")] = 1e-6,
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
    device: DeviceOption = "cpu",
    min_gap: MinGapOption = 10.0,
    max_utilisation: MaxUtilisationOption = 0.5,
    memory_budget: MemoryBudgetOption = 256,
) -> None:
    """Compare two checkpoints layer by layer: what changed (count, kept degrees, spectral norm, gap), and
    the bottleneck of each."""
    from ..inspect import inspect_source
    from ..report.json_report import report_to_dict
    from ..report.series_json import comparison_to_dict, dumps
    from ..report.series_terminal import ComparisonView
    from ..series import compare_reports

    settings = build_settings(grid, tolerance, tol_value, degree, precision, fold_bn, layers, False,
                              device, min_gap, max_utilisation, memory_budget=memory_budget)
    sides = []
    for source in (a, b):
        report = read_report_file(Path(source))
        if report is None:
            report = report_to_dict(inspect_source(source, settings, trust_code=trust_code, key=key, arch=arch,
                                                   input_size=input_size))
        sides.append(report)
    comparison = compare_reports(sides[0], sides[1], rtol=rtol)
    if json_out == "-":
        sys.stdout.write(dumps(comparison_to_dict(comparison)) + "\n")
        return
    Console(highlight=False).print(ComparisonView(comparison))
    if json_out:
        try:
            Path(json_out).write_text(dumps(comparison_to_dict(comparison)) + "\n")
        except OSError as exc:
            raise UsageError(f"--json {json_out}: cannot write ({exc.strerror or exc})") from exc
        stderr.print(f"wrote {json_out}", style="dim")
