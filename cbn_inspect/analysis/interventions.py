"""Interventions on a feature map, pure tensor code (THEORY.md, "What a network needs: interventions").

A probed feature map ``X`` (``B x C x N``, N = its own 1-, 2- or 3-D grid) is replaced by a filtered copy:

- **box low-pass** ``f``: keep ``X_hat(m)`` where ``|m_j|_w <= f * N_j / 2`` on every axis (``|m|_w`` the
  wrapped frequency ``min(m, n - m)``); ``f = 1/s`` is the band an ideal stride-``s`` down-sampling keeps;
- **ball low-pass** ``d``: keep degree ``<= d`` (l1 or l-inf, the tool's degree classes);
- **band-stop** ``lo..hi``: zero the degree rings ``lo..hi``, keep the rest;
- **rank truncation** ``n``: project onto the top-``n`` (frequency, direction) units ranked globally by the
  eigenvalues of the per-frequency Gram matrices of the activation profile (:class:`Directions`); a unit is
  a conjugate pair (or a self-conjugate frequency) with one eigenvector, chosen together so the result is real.

Masks are symmetric under ``m -> -m``, so filtering on the rfft half and inverting with ``irfftn`` is exact.
The DFTs run in float64 and the result is cast back to the input's dtype: the full band returns the input up
to one rounding. Also here: the output-change metrics (:class:`ChangeMeter`), the search for the smallest
band within tolerance (:func:`find_needed`) and the down-sampling advice (:func:`safe_factor`).
No I/O, no printing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..analysis.spectrum import representative_frequencies
from ..interventions.records import CurvePoint, OutputChange

EIGEN_FLOOR = 1e-10  # Gram eigenvalues below this x the largest are round-off: not directions of the data


# --- frequencies of the rfft half ---------------------------------------------------------------------------

def half_shape(grid: Sequence[int]) -> tuple[int, ...]:
    grid = tuple(int(n) for n in grid)
    return grid[:-1] + (grid[-1] // 2 + 1,)


def wrapped_half(grid: Sequence[int]) -> np.ndarray:
    """``|m_j|_w`` of every frequency of the rfft half, shape ``(*half, d)`` int64."""
    grid = tuple(int(n) for n in grid)
    axes = []
    for j, n in enumerate(grid):
        m = np.arange(n // 2 + 1) if j == len(grid) - 1 else np.arange(n)
        axes.append(np.minimum(m, n - m) if j < len(grid) - 1 else m)
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack(mesh, axis=-1).astype(np.int64)


def degree_half(grid: Sequence[int], metric: str = "l1") -> np.ndarray:
    w = wrapped_half(grid)
    return w.sum(axis=-1) if metric == "l1" else w.max(axis=-1)


def level_half(grid: Sequence[int]) -> np.ndarray:
    """The box level of every rfft-half frequency: ``max_j |m_j|_w / (N_j / 2)`` (1.0 = Nyquist)."""
    w = wrapped_half(grid).astype(np.float64)
    return (w / (np.asarray(grid, dtype=np.float64) / 2.0)).max(axis=-1)


def box_levels(grid: Sequence[int]) -> list[float]:
    """The distinct box bands of the grid, ascending (0 = frequency 0 alone, ..., 1.0 = the full band)."""
    return sorted({round(float(v), 12) for v in level_half(grid).ravel()})


def max_degree(grid: Sequence[int], metric: str = "l1") -> int:
    return int(degree_half(grid, metric).max())


def box_mask(grid: Sequence[int], band: float) -> np.ndarray:
    return level_half(grid) <= band + 1e-9


def ball_mask(grid: Sequence[int], degree: int, metric: str = "l1") -> np.ndarray:
    return degree_half(grid, metric) <= degree


def ring_mask(grid: Sequence[int], low: int, high: int, metric: str = "l1") -> np.ndarray:
    deg = degree_half(grid, metric)
    return ~((deg >= low) & (deg <= high))


def complex_count(grid: Sequence[int], mask: np.ndarray) -> int:
    """Complex frequencies of the full grid a half-grid mask stands for (mirrors counted)."""
    grid = tuple(int(n) for n in grid)
    last = np.arange(grid[-1] // 2 + 1)
    weight = np.where((last == 0) | ((grid[-1] % 2 == 0) & (last == grid[-1] // 2)), 1, 2)
    return int((mask * weight.reshape((1,) * (len(grid) - 1) + (-1,))).sum())


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.ndim))


def apply_mask(x: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """``X`` with the frequencies outside ``mask`` (rfft half, symmetric) zeroed, in ``X``'s dtype."""
    grid = tuple(x.shape[2:])
    spec = torch.fft.rfftn(x.detach().to(torch.float64), dim=_dims(x))
    keep = torch.from_numpy(np.ascontiguousarray(mask)).to(spec.device)
    out = torch.fft.irfftn(spec * keep, s=grid, dim=_dims(x))
    return out.to(x.dtype)


