"""Eigenvalues of batches of Hermitian PSD Gram matrices, by the fastest exact route (issue 15).

The per-frequency singular values come from the eigenvalues of the float64 Gram matrices
H(m) = W_hat(m) W_hat(m)^H (:mod:`.spectrum`); this module is the eigensolver call. Three routes:

- ``numpy``: ``np.linalg.eigvalsh`` on complex128 (LAPACK ``zheevd`` of numpy's OpenBLAS). The reference
  route: what the tool always used.
- ``torch``: ``torch.linalg.eigvalsh`` on complex128 (``zheevd`` of the LAPACK torch is built with: MKL on
  x86 wheels). The same algorithm and the same accuracy class as ``numpy``; on the CPU it runs on one thread
  inside each analysis worker (:func:`._threads.configure_threads` sets ``torch.set_num_threads(1)``).
- ``mixed``: complex64 tridiagonal reduction (``chetrd``), all eigenvalues of the tridiagonal (``ssterf``),
  and float64 recomputation of those below ``MIXED_THRESHOLD`` of the largest: their eigenvectors of the
  tridiagonal (``sstebz`` + ``sstein``), back-transformed by the reduction's reflectors (``cunmqr``),
  orthonormalised in complex128 (QR) and projected onto the float64 Gram matrix (Rayleigh-Ritz:
  ``eigvalsh(V^H H V)``). Needs scipy's LAPACK wrappers; about half the work of ``zheevd`` when few values
  are small.

Accuracy (relative, on singular values sigma = sqrt(lambda) above 1e-3 of the largest, against a float64
SVD; measured by tests/test_eigen.py and benchmarks/bench_spectra.py):

- ``numpy`` and ``torch``: eps64 * (sigma_max / sigma)^2, at most about 1e-10 at 1e-3.
- ``mixed``: values above the threshold keep the complex64 tridiagonal's absolute error, a small multiple
  of eps32 * lambda_max, i.e. at most about eps32 / (2 * MIXED_THRESHOLD) relative on sigma at the
  threshold (measured below 2e-5 with the threshold at 2e-3, target 1e-4); values below it get the float64
  Rayleigh-Ritz accuracy of a subspace accurate to eps32 (its error is quadratic in the subspace's angle:
  measured below 1e-6).

Every mixed solve is checked, and a matrix that fails any check is solved again by the plain complex128
route (so ``mixed`` can be slower, never less accurate than its documented bound): a LAPACK ``info`` != 0
(including ``sstein``'s failures to converge, its weak point on big clusters), a selected count that
disagrees with the bisection, back-transformed vectors that are not orthonormal to float32 accuracy, or a
refined value that disagrees with its complex64 estimate by more than the complex64 error bound.

Selection (:func:`choose_route` and :func:`hermitian_eigenvalues`): ``numpy``/``torch`` by size (the faster
one here, measured); ``mixed`` per matrix where scipy is present, ``n >= MIXED_MIN_N`` and the cost model
says it pays for the share of small values seen in the previous matrix of the batch (neighbouring
frequencies have similar spectra; the first matrix of a batch takes the mixed route's first stage, whose
cost is then sunk, and refines only when that still pays).

Pure numerical code: no I/O.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import numpy as np
import torch

ROUTES = ("auto", "plain", "numpy", "torch", "mixed")
MIXED_MIN_N = 96  # below this, per-matrix Python calls cost more than the mixed route saves
TARGET_REL = 1e-4  # the accuracy the mixed route must keep on singular values above 1e-3 of the largest
_EPS32 = float(np.finfo(np.float32).eps)
# Worst absolute eigenvalue error of the complex64 first stage, in units of eps32 * lambda_max, measured on
# clustered spectra (n/2 equal values at 1e-3..0.5 of the largest; tests/test_eigen.py): about 0.7 sqrt(n).
_FIRST_STAGE_ERROR = 0.7
_MARGIN = 2.0
# Cost of the mixed route relative to one plain complex128 solve of the same matrix (measured, process CPU
# time, one thread, n = 128..512; benchmarks/README.md "Eigensolver routes"): the first stage (complex64
# reduction and all values) about 0.5-0.6, each refined value about 3.5-4.4 / n.
_COST_FIRST, _COST_PER_VALUE = 0.6, 4.0

_lapack_lock = threading.Lock()
_STATE: dict[str, object] = {}


def mixed_threshold(n: int) -> float:
    """Share of the largest eigenvalue below which the mixed route recomputes values in float64.

    A value lambda kept from the complex64 first stage is off by at most about c(n) eps32 lambda_max,
    c(n) = 0.7 sqrt(n) (measured worst case, clustered values), i.e. c eps32 lambda_max / (2 lambda) relative
    on sigma. Keeping that within TARGET_REL / 2 (a factor 2 of margin) gives the threshold; at n = 512 it is
    1.9e-2 (sigma below 0.14 of the largest is refined).
    """
    return _MARGIN * _FIRST_STAGE_ERROR * float(np.sqrt(n)) * _EPS32 / (2.0 * TARGET_REL)


def _scipy_lapack():
    """scipy.linalg.lapack, or None where scipy is missing (the mixed route is then never chosen)."""
    if "lapack" not in _STATE:
        with _lapack_lock:
            if "lapack" not in _STATE:
                try:
                    from scipy.linalg import lapack
                except ImportError:
                    lapack = None
                if lapack is not None:  # scipy's own OpenBLAS: hold it to one thread like numpy's
                    from ._threads import limit_blas_threads

                    limit_blas_threads()
                _STATE["lapack"] = lapack
    return _STATE["lapack"]


def _forced() -> str:
    """The environment variable CBN_EIGEN_ROUTE (one of :data:`ROUTES` but ``auto``), read at every call:
    it overrides the route of every complex128 Gram solve on the CPU. ``plain`` (or ``numpy``/``torch``)
    turns the mixed route off; ``mixed`` refines every matrix of every size (tests and benchmarks)."""
    forced = os.environ.get("CBN_EIGEN_ROUTE", "").strip().lower()
    return forced if forced in ROUTES and forced != "auto" else ""


def mixed_available() -> bool:
    return _forced() not in ("numpy", "torch", "plain") and _scipy_lapack() is not None


# ------------------------------------------------------------------ plain complex128 routes


def _numpy_values(mats: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(mats)


def _torch_values(mats: np.ndarray) -> np.ndarray:
    return torch.linalg.eigvalsh(torch.from_numpy(mats)).numpy()


# ------------------------------------------------------------------ the mixed route


class _Fallback(Exception):
    """A mixed solve that failed a check: the matrix goes to the plain complex128 route."""


def _mixed_first_stage(lapack, mat: np.ndarray):
    """complex64 tridiagonal reduction of ``mat`` and all eigenvalues of the tridiagonal (ascending)."""
    # mat is C-ordered Hermitian: its transpose (= its conjugate, same eigenvalues) is Fortran-ordered.
    a32 = mat.T.astype(np.complex64, order="F")
    c, d, e, tau, info = lapack.chetrd(a32, lower=1, lwork=max(1, 32 * mat.shape[0]), overwrite_a=1)
    if info != 0:
        raise _Fallback("chetrd")
    w, info = lapack.ssterf(d.copy(), e.copy())
    if info != 0:
        raise _Fallback("ssterf")
    return c, d, e, tau, w.astype(np.float64)


def _small_count(w: np.ndarray) -> int:
    """How many of the ascending values ``w`` lie below :func:`mixed_threshold` of the largest."""
    return int(np.searchsorted(w, mixed_threshold(len(w)) * max(float(w[-1]), 0.0), side="left"))


def _mixed_refine(lapack, mat: np.ndarray, stage, k: int) -> np.ndarray:
    """The k smallest eigenvalues of ``mat`` in float64 by Rayleigh-Ritz on the tridiagonal's vectors."""
    c, d, e, tau, w = stage
    n = mat.shape[0]
    lmax = max(float(w[-1]), 0.0)
    m, w_sel, iblock, isplit, info = lapack.sstebz(d, e, 2, 0.0, 0.0, 1, k, 0.0, b"B")
    if info != 0 or m != k:
        raise _Fallback("sstebz")
    z, info = lapack.sstein(d, e, w_sel[:k], iblock, isplit)
    if info != 0:
        raise _Fallback("sstein")
    vecs = np.zeros((n, k), dtype=np.complex64, order="F")
    vecs[:] = z[:, :k]
    if n > 1:
        reflectors = np.asfortranarray(c[1:, : n - 1])
        moved, _, info = lapack.cunmqr(b"L", b"N", reflectors, tau, np.asfortranarray(vecs[1:]),
                                       lwork=max(1, 64 * k), overwrite_c=1)
        if info != 0:
            raise _Fallback("cunmqr")
        vecs[1:] = moved
    basis, r = np.linalg.qr(vecs.astype(np.complex128))
    diag = np.abs(np.diagonal(r))
    if diag.size and (diag.min() < 0.5 or diag.max() > 1.5):  # sstein's vectors not orthonormal: a cluster
        raise _Fallback("orthogonality")
    herm = mat.T  # the Fortran view: conj(H), the matrix that was reduced
    projected = basis.conj().T @ (herm @ basis)
    refined = np.linalg.eigvalsh((projected + projected.conj().T) * 0.5)
    # the complex64 values carry an absolute error of a modest multiple of eps32 * lambda_max (backward
    # stable reduction); Ritz values from an eps32-accurate subspace lie far closer to the truth. A larger
    # disagreement means a missed or spurious direction.
    bound = 8.0 * np.sqrt(n) * _EPS32 * lmax + 1e-300
    if np.any(np.abs(refined - w[:k]) > bound):
        raise _Fallback("consistency")
    return refined


