"""``cbn-inspect track SOURCES...``: the checkpoints of one training run, in step order, layer by layer.

A thin layer over :func:`cbn_inspect.series.run_track` (steps from the files or their names, analysis by the
audit's workers, ``--out`` the audit's resumable JSONL store); the terminal view, JSON and figure are the
series reporters'.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ..errors import SOME_ITEMS_FAILED_EXIT, MissingExtraError, UsageError
from ._app import Metric, Precision, Rule, app, guarded, stderr
from ._options import (
    DegreeOption, DeviceOption, ExactValuesOption, CountsRouteOption, FoldBnOption, GridOption, KeyOption, LayersOption, MaxUtilisationOption,
    MemoryBudgetOption, MinGapOption, PrecisionOption, TolValueOption, ToleranceOption, TrustCodeOption,
    build_settings,
)

EPILOG = f"""
**Steps** come from, in this order: a checkpoint's `global_step` (Lightning; else `step`, else `epoch`) or a
safetensors `__metadata__` key `global_step`/`step`/`iteration`; else the file name (`step_0400`,
`epoch=3-step=1200`, `checkpoint-500`, or its only number). Every file must give its step the same way.

**Examples**

* `cbn-inspect track sample_checkpoints/cbn_demo_1d_run/`: the bundled training run.
* `cbn-inspect track 'runs/exp1/*.ckpt' --out exp1.jsonl --plot exp1.png`: resumable; a figure too.
* `cbn-inspect track run/ --json - | jq .first_found`: the whole series as JSON.
* `cbn-inspect track monitor.jsonl`: the records a `cbn_inspect.Monitor` wrote during training.

Exit codes: 0 ok, {SOME_ITEMS_FAILED_EXIT} some checkpoints failed (shown as errors), 9 the checkpoints cannot
be put in step order (a step missing, mixed or repeated), 2 usage, 70 internal error.
"""


class Order(str, Enum):
    auto = "auto"
    file = "file"
    name = "name"
    given = "given"


class _Progress:
    def __init__(self, console: Console) -> None:
        self.console, self.total, self.done = console, 0, 0

    def start(self, total: int, reused: int) -> None:
        self.total, self.done = total, reused
        if reused:
            self.console.print(f"resuming: {reused} of {total} checkpoints already analysed", style="dim")

    def advance(self, row) -> None:
        self.done += 1
        status = "ok" if row.ok else f"{row.error_kind}: {row.error_message}"
        self.console.print(f"[{self.done}/{self.total}] {Path(row.item).name}: {status}", markup=False,
                           highlight=False, style="dim" if row.ok else "red")


@app.command("track", epilog=EPILOG)
@guarded
def track_command(
    sources: Annotated[list[str], typer.Argument(help="Checkpoints of one run: a folder, a glob, files, a manifest, or a Monitor .jsonl file.", show_default=False)],
    order: Annotated[Order, typer.Option("--order", help="Where steps come from: auto (the file, else the name), file, name, or given (the order of the arguments).")] = Order.auto,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE.jsonl", help="The audit's JSONL store: one line per checkpoint; re-running (with more checkpoints) analyses only what is new.")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="FILE", help="Write the series as JSON to FILE; `-` for stdout (then nothing else goes there).")] = None,
    reports: Annotated[bool, typer.Option("--reports", help="In the JSON, each checkpoint's whole report too.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", metavar="FILE", help="Draw the series (counts per layer and strength over steps) to FILE (.png, .svg, .pdf); needs matplotlib.")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Worker processes (default: the machine's cores).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads per worker (default: cores / jobs).")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", help="Per-checkpoint time limit.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute checkpoints the --out file already holds.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines on stderr.")] = False,
    layers: LayersOption = None,
    grid: GridOption = None,
    tolerance: ToleranceOption = Rule.relative,
    tol_value: TolValueOption = None,
    degree: DegreeOption = Metric.l1,
    precision: PrecisionOption = Precision.float32,
    fold_bn: FoldBnOption = True,
    exact_values: ExactValuesOption = False,
    counts_route: CountsRouteOption = False,
    trust_code: TrustCodeOption = False,
    key: KeyOption = None,
    device: DeviceOption = "cpu",
    min_gap: MinGapOption = 10.0,
    max_utilisation: MaxUtilisationOption = 0.5,
    memory_budget: MemoryBudgetOption = 256,
) -> None:
    """Follow the bottleneck through the checkpoints of one training run, in step order."""
    from ..report.series_json import dumps, series_to_dict
    from ..report.series_terminal import SeriesView
    from ..series import run_track

    settings = build_settings(grid, tolerance, tol_value, degree, precision, fold_bn, layers, False,
                              device, min_gap, max_utilisation, memory_budget=memory_budget, exact_values=exact_values, counts_route=counts_route)
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError(f"--plot {plot}: use a .png, .svg or .pdf file name")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401  (checked before any analysis starts)
        except ImportError:
            raise MissingExtraError("--plot needs matplotlib", hint="pip install 'cbn-inspect[plot]'") from None
    series = run_track(sources, settings, order=order.value, out=out, force=force, jobs=jobs, threads=threads,
                       timeout=timeout, trust_code=trust_code, key=key,
                       progress=None if quiet else _Progress(stderr))
    text = dumps(series_to_dict(series, include_reports=reports)) + "\n" if json_out else None
    if json_out == "-":
        sys.stdout.write(text)
    else:
        Console(highlight=False).print(SeriesView(series))
        if json_out:
            _write(json_out, text)
    if plot is not None:
        from ..report.series_figures import plot_series

        try:
            plot_series(series, plot)
        except OSError as exc:
            raise UsageError(f"--plot {plot}: cannot write ({exc.strerror or exc})") from exc
        stderr.print(f"wrote {plot}", style="dim")
    if series.failed:
        raise typer.Exit(SOME_ITEMS_FAILED_EXIT)


def _write(path: str, text: str) -> None:
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise UsageError(f"--json {path}: cannot write ({exc.strerror or exc})") from exc
    stderr.print(f"wrote {path}", style="dim")
