"""The counts route: a layer's counts above a threshold without every singular value (issue 20).

The relative and absolute tolerance rules need, per frequency, only *how many* eigenvalues of the Gram
matrix H(m) = W_hat(m) W_hat(m)^H lie above ``t = threshold^2``, and the soft measures stable rank and
energy per degree need only traces and the layer's largest value. This module gets exactly those, and the
full route's answers, at the cost of one LDL^T factorisation per matrix instead of a Hermitian eigensolve:

1. **Layout.** The matrices are built with the full route's own layout (:class:`.spectrum.GramLayout`:
   same source, same chunks, same probe, same eigensolver route), so any frequency this route *solves* is
   solved from the same bits by the same call as the full route, and gives the same values.
2. **Largest value, certified.** Pass 1 takes the traces and, per frequency, a lower bound (the Rayleigh
   quotient after two power steps, or the largest diagonal entry) and an upper bound (the Frobenius norm, or
   the trace) on lambda_max. The probe and the frequency with the largest lower bound are solved exactly
   (and any whose lower bound comes within CERT_MARGIN of the result): candidate L. Every other frequency
   must be shown to hold nothing above ``L (1 - CERT_MARGIN)``: by its upper bound, or else by a complex64
   Cholesky factorisation of ``L (1 - CERT_MARGIN) I - H(m)`` (it succeeds only if the matrix is positive
   definite up to a backward error of a modest multiple of sqrt(n) eps32 L, far inside the 1e-3 margin).
   A frequency that fails is solved exactly and may raise L; the rest are checked again at the new level. So the
   largest value is the full route's, bit for bit: it comes from one of the solved frequencies, and every
   frequency whose value could be within the full route's round-off of it was solved.
3. **Counts by inertia.** Sylvester's law of inertia: the number of eigenvalues of H(m) above t is the
   number of positive eigenvalues of D in ``H(m) - t I = P L D L^H P^T`` (LAPACK ``zhetrf``, Bunch-Kaufman,
   through scipy one matrix at a time, or ``torch.linalg.ldl_factor_ex`` batched where scipy is missing); D has 1x1 and 2x2 blocks, a 2x2 block
   ``[[a, conj(b)], [b, c]]`` holds two positive eigenvalues when ``ac - |b|^2 > 0`` and ``a + c > 0``, one
   when ``ac - |b|^2 < 0``.
4. **Ties** (the documented rule): a value within ``band = 64 n eps lambda_max`` of the threshold (in lambda),
   plus ``TIE_BAND t`` on layers the full route solves by the mixed eigensolver, is a *tie*: its side of the
   threshold is decided by the full route's own eigensolver, never by the factorisation. The band covers the
   full route's round-off (complex128 LAPACK's; the mixed route's documented 1e-4 relative on singular
   values, :mod:`._eigen`, five times over). A frequency may hold a tie when four steps of inverse iteration
   with the LDL^T factors (from a fixed pseudo-random start) show ``||(H - t I)^-1|| >= 1 / (10 band)``; such a
   frequency is solved exactly and counted from its values, like the full route. A tie escapes detection
   only if the start vector is within 1e-4 of orthogonal to the eigenvector at the threshold (probability
   about n 1e-8 per tie). So the counts equal the full route's, ties included.

Where the layout does not apply (one tap, one row or column: a single solve or vector norms serve all
frequencies), a threshold of zero, or a zero layer, :func:`compute_counts` returns None and the caller takes
the full route, which is as cheap there; unless forced, also where the route does not pay (fewer than
MIN_FREQUENCIES frequencies, Gram matrices smaller than MIN_SIDE, or a layer on the mixed eigensolver).
Pure tensor code: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..records import ToleranceRule
from ._eigen import _scipy_lapack
from ._threads import analysis_threads, parallel_map
from .geometry import KernelPlan
from .spectrum import GramLayout, _prepared, gram_layout

CERT_MARGIN = 1e-3  # relative, in lambda: frequencies within this of the candidate largest value are solved
POWER_STEPS = 3
TIE_BAND = 1e-3  # relative, in lambda: values this close to the threshold are ties (decided by the eigensolver)
ABS_BAND = 64.0  # absolute part of the band, in units of n * eps64 * lambda_max
INVERSE_STEPS = 4
DETECT_FACTOR = 10.0
CANDIDATES = 1  # frequencies solved first for the candidate largest value (largest lower bound), besides the probe
MIN_FREQUENCIES = 64
# Gram matrices smaller than this go to the full route unless forced. One thread, ResNet-50 at 224
# (benchmarks/bench_counts_parts.py): the inertia alone costs 0.47x the eigensolve at n = 64 and 3.8x at
# n = 12 (per-matrix calls), so the whole route costs what the full one does or more there (0.37 s against
# 0.34 s; the stem 0.23 s against 0.05 s); at n = 128 the inertia is 0.33x and the route pays.
MIN_SIDE = 96
_EPS64 = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class FrequencyCounts:
    """What the counts route knows of a layer: per representative frequency (rows as in ``Spectrum``)."""

    grid: tuple[int, ...]
    frequencies: np.ndarray  # (F, d) int64
    multiplicity: np.ndarray  # (F,) int64
    counts: np.ndarray  # (F,) int64: singular values above the threshold, union over groups
    energy: np.ndarray  # (F,) float64: sum of squared singular values (the trace of H(m))
    vmax: float  # the largest singular value of the layer (the full route's, bit for bit)
    threshold: float  # the threshold on singular values
    width: int  # singular values per frequency the layer can hold (as Spectrum.width)
    solved: int  # frequencies solved exactly (candidates, certification failures, ties)
    ties: int  # frequencies solved because a value lay within the tie band of the threshold
    # the smallest kept and the largest discarded value among the solved frequencies (None where they hold
    # none): bounds on the layer's own, which give bounds on its gap ratio (counting.metrics_from_counts)
    kept_floor: float | None = None
    discarded_ceiling: float | None = None

    @property
    def capacity(self) -> int:
        return int(self.multiplicity.sum()) * self.width


def positive_counts(ld: np.ndarray, pivots: np.ndarray) -> np.ndarray:
    """Positive eigenvalues of D for a batch of LAPACK ``?hetrf`` (lower) factors: ``ld`` (B, n, n) holds D on
    its diagonal and the 2x2 blocks' off-diagonal below it; ``pivots`` (B, n) marks a 2x2 block at k, k+1 by
    two negative entries. Returns (B,) int64."""
    d = np.real(np.diagonal(ld, axis1=-2, axis2=-1))
    return _positive(d, np.abs(np.diagonal(ld, offset=-1, axis1=-2, axis2=-1)), pivots)


def _positive(d: np.ndarray, b: np.ndarray, pivots: np.ndarray) -> np.ndarray:
    """:func:`positive_counts` from D's diagonal ``d`` (B, n), the magnitudes ``b`` (B, n - 1) below it, pivots."""
    n = d.shape[-1]
    negative = pivots < 0
    start = np.zeros_like(negative)
    if negative.any():
        for k in range(n - 1):  # a block starts at a negative pivot that is not the second row of the previous one
            start[:, k] = negative[:, k] & ~(start[:, k - 1] if k else False)
    second = np.zeros_like(negative)
    second[:, 1:] = start[:, :-1]
    single = ~(start | second)
    count = np.count_nonzero(single & (d > 0), axis=-1)
    if start.any():
        a, c = d[:, :-1], d[:, 1:]
        det = a * c - b * b
        trace = a + c
        block = np.where(det > 0, np.where(trace > 0, 2, 0), np.where(det < 0, 1, (trace > 0).astype(np.int64)))
        count = count + np.where(start[:, :-1], block, 0).sum(axis=-1)
    return count.astype(np.int64)


