"""Per-frequency singular values of a stride-1 grouped kernel on a grid (THEORY.md, "Per-frequency matrices").

The hot path of the tool. It uses the structure of the problem:

- real kernels: only one frequency of each conjugate pair {m, -m} is computed (their matrices are
  conjugate, so their singular values agree); the other is recorded as a multiplicity of 2;
- input or output channels that are zero at every tap (the empty polyphase components of a strided 1x1
  conv) are dropped before any decomposition and their zero singular values appended afterwards;
- a kernel with one tap (1x1, or a strided 1x1 after polyphase) has the same singular values at every
  frequency: one decomposition serves all;
- matrices with one row or one column (depthwise convs) need no decomposition: a vector norm suffices;
- groups are a batch axis, never a block-diagonal matrix;
- frequencies are processed in chunks that fit ``memory_budget_mb``, spread over the analysis threads
  (:mod:`._threads`), each chunk through one batched call.

Two ways to get the values of the ``n x c`` matrices W_hat(m) (``n <= c`` after transposing if needed):

- ``svd``: the matrices themselves (DFT by a twiddle matmul for small kernels, rfftn for large ones), then
  a batched SVD in the requested precision. ``precision="float64"`` always uses it: reference quality.
- ``gram``: the ``n x n`` Gram matrices H(m) = W_hat(m) W_hat(m)^H in float64, then a batched Hermitian
  eigensolver; sigma = sqrt(lambda). For small kernels H(m) is itself a short Fourier sum: with the tap
  products G_delta = sum_{t - s = delta} W_t W_s^T (computed once per layer, real, BLAS-3),
  H(m) = sum_delta G_delta exp(-2 pi i <m, delta / N>), so no per-frequency product over the c input
  channels is needed at all. Squaring the condition number costs about float64's eps * (sigma_max / sigma)^2
  in relative accuracy: measured at most 3e-10 for sigma above 1e-3 of the layer's largest on ResNet-50 with
  a complex128 eigensolver, against about 1e-5 to 2e-5 for a float32 SVD, with an absolute floor near
  1e-8 sigma_max (float32 SVD: about 6e-8 sigma_max). The eigensolver (:mod:`._eigen`) takes per layer the
  fastest exact route: complex128 LAPACK, or where few values are small a complex64 reduction whose small
  values are recomputed in float64, within 1e-4 of float64 (measured at most 7.4e-6 on ResNet-50). It is
  the default for ``precision="float32"`` (the accuracy class it meets): 1.2-1.5x faster than the float32
  SVD on square matrices, more on the wide ones of strided layers (benchmarks/README.md).

Pure tensor code: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..records import Spectrum
from ._eigen import hermitian_eigenvalues, layer_route, probe_pays
from ._threads import analysis_threads, openblas_single_threaded, parallel_map
from .geometry import KernelPlan

_COMPLEX = {"float32": torch.complex64, "float64": torch.complex128}
_REAL = {"float32": torch.float32, "float64": torch.float64}
METHODS = ("auto", "svd", "gram")


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


def _phases(offsets: np.ndarray, grid: tuple[int, ...], freqs: np.ndarray) -> np.ndarray:
    """2 pi <m, t / N> modulo 2 pi for every offset t (rows) and frequency m (columns), float64."""
    phase = (offsets.astype(np.float64) / np.asarray(grid, dtype=np.float64)) @ freqs.T.astype(np.float64)
    return np.mod(phase, 1.0) * (2.0 * math.pi)


def _twiddles(taps: tuple[int, ...], grid: tuple[int, ...], freqs: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """exp(-2 pi i <m, t / N>) for every tap t (rows) and frequency m (columns)."""
    phase = _phases(np.indices(taps).reshape(len(taps), -1).T, grid, freqs)
    return torch.from_numpy(np.cos(phase) - 1j * np.sin(phase)).to(dtype)


def _descending(vals: torch.Tensor) -> np.ndarray:
    """(..., g, k) per-group values -> (..., g*k) union over groups, descending, float64 numpy."""
    vals = vals.reshape(vals.shape[:-2] + (-1,))
    return torch.sort(vals, dim=-1, descending=True).values.double().cpu().numpy()


def _matrix_values(mats: torch.Tensor) -> np.ndarray:
    """Singular values of a batch (..., g, a, b) of matrices, union over groups, descending: (..., g*min(a,b))."""
    a, b = mats.shape[-2:]
    if min(a, b) == 1:
        vals = torch.linalg.vector_norm(mats, dim=(-2, -1)).unsqueeze(-1)
    else:
        vals = torch.linalg.svdvals(mats)
    return _descending(vals)


# On a GPU, torch's batched eigvalsh is one batched cuSOLVER call (syevjBatched) only for n <= 32; above that it
# loops over the batch with one syevd launch per matrix, which is launch-bound for the many small matrices of a
# layer (measured earlier on an H100: 5.4 s of 6.0 s inside eigvalsh for ResNet-50). Matrices with
# CUDA_BATCHED_MAX_N < n <= cuda_cpu_max_n() are therefore copied to the CPU and solved there by the plain
# complex128 route; the larger ones stay on the GPU, where each launch carries enough work. NOT measured on a
# GPU (none was lent to issue 20): the split point is an estimate; CBN_CUDA_CPU_MAX_N overrides it (0: all
# on the GPU).
CUDA_BATCHED_MAX_N = 32
CUDA_CPU_MAX_N = 256


def cuda_cpu_max_n() -> int:
    import os

    try:
        return int(os.environ.get("CBN_CUDA_CPU_MAX_N", CUDA_CPU_MAX_N))
    except ValueError:
        return CUDA_CPU_MAX_N


def solve_device(n: int, device_type: str) -> str:
    """Where a batch of ``n x n`` Gram matrices living on ``device_type`` is solved: ``cpu`` or that device."""
    if device_type != "cuda":
        return device_type
    return "cpu" if CUDA_BATCHED_MAX_N < n <= cuda_cpu_max_n() else "cuda"


def _hermitian_values(gram: torch.Tensor, route: str = "auto") -> np.ndarray:
    """sqrt of the eigenvalues of a batch (..., g, n, n) of Hermitian PSD matrices, union over groups, descending.

    On the CPU, complex128: the exact route ``route`` of :mod:`._eigen` (``auto``: the mixed complex64 +
    float64 Rayleigh-Ritz route where it pays, within its documented accuracy; ``plain``: complex128
    LAPACK); torch's on other devices, except the mid-sized matrices a GPU solves one launch at a time
    (:func:`solve_device`), which go to the CPU's plain route.
    """
    if gram.device.type != "cpu" and solve_device(gram.shape[-1], gram.device.type) == "cpu":
        gram = gram.cpu()
        route = "plain"
    if gram.shape[-1] == 1:
        vals = gram.real.reshape(gram.shape[:-1])
    elif gram.device.type == "cpu" and gram.dtype == torch.complex128:
        vals = torch.from_numpy(hermitian_eigenvalues(gram.numpy(), route))
    elif gram.device.type == "cpu" and openblas_single_threaded():
        vals = torch.from_numpy(np.linalg.eigvalsh(gram.numpy()))
    else:
        vals = torch.linalg.eigvalsh(gram)
    return _descending(vals.clamp_min(0).sqrt())


def _drop_zero_channels(kernel: torch.Tensor) -> torch.Tensor:
    """Remove output rows and input columns that are zero in every group and at every tap."""
    if kernel.device.type == "cpu" and kernel.numpy().all():  # no zero weight at all (the usual case): one pass
        return kernel
    taps = tuple(range(3, kernel.ndim))
    nonzero = kernel != 0
    rows = nonzero.any(dim=(0, 2) + taps)
    cols = nonzero.any(dim=(0, 1) + taps)
    if bool(rows.all()) and bool(cols.all()):
        return kernel
    return kernel[:, rows][:, :, cols]


def _chunk_size(per_frequency_bytes: int, budget_mb: int, total: int, workers: int = 1) -> int:
    """Frequencies per batched call: within the budget (shared by the workers), and enough chunks to share."""
    fit = (budget_mb * 2**20) // max(1, workers * per_frequency_bytes)
    share = math.ceil(total / (2 * workers)) if workers > 1 else total
    return int(max(1, min(total, fit, share)))


def _use_fft(taps: int, freqs: int, grid: tuple[int, ...]) -> bool:
    size = math.prod(grid)
    return taps * freqs > 4 * size * max(1.0, math.log2(size))


def _dft_source(kernel: torch.Tensor, grid: tuple[int, ...], freqs: np.ndarray, cdtype: torch.dtype) -> Callable:
    """A function (start, stop) -> W_hat(m) for those representative frequencies, shape (F, g, co, ci)."""
    g, co, ci = kernel.shape[:3]
    taps = tuple(kernel.shape[3:])
    d = len(grid)
    device = kernel.device
    if _use_fft(math.prod(taps), len(freqs), grid):
        spec = torch.fft.rfftn(kernel, s=grid, dim=tuple(range(3, 3 + d))).to(cdtype)  # (g, co, ci, *half)
        spec = spec.reshape(g * co * ci, -1)
        half_shape = grid[:-1] + (grid[-1] // 2 + 1,)
        index = torch.from_numpy(np.ravel_multi_index(freqs.T, half_shape)).to(device)

        def fft_chunk(start: int, stop: int) -> torch.Tensor:
            return spec.index_select(1, index[start:stop]).T.reshape(-1, g, co, ci)

        return fft_chunk
    flat = kernel.reshape(g * co * ci, -1).to(cdtype)

    def twiddle_chunk(start: int, stop: int) -> torch.Tensor:
        twiddle = _twiddles(taps, grid, freqs[start:stop], cdtype).to(device)
        return (flat @ twiddle).T.reshape(-1, g, co, ci)

    return twiddle_chunk


def _tap_products(kernel: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Offsets delta >= 0 (lexicographically) and the layer's tap products, ready for the Fourier sum.

    With G_delta = sum_{t-s=delta} W_t W_s^T (``kernel`` is (g, n, c, *taps), float64),
    H(m) = G_0 + sum_{delta > 0} (G + G^T)_delta cos(theta) - i (G - G^T)_delta sin(theta),
    theta = 2 pi <m, delta / N>. The products are returned as one real (2D - 1, g*n*n*2) matrix R whose
    columns interleave real and imaginary parts: rows 0..D-1 hold G_0 and (G + G^T)_delta in the real
    slots, rows D.. hold -(G - G^T)_delta in the imaginary slots, so that [cos | sin] (F, 2D - 1) @ R is
    the memory of F complex matrices H(m): no complex assembly pass, no extra copy.
    """
    g, n, c = kernel.shape[:3]
    taps = tuple(kernel.shape[3:])
    pos = np.indices(taps).reshape(len(taps), -1).T
    by_tap = kernel.reshape(g, n, c, -1).transpose(2, 3).contiguous()  # (g, n, T, c): one copy per layer
    n_taps = by_tap.shape[2]
    pairs: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for t in range(len(pos)):
        for s in range(len(pos)):
            delta = tuple(int(v) for v in pos[t] - pos[s])
            if delta >= (0,) * len(delta):
                pairs.setdefault(delta, []).append((t, s))
    offsets = sorted(pairs)
    n_off = len(offsets)
    packed = torch.empty((2 * n_off - 1, g, n, n, 2), dtype=kernel.dtype, device=kernel.device)
    packed[:n_off, ..., 1] = 0  # the slots product() leaves alone: imaginary of the cos rows, real of the sin rows
    packed[n_off:, ..., 0] = 0

    on_cpu = kernel.device.type == "cpu"

    def stacked(taps_used: list[int]) -> torch.Tensor:
        """(g, n, len * c): the taps' matrices side by side (a view when they are all of them, in order)."""
        if taps_used == list(range(n_taps)):
            return by_tap.reshape(g, n, -1)
        index = torch.tensor(taps_used, device=by_tap.device)
        return by_tap.index_select(2, index).reshape(g, n, -1)

    def product(index: int) -> None:
        ts = pairs[offsets[index]]
        left = stacked([t for t, _ in ts])
        if on_cpu:  # numpy's BLAS: a product with its own transpose (delta = 0) runs as syrk
            left_np = left.numpy()
            right_np = left_np if index == 0 else stacked([s for _, s in ts]).numpy()
            gram = torch.from_numpy(left_np @ right_np.transpose(0, 2, 1))
        else:
            gram = left @ stacked([s for _, s in ts]).transpose(-1, -2)
        if index == 0:
            packed[0, ..., 0] = gram
        else:
            packed[index, ..., 0] = gram + gram.transpose(-1, -2)
            packed[n_off + index - 1, ..., 1] = gram.transpose(-1, -2) - gram

    indices = range(n_off)
    if on_cpu:
        parallel_map(product, indices)
    else:
        for index in indices:
            product(index)
    return np.asarray(offsets, dtype=np.int64), packed.reshape(2 * n_off - 1, -1)