def _mixed_pays(n: int, k: int) -> bool:
    """Whether the whole mixed route (first stage and k refined values) beats one plain complex128 solve."""
    return _COST_FIRST + _COST_PER_VALUE * k / n < 1.0


def _refine_pays(n: int, k: int) -> bool:
    """With the first stage already paid: whether refining k values beats a fresh plain complex128 solve."""
    return _COST_PER_VALUE * k / n < 1.0


def _mixed_batch(mats: np.ndarray, plain: Callable[[np.ndarray], np.ndarray], stats: dict | None,
                 switch: bool = True) -> np.ndarray:
    """Ascending eigenvalues of each matrix of ``mats`` (B, n, n) by the mixed route.

    With ``switch``, a matrix whose own share of small values (from the first stage) makes refining cost more
    than a fresh plain solve goes to ``plain``; without it every matrix is refined (tests and the benchmark's
    per-route table). Either way a failed check sends the matrix to ``plain``. The route of a matrix depends
    on that matrix alone, so the values do not depend on how frequencies are chunked or threaded.
    """
    lapack = _scipy_lapack()
    batch, n = mats.shape[0], mats.shape[-1]
    out = np.empty((batch, n), dtype=np.float64)
    for index in range(batch):
        mat = mats[index]
        route = "mixed"
        try:
            stage = _mixed_first_stage(lapack, mat)
            values = stage[4]
            k = _small_count(values)
            if k and (not switch or _refine_pays(n, k)):
                values = np.concatenate([_mixed_refine(lapack, mat, stage, k), values[k:]])
                values.sort()
            elif k:
                route = "plain"
        except _Fallback as why:
            route = "fallback"
            if stats is not None:
                reasons = stats.setdefault("fallback_reasons", {})
                reasons[str(why)] = reasons.get(str(why), 0) + 1
        out[index] = values if route == "mixed" else plain(mat[None])[0]
        if stats is not None:
            stats[route] = stats.get(route, 0) + 1
    return out


