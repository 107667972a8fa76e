"""Eigenvalues of batches of Hermitian PSD Gram matrices by the fastest exact route (issue 15).

The per-frequency singular values come from the eigenvalues of the float64 Gram matrices
H(m) = W_hat(m) W_hat(m)^H (:mod:`.spectrum`); this module is that eigensolver call. The routes:

- ``numpy``: ``np.linalg.eigvalsh`` on complex128 (LAPACK ``zheevd`` of numpy's OpenBLAS): the tool's
  route before issue 15.
- ``torch``: ``torch.linalg.eigvalsh`` on complex128 (``zheevd`` of torch's LAPACK: MKL in the x86 wheels),
  one thread per analysis worker (:func:`._threads.configure_threads`). Same algorithm, same accuracy.
- ``plain``: whichever of the two is faster on this machine (:func:`plain_route`, measured once).
- ``mixed``: complex64 tridiagonal reduction (``chetrd``) and all eigenvalues of the tridiagonal
  (``ssterf``); the values below :func:`mixed_threshold` of the largest are then recomputed in float64: their
  eigenvectors of the tridiagonal (``sstebz`` + ``sstein``), back-transformed by the reduction's reflectors
  (``cunmqr``), orthonormalised in complex128 (QR) and projected onto the float64 Gram matrix (Rayleigh-Ritz,
  ``eigvalsh(V^H H V)``). scipy's LAPACK wrappers; where scipy is missing the route is never chosen.

Accuracy, relative, on singular values sigma = sqrt(lambda) above 1e-3 of the largest, against float64 SVDs
(tests/test_eigen.py on adversarial spectra: many tiny values, clusters, exact zeros, rank-deficient;
benchmarks/bench_spectra.py on ResNet-50's own matrices):

- ``numpy``, ``torch``: eps64 (sigma_max / sigma)^2, about 1e-11 at 1e-3 (measured at most 2e-11).
- ``mixed``: a value kept from the complex64 stage is off by at most c(n) eps32 lambda_max in lambda,
  c(n) about 0.7 sqrt(n) near the bottom of the spectrum (worst measured, on clusters; random spectra stay
  far below; the largest errors, up to about 30 eps32 lambda_max at n = 512, sit at the top of the spectrum
  where they are 4e-6 relative), so the threshold is
  set where that is half of TARGET_REL (1e-4) on sigma: 9.4e-3 at n = 128, 1.9e-2 at 512 (sigma below 0.14
  of the largest is refined). Refined values have the float64 Rayleigh-Ritz accuracy of an eps32-accurate
  subspace (quadratic in its angle). Measured: at most 2.6e-5 on clusters just above the threshold, 7e-6 on
  ResNet-50's matrices.

Every mixed solve is checked; a matrix that fails a check is solved again by the plain route: a LAPACK
``info`` != 0 (``sstein``'s failures to converge on big clusters included), a bisection count that is not
the one asked for, back-transformed vectors that are not orthonormal (R of their QR off 1 by more than
0.5), or a refined value further from its complex64 estimate than 8 sqrt(n) eps32 lambda_max.

Cost (process CPU, one thread, relative to one plain solve; benchmarks/README.md "Eigensolver routes"): the
first stage 0.47-0.62, each refined value 2.5-3.0 / n (n = 512..128). So the mixed route pays only when few
values are small: about 2x on the wide matrices of strided layers (none small), 10% on square random ones at
n = 512 (17% small at the threshold), nothing below. Selection (:func:`hermitian_eigenvalues`, :func:`layer_route`): per layer,
:mod:`.spectrum` solves one frequency by the plain route and takes the mixed route for the rest only where
the cost model says it pays for that share of small values; within the mixed route a matrix whose own share
is too large goes to the plain route after its first stage. The route of a matrix depends on its layer and
itself alone, so values do not depend on chunking or threads. ``CBN_EIGEN_ROUTE`` (:func:`_forced`) overrides.

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
# Cost of the mixed route relative to one plain complex128 solve of the same matrix (torch's MKL zheevd),
# measured (process CPU time, one thread, benchmarks/README.md "Eigensolver routes"): n -> (the first stage:
# complex64 reduction and all values; each refined value, times n). Interpolated in log n, clamped outside.
_COST = {128: (0.62, 3.0), 256: (0.58, 2.9), 512: (0.47, 2.5)}
_PAYS_BELOW = 0.95  # take the mixed route only for a clear gain: near 1 the two are within the noise

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
    """scipy.linalg.lapack, or None where scipy is missing (the mixed route is then never chosen).

    Imported on first use only (about 0.13 s of CPU, measured), i.e. only for layers with n >= MIXED_MIN_N.
    """
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


def _splits(d: np.ndarray, e: np.ndarray) -> bool:
    """Whether the float32 tridiagonal (d, e) splits into blocks, by ``sstebz``'s own criterion."""
    ulp = float(np.finfo(np.float32).eps)
    return bool(np.any(e.astype(np.float64) ** 2 <= np.abs(d[1:] * d[:-1]).astype(np.float64) * ulp**2 + 1e-37))


