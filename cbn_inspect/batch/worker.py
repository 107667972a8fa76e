"""What a worker does with one task: analyse the item and turn every outcome into an :class:`AuditRow`.

This runs inside a local worker process or on a Dask worker, never in the process that writes the results.
It does not raise: a :class:`CbnError` becomes an error row of its kind, anything else an ``internal`` row.
(A crash or a kill of the whole process is the executor's business.)

Setting ``CBN_INSPECT_AUDIT_TRACE`` to a folder makes each worker append one line per item it computed to
``DIR/computed.txt`` -- a side channel for tests and for checking that a resumed audit recomputes nothing.
"""

from __future__ import annotations

import os
import time

from ..analysis import configure_threads
from ..errors import INTERNAL_ERROR_EXIT, CbnError, ResourceLimitError
from ..report.json_report import settings_to_dict
from .records import AuditRow, AuditTask

TRACE_ENV = "CBN_INSPECT_AUDIT_TRACE"


def _trace(item: str) -> None:
    folder = os.environ.get(TRACE_ENV)
    if not folder:
        return
    line = (item + "\n").encode()
    fd = os.open(os.path.join(folder, "computed.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)  # one O_APPEND write: lines from concurrent workers never interleave
    finally:
        os.close(fd)


def error_row(task: AuditTask, kind: str, message: str, exit_code: int | None,
              seconds: float | None = None) -> AuditRow:
    """An error row for ``task`` (also used by executors for timeouts and dead workers)."""
    return AuditRow(
        item=task.item.source,
        key=task.key,
        status="error",
        wall_seconds=None if seconds is None else round(seconds, 4),
        error_kind=kind,
        error_message=" ".join(message.split()),
        exit_code=exit_code,
        settings=settings_to_dict(task.settings),
    )


def run_task(task: AuditTask) -> AuditRow:
    """Analyse one item. The report part of an ``ok`` row is ``report_to_dict`` of ``inspect_source``."""
    from ..inspect import inspect_source
    from ..report.json_report import report_to_dict

    started = time.perf_counter()
    if task.threads:
        configure_threads(task.threads)
    try:
        content = task.key.split(":", 1)[0]
        known = content if task.item.kind == "file" and not content.startswith("unreadable") else None
        report = inspect_source(task.item.source, task.settings, trust_code=task.trust_code,
                                key=task.checkpoint_key, activations=task.activations, sha256=known)
        data = report_to_dict(report)
    except CbnError as error:
        _trace(task.item.source)
        return error_row(task, error.kind, error.one_line(), error.exit_code, time.perf_counter() - started)
    except MemoryError:
        _trace(task.item.source)
        return error_row(task, ResourceLimitError.kind, "ran out of memory (MemoryError)",
                         ResourceLimitError.exit_code, time.perf_counter() - started)
    except Exception as exc:  # a bug in cbn-inspect or a loader: one row, and the batch goes on
        _trace(task.item.source)
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return error_row(task, "internal", f"{type(exc).__name__}: {first}", INTERNAL_ERROR_EXIT,
                         time.perf_counter() - started)
    _trace(task.item.source)
    return AuditRow(
        item=task.item.source,
        key=task.key,
        status="ok",
        wall_seconds=round(time.perf_counter() - started, 4),
        report=data,
    )