def _start_vector(n: int) -> torch.Tensor:
    rng = np.random.default_rng(20)
    x = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    return torch.from_numpy(x / np.linalg.norm(x)).reshape(n, 1)


def inertia(mats: torch.Tensor, shift: float, band: float) -> tuple[np.ndarray, np.ndarray]:
    """For a batch (B, n, n) of Hermitian complex128 matrices: how many eigenvalues lie above ``shift``, and
    whether one may lie within ``band`` of it (a tie: module docstring, step 4). Returns ((B,), (B,) bool)."""
    batch, n = mats.shape[0], mats.shape[-1]
    lapack = _scipy_lapack()
    if lapack is not None:
        return _inertia_scipy(lapack, mats.numpy(), shift, band)
    shifted = mats.clone()
    torch.diagonal(shifted, dim1=-2, dim2=-1).sub_(shift)
    ld, pivots, info = torch.linalg.ldl_factor_ex(shifted, hermitian=True)
    del shifted
    counts = positive_counts(ld.numpy(), pivots.numpy())
    x = _start_vector(n).expand(batch, n, 1)
    log_growth = np.zeros(batch)
    with np.errstate(all="ignore"):
        for _ in range(INVERSE_STEPS):
            x = torch.linalg.ldl_solve(ld, pivots, x, hermitian=True).numpy()
            norm = np.sqrt(np.einsum("bij,bij->b", x.view(np.float64), x.view(np.float64)))
            log_growth += np.log(norm)
            x = torch.from_numpy(x / norm.reshape(-1, 1, 1))
        growth = np.exp(log_growth / INVERSE_STEPS)
    tie = ~np.isfinite(growth) | (growth * DETECT_FACTOR * band >= 1.0) | (info.numpy() != 0)
    return counts, tie