def _mixed_refine(lapack, mat: np.ndarray, stage, k: int) -> np.ndarray:
    """The k smallest eigenvalues of ``mat`` in float64 by Rayleigh-Ritz on the tridiagonal's vectors."""
    c, d, e, tau, w = stage
    n = mat.shape[0]
    lmax = max(float(w[-1]), 0.0)
    if _splits(d, e):  # blocks: let bisection say which value belongs to which block
        m, w_sel, iblock, isplit, info = lapack.sstebz(d, e, 2, 0.0, 0.0, 1, k, 0.0, b"B")
        if info != 0 or m != k:
            raise _Fallback("sstebz")
        w_sel = w_sel[:k]
    else:  # one block: the values of ssterf serve inverse iteration directly
        w_sel = w[:k].astype(np.float32)
        iblock = np.ones(n, dtype=np.int32)
        isplit = np.zeros(n, dtype=np.int32)
        isplit[0] = n
    z, info = lapack.sstein(d, e, w_sel, iblock, isplit)
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
    basis = vecs.astype(np.complex128)
    # Rayleigh-Ritz on the (nearly orthonormal) basis as the k x k pencil (V^H H V, V^H V): with G = V^H V = L L^H,
    # the Ritz values are those of L^-1 (V^H H V) L^-H. Cheaper than a QR of V, and as accurate: G = I + O(eps32).
    gram = basis.conj().T @ basis
    if np.max(np.abs(gram - np.eye(k))) > 0.25:  # sstein's vectors not orthonormal: a cluster it did not resolve
        raise _Fallback("orthogonality")
    herm = mat.T  # the Fortran view: conj(H), the matrix that was reduced
    projected = basis.conj().T @ (herm @ basis)
    try:
        inv = np.linalg.inv(np.linalg.cholesky(gram))
    except np.linalg.LinAlgError as exc:
        raise _Fallback("orthogonality") from exc
    projected = inv @ projected @ inv.conj().T
    refined = np.linalg.eigvalsh((projected + projected.conj().T) * 0.5)
    # the complex64 values carry an absolute error of a modest multiple of eps32 * lambda_max (backward
    # stable reduction); Ritz values from an eps32-accurate subspace lie far closer to the truth. A larger
    # disagreement means a missed or spurious direction.
    bound = 8.0 * np.sqrt(n) * _EPS32 * lmax + 1e-300
    if np.any(np.abs(refined - w[:k]) > bound):
        raise _Fallback("consistency")
    return refined


def _cost(n: int) -> tuple[float, float]:
    """(first stage, per refined value times n) relative to a plain solve, from :data:`_COST`."""
    sizes = sorted(_COST)
    x = float(np.clip(np.log2(max(n, 1)), np.log2(sizes[0]), np.log2(sizes[-1])))
    logs = np.log2(sizes)
    return (float(np.interp(x, logs, [_COST[m][0] for m in sizes])),
            float(np.interp(x, logs, [_COST[m][1] for m in sizes])))


def _mixed_pays(n: int, k: int) -> bool:
    """Whether the whole mixed route (first stage and k refined values) beats one plain complex128 solve."""
    first, per_value = _cost(n)
    return first + per_value * k / n < _PAYS_BELOW


def _refine_pays(n: int, k: int) -> bool:
    """With the first stage already paid: whether refining k values beats a fresh plain complex128 solve."""
    return _cost(n)[1] * k / n < _PAYS_BELOW


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

    Measured once per process on a 192 x 192 matrix (thread CPU time, best of 3 each; 32 ms of CPU in all, measured):
    which LAPACK wins depends on the CPU (MKL was 1.2-1.3x faster on the Intel machine of
    benchmarks/README.md, slower on an AMD one); numpy must win by 10% to be taken, so that near-equal
    timings do not flip the choice between runs (the two differ in the last bits of the values only). numpy is
    only a candidate where its OpenBLAS is held to one thread (:func:`._threads.openblas_single_threaded`).
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
                    route = "numpy" if t_numpy < 0.9 * t_torch else "torch"  # a clear margin: no flapping
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
        from ..errors import MissingExtraError  # CBN_EIGEN_ROUTE=mixed asked for it: a missing extra, exit 10

        raise MissingExtraError("the mixed eigensolver route (CBN_EIGEN_ROUTE=mixed) needs scipy",
                                hint="pip install 'cbn-inspect[fast]'")
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