def _offset_gram_source(kernel: torch.Tensor, grid: tuple[int, ...], freqs: np.ndarray) -> Callable:
    """(start, stop) -> H(m) (F, g, n, n) complex128 as a Fourier sum of the layer's tap products."""
    offsets, packed = _tap_products(kernel)
    g, n = kernel.shape[:2]

    packed_np = packed.numpy() if packed.device.type == "cpu" else None

    def chunk(start: int, stop: int) -> torch.Tensor:
        phase = _phases(offsets, grid, freqs[start:stop]).T  # (F, D)
        coefficients = np.concatenate([np.cos(phase), np.sin(phase[:, 1:])], axis=1)
        if packed_np is not None:  # numpy's BLAS: faster than torch's for these thin products (benchmarks/README.md)
            return torch.from_numpy((coefficients @ packed_np).view(np.complex128).reshape(-1, g, n, n))
        product = torch.from_numpy(coefficients).to(packed.device) @ packed
        return torch.view_as_complex(product.reshape(-1, g, n, n, 2))

    return chunk


def _direct_gram_source(kernel: torch.Tensor, grid: tuple[int, ...], freqs: np.ndarray) -> Callable:
    """(start, stop) -> H(m) = W_hat(m) W_hat(m)^H (F, g, n, n) complex128 from the DFT of the kernel."""
    dft = _dft_source(kernel, grid, freqs, torch.complex128)

    def chunk(start: int, stop: int) -> torch.Tensor:
        mats = dft(start, stop)
        return mats @ mats.mH

    return chunk


