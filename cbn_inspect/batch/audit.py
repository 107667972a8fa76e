"""The batch front door: sources in, one row per item out, written to a resumable JSONL file as they finish.

``run_audit`` = expand the sources (:mod:`.sources`) + key every item (content hash + settings hash) + take
the rows an earlier run already finished from ``out`` (:mod:`.store`) + compute the rest on an executor
(:mod:`.executors`), appending each row the moment it arrives. It prints nothing: progress goes through the
optional :class:`ProgressSink`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from ..errors import SOME_ITEMS_FAILED_EXIT, ResourceLimitError, UsageError
from ..records import ActivationSettings, Settings
from ..report.json_report import settings_to_dict
from .executors import DaskExecutor, Executor, LocalExecutor, default_jobs
from .records import AuditItem, AuditRow, AuditTask
from .sources import HashTimeout, content_hash, expand_sources, row_key, settings_hash
from .worker import error_row
from .store import ResultStore, StreamStore


class ProgressSink(Protocol):
    def start(self, total: int, reused: int) -> None: ...

    def advance(self, row: AuditRow) -> None: ...


@dataclass(frozen=True)
class AuditResult:
    """One row per item of this run, in the order the sources named them."""

    rows: tuple[AuditRow, ...]
    computed: int
    reused: int
    seconds: float
    repaired_lines: int = 0  # lines of ``out`` dropped on opening (partial, invalid, or recomputed)

    @property
    def failed(self) -> tuple[AuditRow, ...]:
        return tuple(r for r in self.rows if not r.ok)

    @property
    def exit_code(self) -> int:
        """0 when every item succeeded, :data:`SOME_ITEMS_FAILED_EXIT` otherwise."""
        return SOME_ITEMS_FAILED_EXIT if self.failed else 0


def plan_tasks(
    items: Iterable[AuditItem],
    settings: Settings,
    *,
    trust_code: bool = False,
    key: str | None = None,
    threads: int | None = None,
    timeout: float | None = None,
    activations: ActivationSettings | None = None,
) -> list[AuditTask]:
    """A task per item, keyed by the item's content hash and everything that changes its report.

    Hashing runs within the per-item ``timeout``: an item whose hash takes longer gets a key from its path,
    size and modification time, and is marked to become a timeout row without being run. With
    ``activations``, its settings (the INPUTS spec included, not the content of an image folder) are part of
    the key.
    """
    extra = {"activations": dataclasses.asdict(activations)} if activations is not None else {}
    digest = settings_hash(settings_to_dict(settings), trust_code=trust_code, key=key,
                           spectra=settings.keep_spectra, **extra)
    tasks = []
    for item in items:
        late = None
        try:
            content = content_hash(item, timeout=timeout)
        except HashTimeout:
            content, late = "unhashed-" + _stat_key(item.source), timeout
        tasks.append(AuditTask(item=item, key=row_key(content, digest), settings=settings, trust_code=trust_code,
                               checkpoint_key=key, threads=threads, hash_timed_out=late, activations=activations))
    return tasks


def _stat_key(source: str) -> str:
    import hashlib
    import os

    try:
        info = os.stat(source)
        text = f"{source}:{info.st_size}:{info.st_mtime_ns}"
    except OSError:
        text = source
    return hashlib.sha256(text.encode()).hexdigest()


def make_executor(executor: str, *, jobs: int | None, threads: int | None, timeout: float | None,
                  scheduler: str | None) -> Executor:
    if timeout is not None and timeout <= 0:
        raise UsageError("--timeout must be > 0 seconds")
    if executor == "local":
        if scheduler:
            raise UsageError("--scheduler needs --executor dask")
        jobs = jobs or default_jobs()
        threads = threads or max(1, default_jobs() // jobs)
        return LocalExecutor(jobs, threads=threads, timeout=timeout)
    if executor == "dask":
        if not scheduler:
            raise UsageError("--executor dask needs --scheduler ADDRESS", hint="e.g. tcp://10.0.0.5:8786")
        return DaskExecutor(scheduler, timeout=timeout)
    raise UsageError(f"--executor {executor}: use local or dask")


def run_audit(
    sources: Sequence[str] | None = None,
    settings: Settings | None = None,
    *,
    items: Sequence[AuditItem] | None = None,
    out: str | Path | None = None,
    force: bool = False,
    executor: str = "local",
    jobs: int | None = None,
    threads: int | None = None,
    timeout: float | None = None,
    scheduler: str | None = None,
    trust_code: bool = False,
    key: str | None = None,
    progress: ProgressSink | None = None,
    activations: ActivationSettings | None = None,
) -> AuditResult:
    """Audit every item the sources name; see the module docstring. Raises only for usage errors."""
    settings = settings or Settings()
    runner = make_executor(executor, jobs=jobs, threads=threads, timeout=timeout, scheduler=scheduler)
    items = list(items) if items is not None else expand_sources(sources or [])
    started = time.perf_counter()
    tasks = plan_tasks(items, settings, trust_code=trust_code, key=key,
                       threads=threads if executor == "dask" else getattr(runner, "threads", threads),
                       timeout=timeout, activations=activations)
    wanted = {(t.item.source, t.key) for t in tasks}

    def drop(row: AuditRow) -> bool:  # rows of this run's items that are computed again
        return (row.item, row.key) in wanted and (force or not row.final)

    if out is not None and str(out) == "-":
        import sys

        store = StreamStore(sys.stdout)  # JSONL on stdout, row by row; no resume from a stream
    else:
        store = ResultStore(Path(out), drop=drop) if out is not None else None
    try:
        done = store.done if store is not None else {}
        finished: dict[tuple[str, str], AuditRow] = {
            (t.item.source, t.key): done[(t.item.source, t.key)] for t in tasks if (t.item.source, t.key) in done
        }
        todo = [t for t in tasks if (t.item.source, t.key) not in finished]
        reused = len(finished)
        if progress is not None:
            progress.start(len(tasks), reused)
        late = [t for t in todo if t.hash_timed_out is not None]
        todo = [t for t in todo if t.hash_timed_out is None]

        def rows():
            for task in late:
                yield error_row(task, "timeout", f"timed out after {task.hash_timed_out:g} s while hashing the "
                                "file (not analysed)", ResourceLimitError.exit_code, task.hash_timed_out)
            yield from runner.run(todo)

        for row in rows():
            if store is not None:
                store.append(row)
            finished[(row.item, row.key)] = row
            if progress is not None:
                progress.advance(row)
    finally:
        if store is not None:
            store.close()
    rows = tuple(finished[(t.item.source, t.key)] for t in tasks)
    return AuditResult(rows=rows, computed=len(todo) + len(late), reused=reused, seconds=time.perf_counter() - started,
                       repaired_lines=store.dropped_lines if store is not None else 0)
