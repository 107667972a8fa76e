"""``cbn-inspect audit SOURCE...``: many checkpoints, in parallel or on Dask, into one table and one JSONL file.

A thin layer over :func:`cbn_inspect.batch.run_audit`: the analysis options are the report command's,
validated by the same :func:`build_settings`; progress and per-item failures go to stderr, the summary table
to stdout. See docs/audit.md.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from ..errors import SOME_ITEMS_FAILED_EXIT, UsageError
from ..report._text import safe
from ._app import Metric, Precision, Rule, app, guarded, stderr, warn
from ._options import (
    DegreeOption, DeviceOption, FoldBnOption, GridOption, KeyOption, LayersOption, MaxUtilisationOption,
    MaxLayersOption, MaxMemoryOption, MemoryBudgetOption,
    MinGapOption, PrecisionOption, SpectraOption, ExactValuesOption, CountsRouteOption, TolValueOption, ToleranceOption, TrustCodeOption,
    build_settings,
    ActivationSideOption, ActivationsOption, BatchSizeOption, CenterOption, InterpolationOption, MaxInputsOption,
    MeanOption, SkipNonfiniteOption, SeedOption, StdOption, build_activation_settings,
)

EPILOG = f"""
**Sources**: checkpoint files; folders (searched recursively; every file a reader takes, recognised by its
content, not its name: safetensors and their indexes, PyTorch, TorchScript, ONNX; the rest is listed as skipped); `timm:PATTERN` (`timm:resnet*`); manifests (`@FILE`, or a .txt/.lst file:
one source per line).

**Examples**

* `cbn-inspect audit zoo/ --out audit.jsonl`: every checkpoint under zoo/, one JSON line each; re-run to resume.
* `cbn-inspect audit zoo/ --out audit.jsonl --csv audit.csv --jobs 8 --timeout 600`
* `cbn-inspect audit zoo/ timm:resnet* --html zoo.html`: an HTML overview of the zoo, one row per model.
* `cbn-inspect audit @models.txt --out a.jsonl --executor dask --scheduler tcp://10.0.0.5:8786`

Exit codes: 0 every item ok, {SOME_ITEMS_FAILED_EXIT} some items failed (their error rows are written), 2 usage,
70 internal error.
"""


class ExecutorKind(str, Enum):
    local = "local"
    dask = "dask"


class _RichProgress:
    """A progress bar with ETA on stderr; failed items are printed above it as they happen."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
        )
        self.task = None

    def start(self, total: int, reused: int) -> None:
        if reused:
            self.console.print(f"resuming: {reused} of {total} items already done", style="dim")
        self.bar.start()
        self.task = self.bar.add_task("audit", total=total - reused, failed=0)

    def advance(self, row) -> None:
        if not row.ok:
            self.console.print(safe(f"{row.item}: {row.error_kind}: {row.error_message}", style="red"),
                               highlight=False)
            self.bar.tasks[0].fields["failed"] += 1
        self.bar.advance(self.task)

    def stop(self) -> None:
        self.bar.stop()


@app.command("audit", epilog=EPILOG)
@guarded
def audit_command(
    sources: Annotated[list[str], typer.Argument(help="Files, folders, timm:PATTERN, @manifest files.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE.jsonl", help="One JSON line per item, written as each finishes; re-running with the same file resumes. `-`: the lines go to stdout as they finish (the summary table to stderr; no resume).")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", metavar="FILE", help="A CSV of the summary columns, for spreadsheets.")] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="A self-contained HTML overview: one row per model (call, rank, strength, profile picture), failures listed.")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Worker processes (default: the machine's cores).")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", help="Per-item time limit; the worker is killed and the item becomes an error row.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute items the --out file already holds.")] = False,
    executor: Annotated[ExecutorKind, typer.Option("--executor", help="local worker processes, or an existing Dask cluster.")] = ExecutorKind.local,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (with --executor dask).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no table: only errors on stderr and the exit code.")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads per worker (default: cores / jobs).")] = None,
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
    device: DeviceOption = "cpu",
    min_gap: MinGapOption = 10.0,
    max_utilisation: MaxUtilisationOption = 0.5,
    memory_budget: MemoryBudgetOption = 256,
    max_memory: MaxMemoryOption = None,
    max_layers: MaxLayersOption = 10_000,
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
) -> None:
    """Audit many checkpoints: one row each (JSONL/CSV), a summary table, resumable, local or on Dask."""
    from ..batch.sources import expand_sources  # light: usage errors about the sources before torch is imported

    settings = build_settings(grid, tolerance, tol_value, degree, precision, fold_bn, layers, spectra,
                              device, min_gap, max_utilisation, memory_budget=memory_budget,
                              max_memory=max_memory, max_layers=max_layers, exact_values=exact_values, counts_route=counts_route)
    activation_settings = build_activation_settings(activations, activation_side, center, batch_size, max_inputs,
                                                    seed, mean, std, interpolation, device,
                                                    skip_nonfinite=skip_nonfinite)
    if spectra and out is None:
        warn("--spectra does nothing without --out: the spectra only go into the JSONL rows")
    skipped: list[tuple[str, str]] = []
    items = expand_sources(sources, skipped=skipped)
    if skipped and not quiet:
        stderr.print(f"skipped {len(skipped)} file(s) that no reader takes:", markup=False, style="dim")
        for path, why in skipped:
            stderr.print(f"  {path}: {why}", markup=False, highlight=False, style="dim")
    if not items:
        raise UsageError("no checkpoints found in the sources given",
                         hint="folder files are recognised by content: safetensors, PyTorch, TorchScript, ONNX")
    from ..batch import AuditSummary, run_audit, write_csv

    progress = None if quiet else _RichProgress(stderr)
    try:
        result = run_audit(settings=settings, items=items, out=out, force=force, executor=executor.value,
                           jobs=jobs, threads=threads, timeout=timeout, scheduler=scheduler,
                           trust_code=trust_code, key=key, progress=progress, activations=activation_settings)
    finally:
        if progress is not None:
            progress.stop()
    if quiet:
        for row in result.failed:
            stderr.print(safe(f"{row.item}: {row.error_kind}: {row.error_message}"), highlight=False)
    if csv_out is not None:
        write_csv(csv_out, result.rows)
    if html_out is not None:
        from ..report.html import audit_html

        try:
            html_out.write_text(audit_html(result.rows), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--html {html_out}: cannot write ({exc.strerror or exc})") from exc
    if not quiet:
        table_console = stderr if str(out) == "-" else Console(highlight=False)  # stdout holds the JSONL
        table_console.print(AuditSummary(result.rows, reused=result.reused, seconds=result.seconds))
        if result.repaired_lines:
            stderr.print(safe(f"{out}: {result.repaired_lines} line(s) dropped on resume (partial, invalid or "
                              "recomputed)", style="dim"))
    if result.exit_code:
        raise typer.Exit(result.exit_code)