# ------------------------------------------------------------------ selection


def _thread_seconds(func: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        func()
        best = min(best, time.thread_time() - start)
    return best


def plain_route() -> str:
    """The faster plain complex128 route on this machine: ``torch`` (MKL here) or ``numpy`` (OpenBLAS).

    Measured once per process on a 192 x 192 matrix (thread CPU time, best of 3 each, about 20 ms in all):
    which LAPACK wins depends on the CPU (MKL was 1.2-1.3x faster on the Intel machine of
    benchmarks/README.md, slower on an AMD one). numpy is only a candidate where its OpenBLAS is held to one
    thread (:func:`._threads.openblas_single_threaded`); both give float64 LAPACK accuracy.
    """
    forced = _forced()
    if forced in ("numpy", "torch"):
        return forced
    if "plain" not in _STATE:
        with _lapack_lock:
            if "plain" not in _STATE:
                from ._threads import openblas_single_threaded

                route = "torch"
                if openblas_single_threaded() and torch.get_num_threads() == 1:
                    rng = np.random.default_rng(0)
                    a = rng.standard_normal((192, 192)) + 1j * rng.standard_normal((192, 192))
                    mat = (a @ a.conj().T)[None]
                    t_numpy = _thread_seconds(lambda: _numpy_values(mat))
                    t_torch = _thread_seconds(lambda: _torch_values(mat))
                    route = "torch" if t_torch < t_numpy else "numpy"
                elif openblas_single_threaded():
                    route = "numpy"
                _STATE["plain"] = route
    return str(_STATE["plain"])


def probe_pays(n: int) -> bool:
    """Whether a layer of ``n x n`` Gram matrices is worth a probe for the mixed route (scipy, size, override)."""
    return n >= MIXED_MIN_N and mixed_available() and not _forced()


def layer_route(probe: np.ndarray, n: int) -> str:
    """``auto`` (the mixed route with its per-matrix switch) or ``plain`` for a layer of ``n x n`` matrices,
    from the exact ascending eigenvalues ``probe`` of one of its frequencies (all groups together): the mixed
    route is taken where the cost model says that, with this share of small values, it beats a plain solve
    (on spectra where most values are small it would lose)."""
    if not probe_pays(n) or probe.size == 0:
        return "plain"
    lmax = max(float(probe.max()), 0.0)
    share = float(np.count_nonzero(probe < mixed_threshold(n) * lmax)) / probe.size
    return "auto" if _mixed_pays(n, int(round(share * n))) else "plain"


def hermitian_eigenvalues(mats: np.ndarray, route: str = "auto", stats: dict | None = None) -> np.ndarray:
    """Ascending eigenvalues (float64, shape (..., n)) of a batch of complex128 Hermitian matrices (..., n, n).

    ``route`` is one of :data:`ROUTES`: ``auto`` takes the mixed route with its per-matrix switch where
    :func:`probe_pays` (scipy present, ``n >= MIXED_MIN_N``), the plain route otherwise; ``plain`` is the
    faster of ``numpy`` and ``torch`` (:func:`plain_route`), the complex128 routes; ``mixed`` refines every
    matrix (falling back only where a check fails). ``stats``, when given, counts the matrices per route
    taken by the mixed batch (``mixed``, ``plain``, ``fallback``) and the reasons for fallbacks.
    """
    if route not in ROUTES:
        raise ValueError(f"unknown eigensolver route {route!r}")
    mats = np.ascontiguousarray(mats, dtype=np.complex128)
    shape, n = mats.shape[:-2], mats.shape[-1]
    route = _forced() or route
    switch = route == "auto"
    if route == "auto":
        route = "mixed" if probe_pays(n) else "plain"
    elif route == "mixed" and _scipy_lapack() is None:
        raise RuntimeError("the mixed eigensolver route needs scipy (pip install scipy)")
    if route == "mixed" and (n < 2 or mats.size == 0):
        route = "plain"
    if route == "plain":
        route = plain_route()
    if route == "numpy":
        return _numpy_values(mats)
    if route == "torch":
        return _torch_values(mats)
    plain = _numpy_values if plain_route() == "numpy" else _torch_values
    return _mixed_batch(mats.reshape((-1, n, n)), plain, stats, switch).reshape(shape + (n,))
