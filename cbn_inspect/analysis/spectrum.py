"""Per-frequency singular values of a stride-1 grouped kernel on a grid (THEORY.md, "Per-frequency matrices").

The hot path of the tool. It uses the structure of the problem:

- real kernels: only one frequency of each conjugate pair {m, -m} is computed (their matrices are
  conjugate, so their singular values agree); the other is recorded as a multiplicity of 2;
- a kernel with one tap (1x1, or a strided 1x1 after polyphase) has the same singular values at every
  frequency: one SVD serves all;
- matrices with one row or one column (depthwise convs) need no SVD: a vector norm suffices;
- groups are a batch axis, never a block-diagonal matrix;
- frequencies are processed in chunks that fit ``memory_budget_mb``, each chunk through one batched call.

The DFT of a small kernel is a matrix product with the twiddle factors of its few taps; a large kernel
(full-size circular layers) goes through an FFT instead. Pure tensor code: no I/O.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..records import Spectrum
from .geometry import KernelPlan

_COMPLEX = {"float32": torch.complex64, "float64": torch.complex128}
_REAL = {"float32": torch.float32, "float64": torch.float64}


def representative_frequencies(grid: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One frequency per conjugate class {m, -m} of the grid, and the class size (1 or 2).

    The representative is the member whose last coordinate lies in [0, n_d / 2] (so an rfft holds it),
    the smaller flat index where both do.
    """
    grid_arr = np.asarray(grid, dtype=np.int64)
    freqs = np.indices(grid).reshape(len(grid), -1).T.astype(np.int64)
    mirror = (-freqs) % grid_arr
    flat = np.ravel_multi_index(freqs.T, grid)
    mirror_flat = np.ravel_multi_index(mirror.T, grid)
    half = grid_arr[-1] // 2
    in_half = freqs[:, -1] <= half
    mirror_in_half = mirror[:, -1] <= half
    keep = in_half & (~mirror_in_half | (flat <= mirror_flat))
    multiplicity = np.where(flat == mirror_flat, 1, 2)[keep]
    return freqs[keep], multiplicity.astype(np.int64)


def _twiddles(taps: tuple[int, ...], grid: tuple[int, ...], freqs: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """exp(-2 pi i <m, t / N>) for every tap t (rows) and frequency m (columns)."""
    tap_idx = np.indices(taps).reshape(len(taps), -1).T.astype(np.float64)  # (T, d)
    phase = (tap_idx / np.asarray(grid, dtype=np.float64)) @ freqs.T.astype(np.float64)  # (T, F)
    phase = np.mod(phase, 1.0) * (-2.0 * math.pi)
    return torch.from_numpy(np.cos(phase) + 1j * np.sin(phase)).to(dtype)


def _matrix_values(mats: torch.Tensor) -> torch.Tensor:
    """Singular values of a batch (..., g, a, b) of matrices, union over groups, descending: (..., g*min(a,b))."""
    a, b = mats.shape[-2:]
    if min(a, b) == 1:
        vals = torch.linalg.vector_norm(mats, dim=(-2, -1)).unsqueeze(-1)
    else:
        vals = torch.linalg.svdvals(mats)
    vals = vals.reshape(vals.shape[:-2] + (-1,))
    return torch.sort(vals, dim=-1, descending=True).values


def _chunk_size(per_frequency_bytes: int, budget_mb: int, total: int) -> int:
    return max(1, min(total, (budget_mb * 2**20) // max(1, 4 * per_frequency_bytes)))


def _use_fft(taps: int, freqs: int, grid: tuple[int, ...]) -> bool:
    size = math.prod(grid)
    return taps * freqs > 4 * size * max(1.0, math.log2(size))


def compute_spectrum(
    plan: KernelPlan,
    *,
    precision: str = "float32",
    device: str = "cpu",
    memory_budget_mb: int = 256,
) -> Spectrum:
    """Singular values of W_hat(m) at one frequency of every conjugate class of ``plan.grid``."""
    grid = plan.grid
    d = len(grid)
    cdtype, rdtype = _COMPLEX[precision], _REAL[precision]
    kernel = plan.kernel.to(device=device, dtype=rdtype)
    g, co, ci = kernel.shape[:3]
    taps = tuple(kernel.shape[3:])
    freqs, mult = representative_frequencies(grid)
    n_freq = len(freqs)

    if math.prod(taps) == 1:
        # One tap: W_hat(m) = phase(m) * W for every m, so every frequency has the same singular values.
        single = _matrix_values(kernel.reshape(1, g, co, ci).to(rdtype))
        values = np.broadcast_to(single.double().cpu().numpy(), (n_freq, single.shape[-1]))
        return Spectrum(grid=grid, frequencies=freqs, multiplicity=mult, values=values, exact=plan.exact)

    flat = kernel.reshape(g * co * ci, -1).to(cdtype)
    itemsize = torch.empty((), dtype=cdtype).element_size()
    per_freq = g * co * ci * itemsize
    step = _chunk_size(per_freq, memory_budget_mb, n_freq)
    out = np.empty((n_freq, g * min(co, ci)), dtype=np.float64)

    if _use_fft(flat.shape[1], n_freq, grid):
        spec = torch.fft.rfftn(kernel, s=grid, dim=tuple(range(3, 3 + d)))  # (g, co, ci, *half grid)
        spec = spec.reshape(g * co * ci, -1)
        half_shape = grid[:-1] + (grid[-1] // 2 + 1,)
        index = torch.from_numpy(np.ravel_multi_index(freqs.T, half_shape)).to(device)
        for start in range(0, n_freq, step):
            cols = spec.index_select(1, index[start : start + step])
            mats = cols.T.reshape(-1, g, co, ci)
            out[start : start + step] = _matrix_values(mats).double().cpu().numpy()
    else:
        for start in range(0, n_freq, step):
            twiddle = _twiddles(taps, grid, freqs[start : start + step], cdtype).to(device)
            mats = (flat @ twiddle).T.reshape(-1, g, co, ci)
            out[start : start + step] = _matrix_values(mats).double().cpu().numpy()
    return Spectrum(grid=grid, frequencies=freqs, multiplicity=mult, values=out, exact=plan.exact)