def _offset_counts(taps: tuple[int, ...]) -> tuple[int, int]:
    """(offsets delta >= 0, tap pairs (t, s) with t - s >= 0) of a kernel with these tap extents."""
    n_taps = math.prod(taps)
    return (math.prod(2 * k - 1 for k in taps) + 1) // 2, (n_taps * n_taps + n_taps) // 2


def _offsets_pay(g: int, n: int, c: int, taps: tuple[int, ...], n_freq: int, budget_mb: int) -> bool:
    """Whether the tap-product Fourier sum is cheaper than a per-frequency product, and fits the budget.

    Real multiply-adds: the tap products cost one n x c x n product per pair, the Fourier sum four real
    terms per offset and frequency (real and imaginary slots, :func:`_tap_products`); the direct way a
    complex DFT and a complex n x c x n product (4 real) per frequency. Memory: the packed products (float64,
    2D - 1 rows of real and imaginary slots) must fit half the budget.
    """
    n_offsets, n_pairs = _offset_counts(taps)
    if 16 * (2 * n_offsets - 1) * g * n * n > budget_mb * 2**20 // 2:
        return False
    offset_flops = n_pairs * g * n * n * c + 4 * n_freq * n_offsets * g * n * n
    direct_flops = 4 * n_freq * math.prod(taps) * g * n * c + 4 * n_freq * g * n * n * c
    return offset_flops < direct_flops


