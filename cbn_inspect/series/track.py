"""``track``: checkpoints of one training run -> a :class:`Series`, through the audit's workers and store.

``run_track`` = expand the sources (folders, globs, manifests, as ``audit`` does) + put them in step order
(:mod:`.steps`) + analyse each once with :func:`cbn_inspect.batch.run_audit` (parallel worker processes; with
``out`` a resumable JSONL file, so a re-run, or a run with more checkpoints, analyses only what is new) +
:func:`.summary.build_series`. A ``.jsonl`` file written by :class:`cbn_inspect.Monitor` is a series already:
its lines are reports with a ``step``, and nothing is analysed again.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Sequence

from ..errors import StepOrderError, UnreadableInputError, UsageError
from ..records import Settings
from .records import Series, SeriesPoint
from .steps import MAX_STEP, StepInfo, order_by_step
from .summary import build_series

WILDCARDS = set("*?[")
MONITOR_SUFFIX = ".jsonl"


def expand_series_sources(sources: Sequence[str]) -> list[str]:
    """Checkpoint paths named by ``sources`` (files, folders, globs, manifests), each once, absolute."""
    from ..batch import expand_sources

    args: list[str] = []
    for arg in sources:
        if arg.startswith("timm:"):
            raise UsageError(f"{arg}: track needs checkpoint files of one training run, not a timm architecture")
        if WILDCARDS & set(arg) and not Path(arg).exists():
            matched = sorted(glob.glob(arg, recursive=True))
            if not matched:
                raise UsageError(f"{arg}: no file matches")
            args.extend(matched)
        else:
            args.append(arg)
    items = expand_sources(args)
    if not items:
        raise UsageError("no checkpoints found in the sources given",
                         hint="folders are searched for .safetensors, .pt, .pth, .bin, .ckpt, .onnx")
    return [item.source for item in items]


def read_monitor_file(path: str | Path) -> list[SeriesPoint]:
    """The points of a :class:`cbn_inspect.Monitor` JSONL file (one report with a ``step`` per line)."""
    points = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableInputError(f"{path}: cannot read ({exc})") from exc
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            step = int(data["step"])
            if step > MAX_STEP:
                raise ValueError("step out of range")
        except (ValueError, KeyError, TypeError, OverflowError):
            data, step = None, -1
        if data is None and number == len(lines) and not text.endswith("\n"):
            break  # a last line cut short (training killed while writing): the records before it stand
        if not isinstance(data, dict) or step < 0 or not {"layers", "bottleneck"} <= set(data):
            raise UnreadableInputError(f"{path}: line {number} is not a Monitor record (a report with a step)")
        points.append(SeriesPoint(source=f"{path}:{number}", step=StepInfo(step, "step", "record", "step"),
                                  report=data))
    if not points:
        raise UnreadableInputError(f"{path}: no records")
    steps = [p.step.step for p in points]
    if len(set(steps)) != len(steps):
        twice = sorted({s for s in steps if steps.count(s) > 1})
        raise StepOrderError(f"{path}: several records at step {twice[0]} (a restarted run appended to the same file?)",
                             hint="keep one record per step, or write each run to its own file")
    return sorted(points, key=lambda p: p.step.step)


def run_track(
    sources: Sequence[str],
    settings: Settings | None = None,
    *,
    order: str = "auto",
    out: str | Path | None = None,
    force: bool = False,
    jobs: int | None = None,
    threads: int | None = None,
    timeout: float | None = None,
    trust_code: bool = False,
    key: str | None = None,
    progress=None,
) -> Series:
    """The series the sources make; see the module docstring. Raises for usage and ordering errors only:
    a checkpoint that cannot be analysed is a failed point of the series."""
    from ..batch import AuditItem, run_audit

    settings = settings or Settings()
    monitor = [s for s in sources if s.endswith(MONITOR_SUFFIX) and Path(s).is_file()]
    if monitor:
        if len(monitor) != len(sources):
            raise StepOrderError("mixed sources: a Monitor .jsonl file is a whole series; pass it alone")
        if len(monitor) > 1:
            raise UsageError("pass one Monitor .jsonl file at a time")
        points = read_monitor_file(monitor[0])
        return build_series(points, unit="step", step_source="the Monitor records' step")
    paths = expand_series_sources(sources)
    ordered = order_by_step(paths, order)
    items = [AuditItem(source=path, kind="file", origin=path) for path, _ in ordered]
    result = run_audit(settings=settings, items=items, out=out, force=force, jobs=jobs, threads=threads,
                       timeout=timeout, trust_code=trust_code, key=key, progress=progress)
    points = [
        SeriesPoint(source=path, step=info, report=row.report if row.ok else None,
                    error_kind=row.error_kind, error_message=row.error_message)
        for (path, info), row in zip(ordered, result.rows)
    ]
    first = ordered[0][1]
    return build_series(points, unit=first.unit, step_source=first.describe())