# --- rank truncation ----------------------------------------------------------------------------------------

@dataclass
class Directions:
    """Per-frequency eigenvectors of a feature map's Gram matrices and the global ranking of their units.

    ``vectors`` (half rows, C, C) complex128: at each rfft-half frequency the eigenvectors in descending
    eigenvalue order (a mirror row holds the conjugate of its representative's). ``units``: one row per kept
    (representative, column) -- eigenvalue, representative row, column, multiplicity (1 or 2), degree --
    sorted by eigenvalue, descending.
    """

    grid: tuple[int, ...]
    vectors: torch.Tensor
    rep_of_half: np.ndarray  # (H,) index into the representatives for every half row
    units: np.ndarray  # structured: value, rep, col, mult, degree
    channels: int
    needed_units: int | None = None  # set by the search: how many units the layer needs

    @property
    def total(self) -> int:
        """Directions the profile holds (each complex frequency counted)."""
        return int(self.units["mult"].sum())

    def rank_of(self, n: int) -> int:
        return int(self.units["mult"][:n].sum())

    def type_of(self, n: int) -> dict[int, int]:
        out: dict[int, int] = {}
        for deg, mult in zip(self.units["degree"][:n], self.units["mult"][:n]):
            out[int(deg)] = out.get(int(deg), 0) + int(mult)
        return dict(sorted(out.items()))

    def column_mask(self, n: int) -> torch.Tensor:
        """(H, C) float mask: which eigenvector columns every half row keeps with the top ``n`` units."""
        reps = int(self.rep_of_half.max()) + 1 if len(self.rep_of_half) else 0
        keep = np.zeros((reps, self.channels), dtype=np.float64)
        chosen = self.units[:n]
        keep[chosen["rep"], chosen["col"]] = 1.0
        return torch.from_numpy(keep[self.rep_of_half])

    def project(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """``X`` projected onto the top-``n`` units, in ``X``'s dtype."""
        grid = tuple(x.shape[2:])
        b, c = x.shape[0], x.shape[1]
        spec = torch.fft.rfftn(x.detach().to(torch.float64), dim=_dims(x))  # (B, C, *half)
        h = spec[0, 0].numel()
        mats = spec.reshape(b, c, h).permute(2, 1, 0)  # (H, C, B)
        u = self.vectors.to(mats.device)
        z = u.transpose(1, 2).conj() @ mats  # coordinates in the eigenbasis
        z = z * self.column_mask(n).to(z.device)[:, :, None]
        y = (u @ z).permute(2, 1, 0).reshape(spec.shape)
        return torch.fft.irfftn(y, s=grid, dim=_dims(x)).to(x.dtype)


def directions_from_gram(gram: torch.Tensor, grid: Sequence[int], metric: str = "l1") -> Directions:
    """:class:`Directions` from the rfft-half Gram sums of a :class:`~cbn_inspect.activations.GramAccumulator`
    (``acc.gram``, uncentred: the projection acts on the feature map itself, frequency 0 included)."""
    grid = tuple(int(n) for n in grid)
    half = half_shape(grid)
    reps, mult = representative_frequencies(grid)
    rep_flat = np.ravel_multi_index(reps.T, half)
    index = {int(f): i for i, f in enumerate(rep_flat)}
    freqs = np.indices(half).reshape(len(grid), -1).T
    mirror = (-freqs) % np.asarray(grid)
    rep_of_half = np.empty(len(freqs), dtype=np.int64)
    conj = np.zeros(len(freqs), dtype=bool)
    for r, (f, m) in enumerate(zip(freqs, mirror)):
        flat = int(np.ravel_multi_index(tuple(f), half))
        if flat in index:
            rep_of_half[r] = index[flat]
        else:
            rep_of_half[r] = index[int(np.ravel_multi_index(tuple(m), half))]
            conj[r] = True
    mats = gram.detach().cpu().numpy()[rep_flat]
    self_conj = mult == 1
    mats[self_conj] = mats[self_conj].real  # real Gram at self-conjugate frequencies: real eigenvectors
    values, vectors = np.linalg.eigh(mats)
    values, vectors = values[:, ::-1], vectors[:, :, ::-1]  # descending
    c = mats.shape[-1]
    top = float(values.max()) if values.size else 0.0
    deg = (np.minimum(reps, np.asarray(grid) - reps).sum(axis=1) if metric == "l1"
           else np.minimum(reps, np.asarray(grid) - reps).max(axis=1))
    rows = [(float(values[i, j]), i, j, int(mult[i]), int(deg[i]))
            for i in range(len(reps)) for j in range(c) if top > 0 and values[i, j] > EIGEN_FLOOR * top]
    units = np.array(rows, dtype=[("value", "f8"), ("rep", "i8"), ("col", "i8"), ("mult", "i8"), ("degree", "i8")])
    order = np.lexsort((units["col"], units["rep"], units["degree"], -units["value"])) if len(units) else []
    per_half = vectors[rep_of_half]
    per_half[conj] = per_half[conj].conj()
    return Directions(grid=grid, vectors=torch.from_numpy(np.ascontiguousarray(per_half)),
                      rep_of_half=rep_of_half, units=units[order], channels=c)


# --- output change ------------------------------------------------------------------------------------------

def output_kind(outputs: Sequence[torch.Tensor]) -> str:
    """``class`` (one ``(B, K)`` output, K >= 2), ``dense`` (one ``(B, K, *spatial)``, K >= 2) or ``other``."""
    if len(outputs) != 1:
        return "other"
    y = outputs[0]
    if y.ndim == 2 and y.shape[1] >= 2:
        return "class"
    if y.ndim >= 3 and y.shape[1] >= 2:
        return "dense"
    return "other"


def _probabilities(rows: torch.Tensor) -> bool:
    """Rows that are already probability vectors (non-negative, summing to 1)."""
    return bool((rows >= 0).all()) and bool(((rows.sum(1) - 1).abs() < 1e-4).all())


class ChangeMeter:
    """Streaming comparison of modified outputs with the unmodified ones, batch by batch (float64 sums)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.diff = 0.0
        self.ref = 0.0
        self.inputs = 0
        self.agree = 0
        self.kl = 0.0
        self.pos_agree = 0
        self.positions = 0

    def add(self, ref: Sequence[torch.Tensor], new: Sequence[torch.Tensor]) -> None:
        for a, b in zip(ref, new):
            a64, b64 = a.detach().to(torch.float64).cpu(), b.detach().to(torch.float64).cpu()
            self.diff += float(((b64 - a64) ** 2).sum())
            self.ref += float((a64 ** 2).sum())
        self.inputs += int(ref[0].shape[0]) if ref and ref[0].ndim else 0
        if self.kind == "class":
            a, b = ref[0].detach().to(torch.float64).cpu(), new[0].detach().to(torch.float64).cpu()
            self.agree += int((a.argmax(1) == b.argmax(1)).sum())
            if _probabilities(a):  # the model ends in a softmax: its outputs are the distributions
                p, logq = a.clamp_min(1e-12).log(), b.clamp_min(1e-12).log()
            else:  # logits
                p, logq = torch.log_softmax(a, 1), torch.log_softmax(b, 1)
            self.kl += float((p.exp() * (p - logq)).sum())
        elif self.kind == "dense":
            a, b = ref[0].detach().cpu(), new[0].detach().cpu()
            self.pos_agree += int((a.argmax(1) == b.argmax(1)).sum())
            self.positions += int(a.argmax(1).numel())

    def result(self, part: str, max_change: float, min_agreement: float) -> OutputChange:
        if self.ref > 0:
            rel = math.sqrt(self.diff / self.ref)
        else:
            rel = 0.0 if self.diff == 0 else math.inf
        if not math.isfinite(rel):
            rel = math.inf
        agreement = self.agree / self.inputs if self.kind == "class" and self.inputs else None
        kl = self.kl / self.inputs if self.kind == "class" and self.inputs else None
        if kl is not None and not math.isfinite(kl):
            kl = math.inf
        if kl is not None:
            kl = max(kl, 0.0)  # KL >= 0: a negative sum is round-off between equal distributions
        dense = self.pos_agree / self.positions if self.kind == "dense" and self.positions else None
        holds = rel <= max_change and (agreement is None or agreement >= min_agreement)
        return OutputChange(relative_l2=rel, inputs=self.inputs, part=part, holds=bool(holds),
                            top1_agreement=agreement, kl=kl, argmax_agreement=dense)


# --- searches -----------------------------------------------------------------------------------------------

SCAN_LIMIT = 64  # a non-monotone curve is scanned in full when it has at most this many candidates


@dataclass(frozen=True)
class Search:
    """What :func:`find_needed` found: the needed candidate index (None: even the last fails)."""

    needed: int | None
    points: tuple[tuple[int, OutputChange], ...]
    search: str
    monotone: bool
    notes: tuple[str, ...]


def find_needed(count: int, evaluate: Callable[[int], OutputChange], *, seeds: Sequence[int] = (),
                known: dict[int, OutputChange] | None = None, scan_limit: int = SCAN_LIMIT) -> Search:
    """The smallest candidate index in ``0..count-1`` whose change holds, candidates ordered by kept band.

    Bisection between the largest failing index measured and the smallest holding one above it, assuming the change does
    not grow with the band (more kept, closer to the original). ``seeds`` are measured first (points on the
    curve worth having anyway); ``known`` are measurements already made. When the measured points contradict
    monotonicity (a holding band below a failing one), every candidate is measured if there are at most
    ``scan_limit``, and the needed band is the smallest from which every larger one holds.
    """
    results: dict[int, OutputChange] = dict(known or {})

    def ev(i: int) -> OutputChange:
        if i not in results:
            results[i] = evaluate(i)
        return results[i]

    if count <= 0:
        return Search(None, (), "none", True, ("no candidate",))
    if not ev(count - 1).holds:
        return Search(None, tuple(sorted(results.items())), "bisection", True,
                      ("even the largest band changes the outputs beyond the tolerance",))
    ev(0)
    for s in seeds:
        if 0 <= s < count:
            ev(s)

    def bracket() -> tuple[int, int]:
        # from the top: the largest failing band measured, and the smallest holding band above it
        lo = max((i for i, r in results.items() if not r.holds), default=-1)
        hi = min(i for i, r in results.items() if r.holds and i > lo)
        return lo, hi

    lo, hi = bracket()
    while hi - lo > 1:
        ev((lo + hi) // 2)
        lo, hi = bracket()
    consistent = all(r.holds == (i >= hi) for i, r in results.items())
    falling = _falling(results)
    if consistent and falling:
        return Search(hi, tuple(sorted(results.items())), "bisection", True, ())
    notes = ["the change is not monotone in the band: a smaller band held where a larger one did not"
             if not consistent else
             "the change is not monotone in the band: it rises again where more of the band is kept"]
    search = "bisection"
    if count <= scan_limit:
        for i in range(count):
            ev(i)
        search = "scan"
        notes.append(f"every one of the {count} candidates measured (scan)")
    else:
        notes.append(f"{count} candidates: too many to scan; the answer is the smallest band from which every "
                     "measured larger band holds")
    needed = count - 1
    for i in sorted(results, reverse=True):
        if not results[i].holds:
            break
        needed = i
    return Search(needed, tuple(sorted(results.items())), search, False, tuple(notes))


def _falling(results: dict[int, OutputChange], slack: float = 0.1) -> bool:
    """Whether the measured changes do not grow with the kept band (up to ``slack`` of the larger value, and
    round-off below 1e-6): a curve that rises again is not monotone even where the hold/fail calls agree."""
    changes = [results[i].relative_l2 for i in sorted(results)]
    return all(b <= a * (1 + slack) + 1e-6 for a, b in zip(changes, changes[1:]))


def curve_points(values: Sequence[float], search: Search) -> tuple[CurvePoint, ...]:
    return tuple(CurvePoint(value=float(values[i]), change=change) for i, change in search.points)


# --- rings and advice ---------------------------------------------------------------------------------------

def ring_groups(top_degree: int, max_rings: int) -> list[tuple[int, int]]:
    """Degrees ``0..top_degree`` one ring at a time, or in ``max_rings`` groups of equal width when more."""
    rings = top_degree + 1
    if rings <= max_rings:
        return [(d, d) for d in range(rings)]
    width = math.ceil(rings / max_rings)
    return [(lo, min(lo + width - 1, top_degree)) for lo in range(0, rings, width)]


def safe_factor(grid: Sequence[int], needed_band: float | None) -> int:
    """The largest down-sampling factor s whose band ``1/s`` keeps ``needed_band``, at most the shortest axis
    longer than 1 (axes of length 1 are not down-sampled). A factor dividing every such axis is preferred: s
    is the largest divisor when one holds the band, else the largest factor (which rounds a grid up)."""
    if needed_band is None:
        return 1
    axes = [int(n) for n in grid if int(n) > 1]
    if not axes:
        return 1
    fits = [s for s in range(2, min(axes) + 1) if 1.0 / s + 1e-9 >= needed_band]
    dividing = [s for s in fits if all(n % s == 0 for n in axes)]
    return max(dividing) if dividing else (max(fits) if fits else 1)


def format_type(counts: dict[int, int] | None) -> str:
    """``3 @ deg 0, 4 @ deg 1``."""
    if not counts:
        return "-"
    items = sorted(counts.items())
    if len(items) > 4:
        return f"{', '.join(f'{v} @ deg {k}' for k, v in items[:3])}, ... ({len(items)} degrees, up to {items[-1][0]})"
    return ", ".join(f"{v} @ deg {k}" for k, v in items)