def _inertia_scipy(lapack, mats: np.ndarray, shift: float, band: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`inertia` by scipy's ``zhetrf``/``zhetrs``, one matrix at a time: faster than torch's batched
    calls at these sizes (no batch copies). Each C-ordered H is factored as its Fortran view conj(H), which
    has the same eigenvalues."""
    batch, n = mats.shape[0], mats.shape[-1]
    diag = np.empty((batch, n))
    below = np.zeros((batch, max(n - 1, 0)))
    pivots = np.empty((batch, n), dtype=np.int64)
    tie = np.zeros(batch, dtype=bool)
    start = _start_vector(n).numpy()
    lwork = max(1, 64 * n)
    for k in range(batch):
        shifted = mats[k].T.copy(order="F")
        shifted[np.diag_indices(n)] -= shift
        ld, ipiv, info = lapack.zhetrf(shifted, lower=1, lwork=lwork, overwrite_a=1)
        diag[k] = np.real(np.diagonal(ld))
        pivots[k] = ipiv
        if (ipiv < 0).any():
            below[k] = np.abs(np.diagonal(ld, offset=-1))
        if info != 0:
            tie[k] = True
            continue
        x, log_growth = start, 0.0
        with np.errstate(all="ignore"):
            for _ in range(INVERSE_STEPS):
                x, info = lapack.zhetrs(ld, ipiv, x, lower=1)
                norm = float(np.linalg.norm(x))
                log_growth += np.log(norm) if norm > 0 else np.inf
                x = x / norm
            growth = np.exp(log_growth / INVERSE_STEPS)
        tie[k] = not np.isfinite(growth) or growth * DETECT_FACTOR * band >= 1.0
    return _positive(diag, below, pivots), tie


def _not_below(mats: torch.Tensor, level: float) -> np.ndarray:
    """For (..., n, n) Hermitian matrices: True where the complex64 Cholesky factorisation of ``level I - H``
    fails, i.e. where H may hold an eigenvalue at or above ``level`` (shape ``mats.shape[:-2]``)."""
    n = mats.shape[-1]
    lapack = _scipy_lapack()
    if lapack is None:
        shifted = mats.reshape(-1, n, n).to(torch.complex64).neg_()
        torch.diagonal(shifted, dim1=-2, dim2=-1).add_(level)
        _, info = torch.linalg.cholesky_ex(shifted)
        return (info != 0).numpy().reshape(mats.shape[:-2])
    array = np.empty((int(np.prod(mats.shape[:-2])), n, n), dtype=np.complex64)
    np.negative(mats.numpy().reshape(-1, n, n), out=array, casting="same_kind")  # one pass: convert and negate
    array.reshape(-1, n * n)[:, :: n + 1] += np.float32(level)
    failed = np.empty(array.shape[0], dtype=bool)
    for k in range(array.shape[0]):  # scipy's cpotrf: about twice as fast as torch's batched call at n = 64
        failed[k] = lapack.cpotrf(array[k].T, lower=1, overwrite_a=1)[1] != 0
    return failed.reshape(mats.shape[:-2])


def _bounds(mats: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per matrix of (f, g, n, n): the trace, a lower bound on lambda_max (``||H x||`` for the unit vector x
    after POWER_STEPS - 1 power steps from a fixed start, or the largest diagonal entry if more: for a unit x,
    ``||H x|| <= lambda_max``) and an upper bound (the Frobenius norm, or the trace if less). POWER_STEPS + 1
    passes over the matrices (the products and the Frobenius norm), as many as the Rayleigh quotient after
    POWER_STEPS - 1 steps would take, and ``||H x_2|| = sqrt(m6 / m4) >= m5 / m4`` (m_k = x0^H H^k x0) is at
    least that quotient; numpy's batched matmul, faster than einsum here."""
    array = mats.numpy()
    n = array.shape[-1]
    diag = np.real(np.diagonal(array, axis1=-2, axis2=-1))
    trace = diag.sum(axis=-1)
    flat = array.view(np.float64).reshape(-1, 2 * n * n)
    frobenius = np.sqrt(np.einsum("bi,bi->b", flat, flat))
    x = np.broadcast_to(_start_vector(n).numpy().reshape(n, 1), array.shape[:-2] + (n, 1))
    for _ in range(POWER_STEPS):
        x = np.matmul(array, x)
        norm = np.linalg.norm(x, axis=(-2, -1))
        x = x / np.maximum(norm, 1e-300)[..., None, None]
    lower = np.maximum(norm, diag.max(axis=-1))
    return trace, lower, np.minimum(frobenius.reshape(trace.shape), np.maximum(trace, 0.0))


def _threshold(rule: ToleranceRule, vmax: float) -> float:
    return rule.value * vmax if rule.name == "relative" else rule.value


def _setting(name: str, default: int) -> int:
    import os

    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def min_frequencies() -> int:
    """MIN_FREQUENCIES, or the environment variable CBN_COUNTS_MIN_FREQUENCIES (tests, benchmarks)."""
    return _setting("CBN_COUNTS_MIN_FREQUENCIES", MIN_FREQUENCIES)


def min_side() -> int:
    """MIN_SIDE, or the environment variable CBN_COUNTS_MIN_SIDE (tests, benchmarks)."""
    return _setting("CBN_COUNTS_MIN_SIDE", MIN_SIDE)


def compute_counts(plan: KernelPlan, rule: ToleranceRule, *, memory_budget_mb: int = 256,
                   force: bool = False, layout: GramLayout | None = None) -> FrequencyCounts | None:
    """The counts route for one layer (module docstring); None where the full route should run instead.

    Unless ``force``, also None where the counts route does not pay (measured, benchmarks/bench_counts.py):
    fewer than MIN_FREQUENCIES frequencies (the candidate and certification solves are then a large share of
    the full route's), Gram matrices smaller than MIN_SIDE, or a layer the full route solves by the mixed
    eigensolver (already about half a plain solve)."""
    if rule.name not in ("relative", "absolute"):
        raise ValueError(f"the counts route serves the relative and absolute rules, not {rule.name!r}")
    layout = layout if layout is not None else gram_layout(plan, "cpu", memory_budget_mb)
    if layout is None:
        return None
    if not force and (layout.route != "plain" or layout.n_freq < min_frequencies() or layout.side < min_side()):
        return None
    _, freqs, mult, width = _prepared(plan, "cpu")
    if plan.rank_bound is not None:
        width = min(width, plan.rank_bound)
    return _count_layer(layout, plan.grid, freqs, mult, width, rule, memory_budget_mb)


def _count_layer(layout: GramLayout, grid: tuple[int, ...], freqs: np.ndarray, mult: np.ndarray, width: int,
                 rule: ToleranceRule, memory_budget_mb: int) -> FrequencyCounts | None:
    chunks = layout.chunks()
    n_freq = layout.n_freq
    first = layout.source(0, 1)
    g, n = first.shape[1], first.shape[-1]
    keep = n_freq * g * n * n * 16 <= memory_budget_mb * 2**20 // 2  # hold the matrices for pass 2
    workers = analysis_threads()

    def pass1(chunk: tuple[int, int]):
        mats = first if chunk == (0, 1) else layout.source(*chunk)
        trace, lower, upper = _bounds(mats)
        return trace.sum(axis=1), lower.max(axis=1), upper.max(axis=1), (mats if keep else None)

    results = parallel_map(pass1, chunks) if workers > 1 else [pass1(c) for c in chunks]
    energy = np.concatenate([r[0] for r in results])
    lower = np.concatenate([r[1] for r in results])
    upper = np.concatenate([r[2] for r in results])
    held = {c: r[3] for c, r in zip(chunks, results)}
    chunk_of = np.concatenate([np.full(b - a, k) for k, (a, b) in enumerate(chunks)])

    def matrices(chunk: tuple[int, int]) -> torch.Tensor:
        mats = held.get(chunk)
        return mats if mats is not None else layout.source(*chunk)

    solved: dict[int, np.ndarray] = {}  # frequency -> its singular values by the full route's own call

    def solve(indices) -> None:
        by_chunk: dict[int, list[int]] = {}
        for i in indices:
            if int(i) not in solved:
                by_chunk.setdefault(int(chunk_of[i]), []).append(int(i))
        for k, members in by_chunk.items():
            a, b = chunks[k]
            if layout.probe is not None and (a, b) == (0, 1):
                solved[0] = layout.probe[0]
                continue
            mats = matrices((a, b))
            values = layout.values(a, mats[[i - a for i in members]])
            for i, row in zip(members, values):
                solved[i] = row

    # the candidate largest value: the probe and the frequencies with the largest bounds
    top = min(CANDIDATES, n_freq)
    if layout.probe is not None:
        solved[0] = layout.probe[0]
    solve(np.argsort(-lower, kind="stable")[:top])
    lam = max(float(row[0]) if row.size else 0.0 for row in solved.values()) ** 2
    solve(np.flatnonzero(lower >= lam * (1.0 - CERT_MARGIN)))  # these hold a value that close: solve them anyway
    vmax = max(float(row[0]) if row.size else 0.0 for row in solved.values())
    lam = vmax * vmax
    if not lam > 0.0:
        return None  # a zero layer: the full route reports it (no threshold to count against)
    # certify: no other frequency holds a value within CERT_MARGIN of the candidate. A complex64 Cholesky
    # factorisation of L (1 - CERT_MARGIN) I - H(m) that succeeds shows it (its backward error, a modest
    # multiple of sqrt(n) eps32 L, is far inside the margin); the frequencies where it fails are solved,
    # the most promising first (by their lower bound), and the rest checked again at the raised level.
    doubtful = [int(i) for i in np.flatnonzero(upper >= lam * (1.0 - CERT_MARGIN)) if int(i) not in solved]
    while doubtful:
        level = lam * (1.0 - CERT_MARGIN)
        by_chunk: dict[int, list[int]] = {}
        for i in doubtful:
            if upper[i] >= level:
                by_chunk.setdefault(int(chunk_of[i]), []).append(i)
        items = list(by_chunk.items())

        def check(item: tuple[int, list[int]], level: float = level) -> list[int]:
            k, members = item
            a = chunks[k][0]
            mats = matrices(chunks[k])
            if len(members) < mats.shape[0]:
                mats = mats[[i - a for i in members]]
            failed = _not_below(mats, level).reshape(len(members), -1).any(axis=1)
            return [i for i, bad in zip(members, failed) if bad]

        failed = [i for part in (parallel_map(check, items) if workers > 1 else map(check, items)) for i in part]
        if not failed:
            break
        failed.sort(key=lambda i: -lower[i])
        solve([i for i in failed if lower[i] >= level] or failed[:2])
        lam = max(float(row[0]) if row.size else 0.0 for row in solved.values()) ** 2
        doubtful = [i for i in failed if i not in solved]
    vmax = max(float(row[0]) if row.size else 0.0 for row in solved.values())
    lam = vmax * vmax
    threshold = _threshold(rule, vmax)
    if not threshold > 0.0:
        return None
    shift = threshold * threshold
    # the full route's round-off: complex128 LAPACK's (absolute, tiny) on the plain route; the mixed route's
    # documented 1e-4 relative (refined or not) covered TIE_BAND / 2e-4 = 5 times where the layer takes it
    band = ABS_BAND * n * _EPS64 * lam + (TIE_BAND * shift if layout.route != "plain" else 0.0)

    def count(k: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = chunks[k]
        if layout.probe is not None and (a, b) == (0, 1):
            return np.zeros(1, dtype=np.int64), np.ones(1, dtype=bool)  # the probe is solved already
        mats = matrices(chunks[k])
        f = b - a
        counts, tie = inertia(mats.reshape(f * g, n, n), shift, band)
        return counts.reshape(f, g).sum(axis=1), tie.reshape(f, g).any(axis=1)

    parts = parallel_map(count, range(len(chunks))) if workers > 1 else [count(k) for k in range(len(chunks))]
    counts = np.concatenate([p[0] for p in parts])
    tie = np.concatenate([p[1] for p in parts])
    ties = [i for i in np.flatnonzero(tie) if int(i) not in solved]
    n_ties = len(ties) - (1 if layout.probe is not None and 0 in ties else 0)
    solve(ties)
    kept_floor = discarded_ceiling = None
    for i, row in solved.items():  # exactly the full route's count for these: its own values
        row = row[:width]
        kept = (row > threshold) & (row > 0)
        counts[i] = int(np.count_nonzero(kept))
        if kept.any():
            low = float(row[kept].min())
            kept_floor = low if kept_floor is None else min(kept_floor, low)
        if not kept.all():
            high = float(row[~kept].max())
            discarded_ceiling = high if discarded_ceiling is None else max(discarded_ceiling, high)
    return FrequencyCounts(grid=tuple(grid), frequencies=freqs, multiplicity=mult, counts=counts,
                           energy=energy, vmax=vmax, threshold=threshold, width=width, solved=len(solved),
                           ties=max(n_ties, 0), kept_floor=kept_floor, discarded_ceiling=discarded_ceiling)