def _single_tap_values(kernel: torch.Tensor, gram: bool) -> np.ndarray:
    """Singular values of the one real matrix (g, co, ci) of a one-tap kernel, union over groups, descending."""
    co, ci = kernel.shape[1:3]
    if not gram or min(co, ci) == 1:
        return _matrix_values(kernel.unsqueeze(0))[0]
    mats = kernel.double() if co <= ci else kernel.double().transpose(-1, -2)
    if mats.device.type == "cpu":  # numpy's BLAS sees a product with its own transpose: syrk, half the work
        flat = mats.numpy()
        gram = torch.from_numpy(flat @ flat.transpose(0, 2, 1))
    else:
        gram = mats @ mats.transpose(-1, -2)
    return _hermitian_values(gram.unsqueeze(0))[0]


@dataclass(frozen=True)
class GramLayout:
    """How the Gram path of :func:`compute_spectrum` builds and solves a layer's matrices H(m) (F, g, n, n).

    The counts route (:mod:`.counts`) uses the same layout, so a frequency it solves is solved from the
    very same bits by the very same eigensolver call as the full route: frequency 0 alone (``probe``, by
    the plain route, when the layer is probed), then chunks of ``step`` frequencies from ``first``.
    """

    source: Callable  # (start, stop) -> H(m) for those representatives, complex128 (F, g, n, n)
    step: int
    first: int
    route: str  # the eigensolver route of the chunks (_eigen.hermitian_eigenvalues)
    probe: np.ndarray | None  # (1, g*n) singular values of frequency 0 by the plain route, or None
    n_freq: int
    side: int = 0  # n: the Gram matrices' size

    def chunks(self) -> list[tuple[int, int]]:
        """(start, stop) of every chunk the full route solves, the probe's (0, 1) first when there is one."""
        head = [(0, 1)] if self.first else []
        return head + [(s, min(s + self.step, self.n_freq)) for s in range(self.first, self.n_freq, self.step)]

    def values(self, start: int, mats: np.ndarray | torch.Tensor) -> np.ndarray:
        """Singular values (descending, union over groups) of matrices of the chunk starting at ``start``,
        exactly as the full route computes them there."""
        mats = mats if isinstance(mats, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(mats))
        return _hermitian_values(mats, "plain" if (self.first and start == 0) else self.route)


