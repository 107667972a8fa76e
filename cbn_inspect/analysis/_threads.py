"""One place that decides how many CPU threads the analysis uses, and runs its batches on them.

The per-frequency eigen/SVD calls are many small LAPACK problems; LAPACK's own threading barely helps
them, and two thread pools (ours and the BLAS library's) on the same cores slow each other down badly. So
the analysis runs ``n`` Python worker threads, each calling *single-threaded* torch / BLAS kernels (they
release the GIL), and sets every library it can reach to one thread. :func:`configure_threads` does that
once per process; a batch worker of the audit (several processes side by side) calls it with its own share
of the cores, e.g. ``configure_threads(cores // workers)``.

Two levels share the one pool: :func:`submit` runs whole layers (``analyze_model`` keeps ``threads`` of
them in flight, so a small or serial layer overlaps a big one), and :func:`parallel_map` splits a layer into
chunks of frequencies. A pool thread that maps runs its own chunks when no other thread has taken them
(it never just waits on a queue it feeds), so the two levels cannot deadlock and never run more than
``threads`` kernels at once.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_LOCK = threading.Lock()
_STATE: dict[str, object] = {"threads": None, "pool": None, "openblas": False}
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_LOCAL = threading.local()


def _mark_worker() -> None:
    _LOCAL.worker = True


def _in_worker() -> bool:
    return bool(getattr(_LOCAL, "worker", False))


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _limit_openblas() -> bool:
    """Set numpy's OpenBLAS to one thread where threadpoolctl is installed; True when that worked."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    try:
        threadpool_limits(limits=1, user_api="blas")
        from threadpoolctl import threadpool_info

        return all(info.get("num_threads") == 1 for info in threadpool_info() if info.get("internal_api") == "openblas")
    except Exception:  # threadpoolctl inspects shared libraries; never let that break an analysis
        return False


def limit_blas_threads() -> bool:
    """Hold every BLAS loaded so far (numpy's, scipy's own OpenBLAS) to one thread; True when that worked."""
    return _limit_openblas()


def configure_threads(n: int | None = None) -> int:
    """Use ``n`` worker threads for the analysis (default: the cores available) and return ``n``.

    Sets torch (and MKL/OpenMP through it) to one thread per kernel call, the ``*_NUM_THREADS`` variables
    to 1 for libraries loaded later and for child processes, and numpy's OpenBLAS to one thread where
    possible. Call it once per process; calling it again with another ``n`` replaces the worker pool.
    """
    n = available_cores() if n is None else int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    with _LOCK:
        if _STATE["threads"] == n:
            return n
        for name in _ENV:
            os.environ[name] = "1"
        torch.set_num_threads(1)
        _STATE["openblas"] = _limit_openblas()
        old = _STATE["pool"]
        _STATE["pool"] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="cbn-analysis",
                                              initializer=_mark_worker) if n > 1 else None
        _STATE["threads"] = n
    if old is not None:
        old.shutdown(wait=True)
    return n


@contextmanager
def restored_threads() -> Iterator[None]:
    """For a guest in someone else's process (the training-time :class:`~cbn_inspect.Monitor`): inside, the
    analysis runs as :func:`configure_threads` sets it up (torch and every BLAS at one thread per kernel);
    afterwards torch's thread count, the ``*_NUM_THREADS`` variables and every BLAS pool threadpoolctl can
    reach are what they were before, so the training loop keeps its own threading."""
    torch_threads = torch.get_num_threads()
    env = {name: os.environ.get(name) for name in _ENV}
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=None)  # a snapshot of every pool's thread count, changing none
    except Exception:  # threadpoolctl missing or unable to inspect a library: torch and the variables still
        limiter = None
    try:
        analysis_threads()  # the worker pool (configured once per process)
        torch.set_num_threads(1)  # again: configure_threads ran for an earlier call, whose settings were undone
        for name in _ENV:
            os.environ[name] = "1"
        _STATE["openblas"] = _limit_openblas()
        yield
    finally:
        torch.set_num_threads(torch_threads)
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if limiter is not None:
            try:
                limiter.restore_original_limits()
            except Exception:  # never let the restore break the caller's step
                pass


def analysis_threads() -> int:
    """The configured number of workers; configures the default (all cores) on first use."""
    threads = _STATE["threads"]
    return configure_threads() if threads is None else int(threads)


def openblas_single_threaded() -> bool:
    """Whether numpy's LAPACK may be called from several workers at once without oversubscription."""
    analysis_threads()
    return bool(_STATE["openblas"])


def parallel_map(func: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[func(x) for x in items]`` on the analysis workers, results in order.

    Called from a pool thread, the caller takes part: it runs every item that no other worker has started
    (so nested use never deadlocks and never adds a thread). Called from elsewhere, it waits.
    """
    items = list(items)
    analysis_threads()
    pool = _STATE["pool"]
    if pool is None or len(items) < 2:
        return [func(x) for x in items]
    if not _in_worker():
        return list(pool.map(func, items))  # type: ignore[union-attr]
    futures = [pool.submit(func, x) for x in items[1:]]  # type: ignore[union-attr]
    results: list = [func(items[0])] + [None] * len(futures)
    waiting = []
    for index, (item, future) in enumerate(zip(items[1:], futures), start=1):
        if future.cancel():  # no other worker has started it: run it here, and leave the rest on offer
            results[index] = func(item)
        else:
            waiting.append((index, future))
    for index, future in waiting:
        results[index] = future.result()
    return results


def submit(func: Callable[..., R], *args: object, inline: bool = False) -> "Future[R]":
    """Run ``func(*args)`` on a pool thread; here, already done, when the analysis is single-threaded, when
    called from a pool thread, or with ``inline``. Either way its exception reaches ``future.result()``."""
    analysis_threads()
    pool = _STATE["pool"]
    if pool is not None and not _in_worker() and not inline:
        return pool.submit(func, *args)  # type: ignore[union-attr]
    future: Future[R] = Future()
    try:
        future.set_result(func(*args))
    except BaseException as exc:  # handed to the caller by future.result(), like a pool's future
        future.set_exception(exc)
    return future
