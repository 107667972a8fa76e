"""Executors: run audit tasks somewhere and yield one :class:`AuditRow` per task, in completion order.

:class:`LocalExecutor` keeps ``jobs`` worker processes (forked from a ``forkserver`` that imported torch
once; workers are reused across items). Each worker holds one item at a time, so the executor always knows which
item a worker was on: a worker that dies (segfault, ``os.abort``, the out-of-memory killer) gives an error
row naming the signal, a worker past ``--timeout`` is killed and gives a timeout row, and in both cases a
fresh worker takes its place. Workers ignore Ctrl-C; the coordinator stops them.

:class:`DaskExecutor` sends the same tasks to an existing ``distributed`` scheduler (the ``dask`` extra,
imported only here). The Dask worker runs the same :func:`run_task`, so the rows are the same.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Iterator, Protocol, Sequence

from ..errors import INTERNAL_ERROR_EXIT, MissingExtraError, ResourceLimitError, UsageError
from .records import AuditRow, AuditTask
from .worker import configure_threads, error_row, run_task

ENV_PREFIX = "CBN_"

START_FAILURES_ALLOWED = 3  # workers that die before they are ready, before the batch gives up on workers


class Executor(Protocol):
    def run(self, tasks: Sequence[AuditTask]) -> Iterator[AuditRow]: ...


def default_jobs() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def describe_exit(exitcode: int | None) -> str:
    """``-9`` -> ``signal 9 (SIGKILL ...)``; ``3`` -> ``exit code 3``."""
    if exitcode is None:
        return "no exit status"
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = "unknown signal"
    hint = "; killed from outside, e.g. by the out-of-memory killer" if name == "SIGKILL" else ""
    return f"signal {-exitcode} ({name}{hint})"


PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD_S = 0.5


def _die_with(coordinator: int) -> None:
    """End this worker when the coordinator dies, even mid-item (a kill -9 of the coordinator included).

    Linux: ``PR_SET_PDEATHSIG`` makes the kernel send SIGKILL when the parent (the forkserver, which exits
    with the coordinator) goes; everywhere: a daemon thread polls the coordinator's pid and ends the process.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass

    def gone() -> bool:
        try:
            os.kill(coordinator, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:  # a killed coordinator not yet reaped is a zombie
            with open(f"/proc/{coordinator}/stat") as handle:
                return handle.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
        except (OSError, IndexError):
            return False

    def watch() -> None:
        while not gone():
            time.sleep(WATCHDOG_PERIOD_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="cbn-inspect-coordinator-watchdog").start()


def _own_environment() -> dict[str, str]:
    """The coordinator's ``CBN_*`` variables (the audit trace folder, the eigensolver route, the counts route's
    threshold...), handed to every worker: a forkserver keeps the environment it started with, which may be
    older than this audit's (a library user who set one after an earlier audit in the same process)."""
    return {key: value for key, value in os.environ.items() if key.startswith(ENV_PREFIX)}


def _worker_main(conn: Connection, threads: int | None, env: dict[str, str], coordinator: int | None = None) -> None:
    """A local worker: import the analysis once, then analyse one task per message until told to stop.

    ``env`` is the coordinator's current ``CBN_*`` environment (:func:`_own_environment`), which replaces
    the worker's own; ``coordinator`` its pid: the worker dies with it."""
    if coordinator is not None:
        _die_with(coordinator)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        del os.environ[key]
    os.environ.update(env)
    from .. import inspect  # noqa: F401  (imports torch: once per worker, before saying ready)

    if threads:
        configure_threads(threads)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the coordinator is gone
            return
        if task is None:
            return
        conn.send(("row", run_task(task)))


def _context() -> multiprocessing.context.BaseContext:
    """``forkserver`` with the analysis preloaded: torch is imported once, in the server, and every worker
    (and every replacement of a dead one) is a cheap fork of it. ``spawn`` where there is no forkserver."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["cbn_inspect.inspect", "cbn_inspect.batch.worker"])
        return context
    return multiprocessing.get_context("spawn")


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    task: AuditTask | None = None
    started: float = 0.0


class LocalExecutor:
    """A pool of ``jobs`` isolated worker processes on this machine."""

    def __init__(self, jobs: int, *, threads: int | None = None, timeout: float | None = None) -> None:
        self.jobs = max(1, jobs)
        self.threads = threads
        self.timeout = timeout
        self._context = _context()
        self._start_failures = 0

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, self.threads, _own_environment(), os.getpid()),
                                        daemon=True,
                                        name="cbn-inspect-audit-worker")
        process.start()
        child.close()
        return _Worker(process, parent)

    @staticmethod
    def _stop(worker: _Worker, kill: bool = False) -> None:
        if kill and worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
        worker.conn.close()

    def _receive(self, worker: _Worker) -> tuple[str, object] | None:
        """The worker's next message, or None if it died."""
        try:
            if worker.conn.poll():
                return worker.conn.recv()
        except (EOFError, OSError):
            return None
        return ("nothing", None) if worker.process.is_alive() else None

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[AuditRow]:
        pending = deque(tasks)
        workers = [self._start() for _ in range(min(self.jobs, len(pending)))]
        try:
            while pending or any(w.task is not None for w in workers):
                for worker in workers:
                    if worker.ready and worker.task is None and pending:
                        self._dispatch(worker, pending)
                wait([w.conn for w in workers] + [w.process.sentinel for w in workers], self._wait_for(workers))
                survivors = []
                for worker in workers:
                    alive = yield from self._service(worker, pending)
                    if alive:
                        survivors.append(worker)
                    elif pending:
                        survivors.append(self._start())
                workers = survivors
        finally:
            for worker in workers:
                try:
                    worker.conn.send(None)
                except (OSError, ValueError):
                    pass
            for worker in workers:
                self._stop(worker, kill=worker.task is not None)

    @staticmethod
    def _dispatch(worker: _Worker, pending: deque) -> None:
        task = pending.popleft()
        try:
            worker.conn.send(task)
        except (OSError, ValueError):  # it died since it said ready: the task goes back, _service sees the death
            pending.appendleft(task)
            return
        worker.task, worker.started = task, time.monotonic()

    def _wait_for(self, workers: list[_Worker]) -> float | None:
        if not self.timeout:
            return None
        now = time.monotonic()
        deadlines = [w.started + self.timeout - now for w in workers if w.task is not None]
        return max(0.0, min(deadlines)) + 0.01 if deadlines else None

    def _service(self, worker: _Worker, pending: deque):
        """Handle what happened to one worker: yield its row if any; return False when it is gone."""
        message = self._receive(worker)
        if message is not None and message[0] == "ready":
            worker.ready, self._start_failures = True, 0
        elif message is not None and message[0] == "row":
            worker.task = None
            yield message[1]
        elif message is None:  # died
            self._stop(worker)
            cause = describe_exit(worker.process.exitcode)
            if worker.task is not None:
                yield error_row(worker.task, "worker-died", f"worker died: {cause}", INTERNAL_ERROR_EXIT,
                                time.monotonic() - worker.started)
            elif not worker.ready:
                self._start_failures += 1
                if self._start_failures >= START_FAILURES_ALLOWED:
                    while pending:
                        yield error_row(pending.popleft(), "worker-died", f"worker could not start: {cause}",
                                        INTERNAL_ERROR_EXIT)
            return False
        elif worker.task is not None and self.timeout and time.monotonic() - worker.started > self.timeout:
            self._stop(worker, kill=True)
            yield error_row(worker.task, "timeout", f"timed out after {self.timeout:g} s (worker killed)",
                            ResourceLimitError.exit_code, time.monotonic() - worker.started)
            return False
        return True


def run_task_limited(task: AuditTask, timeout: float | None) -> AuditRow:
    """:func:`run_task` with a time limit, for workers the coordinator cannot kill (Dask).

    Past the limit the row says so; the computation itself goes on in a background thread until it ends.
    """
    if not timeout:
        return run_task(task)
    box: list[AuditRow] = []
    started = time.perf_counter()
    thread = threading.Thread(target=lambda: box.append(run_task(task)), daemon=True)
    thread.start()
    thread.join(timeout)
    if box:
        return box[0]
    return error_row(task, "timeout", f"timed out after {timeout:g} s (the Dask worker finishes it in the background)",
                     ResourceLimitError.exit_code, time.perf_counter() - started)


class DaskExecutor:
    """Send the tasks to the Dask ``distributed`` scheduler at ``address`` (e.g. ``tcp://10.0.0.5:8786``)."""

    def __init__(self, address: str, *, timeout: float | None = None, connect_timeout: float = 20.0) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout

    def _client(self):
        try:
            from distributed import Client
        except ImportError as exc:
            raise MissingExtraError("--executor dask needs the dask extra",
                             hint="pip install 'cbn-inspect[dask]'") from exc
        try:
            return Client(self.address, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UsageError(f"--scheduler {self.address}: cannot connect ({exc})") from exc

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[AuditRow]:
        if not tasks:
            return
        client = self._client()  # first: without the dask extra, it says so (exit 10)
        from distributed import as_completed

        futures = []
        try:
            futures = client.map(run_task_limited, list(tasks), timeout=self.timeout, pure=False)
            by_future = {future.key: task for future, task in zip(futures, tasks)}
            for future in as_completed(futures, loop=client.loop):
                task = by_future[future.key]
                try:
                    yield future.result()
                except Exception as exc:  # KilledWorker (the item killed its workers), or a lost connection
                    kind = "worker-died" if type(exc).__name__ == "KilledWorker" else "internal"
                    yield error_row(task, kind, f"Dask: {type(exc).__name__}: {exc}", INTERNAL_ERROR_EXIT)
        finally:
            if futures:
                client.cancel(futures)
            client.close()