def _prepared(plan: KernelPlan, device: str) -> tuple[torch.Tensor, np.ndarray, np.ndarray, int]:
    """The float64 kernel without all-zero channels, the representatives, their multiplicities, the width."""
    freqs, mult = representative_frequencies(plan.grid)
    g, co, ci = plan.kernel.shape[:3]
    kernel = _drop_zero_channels(plan.kernel.to(device=device, dtype=torch.float64))
    return kernel, freqs, mult, g * min(co, ci)


def _gram_layout(kernel: torch.Tensor, grid: tuple[int, ...], freqs: np.ndarray, memory_budget_mb: int,
                 workers: int) -> GramLayout:
    """The Gram source, chunking and eigensolver route of a multi-tap kernel with ``min(co, ci) > 1``."""
    g, co, ci = kernel.shape[:3]
    taps = tuple(kernel.shape[3:])
    n_freq = len(freqs)
    if co > ci:  # the singular values of W and W^T agree: make the Gram matrix the smaller one
        kernel = kernel.transpose(1, 2)
        co, ci = ci, co
    by_offsets = _offsets_pay(g, co, ci, taps, n_freq, memory_budget_mb)
    if by_offsets:
        source = _offset_gram_source(kernel, grid, freqs)
    else:
        source = _direct_gram_source(kernel, grid, freqs)
    # per frequency: H, the solver's copy and slack; plus W_hat(m) when direct. The packed tap products
    # take at most half the budget (_offsets_pay), the chunks in flight the other half.
    per_freq = 48 * g * co * co + (0 if by_offsets else 16 * g * co * ci)
    step = _chunk_size(per_freq, memory_budget_mb // 2 if by_offsets else memory_budget_mb, n_freq, workers)
    route, probe = "plain", None
    if kernel.device.type == "cpu" and probe_pays(co):
        # The first frequency, by the plain route, decides the layer's eigensolver route (_eigen.layer_route):
        # a choice that depends on the layer alone, not on chunks or threads.
        probe = _hermitian_values(source(0, 1), "plain")
        route = layer_route(probe[0] ** 2, co)
    return GramLayout(source=source, step=step, first=0 if probe is None else 1, route=route, probe=probe,
                      n_freq=n_freq, side=co)


def gram_layout(plan: KernelPlan, device: str = "cpu", memory_budget_mb: int = 256) -> GramLayout | None:
    """The layout the full route's default (float32-level Gram) path uses for ``plan``; None where that path
    takes no per-frequency Hermitian solves (one tap, one row or column, no channels): there the full route
    is a single solve or vector norms, cheaper than any count."""
    kernel, freqs, _, _ = _prepared(plan, device)
    _, co, ci = kernel.shape[:3]
    if min(co, ci) <= 1 or math.prod(kernel.shape[3:]) == 1:
        return None
    workers = analysis_threads() if kernel.device.type == "cpu" else 1
    return _gram_layout(kernel, plan.grid, freqs, memory_budget_mb, workers)


def compute_spectrum(
    plan: KernelPlan,
    *,
    precision: str = "float32",
    device: str = "cpu",
    memory_budget_mb: int = 256,
    method: str = "auto",
    layout: GramLayout | None = None,
) -> Spectrum:
    """Singular values of W_hat(m) at one frequency of every conjugate class of ``plan.grid``.

    ``method`` is ``svd`` or ``gram`` (module docstring); ``auto`` picks ``svd`` for float64 and ``gram``
    for float32. ``layout``: what :func:`gram_layout` gave for this plan, device and budget (the counts route
    builds it first; its tap products and probe are then not computed twice); used on the Gram path only.
    """
    if precision not in _REAL:
        raise ValueError(f"unknown precision {precision!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    gram = method == "gram" or (method == "auto" and precision == "float32")
    grid = plan.grid
    freqs, mult = representative_frequencies(grid)
    n_freq = len(freqs)
    g, co, ci = plan.kernel.shape[:3]
    width = g * min(co, ci)
    work = torch.float64 if gram else _REAL[precision]
    kernel = _drop_zero_channels(plan.kernel.to(device=device, dtype=work))
    out = np.zeros((n_freq, width), dtype=np.float64)
    _, co, ci = kernel.shape[:3]
    taps = tuple(kernel.shape[3:])
    if min(co, ci) == 0:
        return Spectrum(grid=grid, frequencies=freqs, multiplicity=mult, values=out, exact=plan.exact,
                        rank_bound=plan.rank_bound)

    if math.prod(taps) == 1:
        # One tap: W_hat(m) = phase(m) * W for every m, so every frequency has the same singular values.
        single = _single_tap_values(kernel.reshape(g, co, ci), gram)
        out[:, : len(single)] = single
        return Spectrum(grid=grid, frequencies=freqs, multiplicity=mult, values=out, exact=plan.exact,
                        rank_bound=plan.rank_bound)

    workers = analysis_threads() if kernel.device.type == "cpu" else 1
    first = 0  # frequencies before this one are already in ``out``
    if gram and min(co, ci) > 1:
        if layout is None:
            layout = _gram_layout(kernel, grid, freqs, memory_budget_mb, workers)
        if layout.probe is not None:
            out[:1, : layout.probe.shape[1]] = layout.probe
            first = 1
        step, route, source = layout.step, layout.route, layout.source

        def gram_chunk(start: int) -> np.ndarray:
            return _hermitian_values(source(start, min(start + step, n_freq)), route)

        run = gram_chunk
    else:  # direct SVD; or vector norms (one row or column), taken in float64 on the Gram path: they are cheap
        cdtype = torch.complex128 if gram else _COMPLEX[precision]
        dft = _dft_source(kernel.to(work), grid, freqs, cdtype)
        itemsize = torch.empty((), dtype=cdtype).element_size()
        step = _chunk_size(4 * g * co * ci * itemsize, memory_budget_mb, n_freq, workers)

        def svd_chunk(start: int) -> np.ndarray:
            return _matrix_values(dft(start, min(start + step, n_freq)))

        run = svd_chunk
    starts = list(range(first, n_freq, step))
    for start, vals in zip(starts, parallel_map(run, starts) if workers > 1 else map(run, starts)):
        out[start : start + len(vals), : vals.shape[1]] = vals
    return Spectrum(grid=grid, frequencies=freqs, multiplicity=mult, values=out, exact=plan.exact,
                    rank_bound=plan.rank_bound)
