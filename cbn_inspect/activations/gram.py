"""Streaming per-frequency Gram matrices of a feature map (THEORY.md, "From activations").

For B inputs, a conv layer's feature map ``X_b`` (C channels on a grid N) has at each frequency m the
``C x B`` matrix ``[X_hat_1(m) ... X_hat_B(m)]`` (the unnormalised spatial DFT, numpy's convention). Its
squared singular values are the eigenvalues of the ``C x C`` Gram matrix
``G(m) = sum_b X_hat_b(m) X_hat_b(m)^H``, which is a sum over inputs: it is accumulated batch by batch, in
complex128 (float64 parts), so memory is ``|N|/2 * C^2`` whatever the number of inputs. The feature maps
are real, so ``X_hat_b(-m) = conj(X_hat_b(m))`` and ``G(-m) = conj(G(m))``: one frequency per conjugate pair
is accumulated (the rfft half, the same representatives as the weight spectra), the other recorded as a
multiplicity of 2.

Centring (``center=True``) removes the batch mean at frequency 0, exactly and still streaming: the sum
``s = sum_b X_hat_b(0)`` is accumulated too and ``G(0) - s s^H / B`` taken at the end, the Gram matrix of
the centred inputs. The capacity per frequency is ``min(C, B)``: that many values are kept per row.

Pure tensor code: no I/O. Per batch the work is one rfftn and one batched GEMM over frequencies
(``baddbmm`` into the accumulator, no temporary of the accumulator's size), the FFT taken over the
leading axes of a permuted view so that it comes out in the GEMMs' ``(frequency, channel, input)`` layout.
"""

from __future__ import annotations

import numpy as np
import torch

from ..analysis.spectrum import representative_frequencies
from ..records import Spectrum


class GramAccumulator:
    """Per-frequency ``C x C`` Gram sums of one layer's feature maps, fed batch by batch."""

    def __init__(self, channels: int, grid: tuple[int, ...], *, center: bool = False,
                 device: str | torch.device = "cpu") -> None:
        self.channels = int(channels)
        self.grid = tuple(int(n) for n in grid)
        self.center = center
        self.count = 0
        self.frequencies, self.multiplicity = representative_frequencies(self.grid)
        half = self.grid[:-1] + (self.grid[-1] // 2 + 1,)
        index = np.ravel_multi_index(self.frequencies.T, half)
        # The whole rfft half is accumulated (a few per cent more rows than the representatives, but the FFT
        # output is used in place, without a gather); the representatives are picked at the end.
        self._rows = torch.from_numpy(index.astype(np.int64))
        self._zero = 0  # frequency 0 is the first row of the rfft half
        self._half = int(np.prod(half))
        self._axes = tuple(range(len(self.grid)))
        self.gram = torch.zeros((self._half, self.channels, self.channels), dtype=torch.complex128, device=device)
        self._sum = torch.zeros(self.channels, dtype=torch.complex128, device=device)

    def add(self, batch: torch.Tensor) -> None:
        """Accumulate a batch ``(B, C, *grid)`` of real feature maps."""
        if tuple(batch.shape[1:]) != (self.channels, *self.grid):
            raise ValueError(f"expected a batch of shape (B, {self.channels}, {self.grid}), got {tuple(batch.shape)}")
        b = batch.shape[0]
        x = batch.detach()
        x = x if x.dtype == torch.float64 else x.to(torch.float32)
        d = len(self.grid)
        # spatial axes first: the rfft comes out as (frequency, channel, input), the GEMMs' layout
        spec = torch.fft.rfftn(x.permute(*range(2, 2 + d), 1, 0), dim=self._axes).reshape(self._half, self.channels, b)
        mats = torch.empty((self._half, self.channels, b), dtype=torch.complex128, device=spec.device).copy_(spec)
        self.gram.baddbmm_(mats, mats.transpose(1, 2).conj().resolve_conj())
        if self.center:
            self._sum += mats[self._zero].sum(dim=1)
        self.count += b

    def chunks(self, size: int) -> list[slice]:
        """Slices of the representative frequencies, about ``size`` matrices each, for :meth:`squared_values`."""
        total = len(self._rows)
        return [slice(i, min(i + size, total)) for i in range(0, total, max(1, size))]

    def squared_values(self, rows: slice) -> np.ndarray:
        """Eigenvalues (descending) of the Gram matrices of frequencies ``rows``: the squared singular values.

        Centring corrects only frequency 0's matrix (a copy of that one matrix); the accumulator itself is
        left as it is, so nothing of its size is copied. LAPACK reads one triangle of each matrix.
        """
        picked = self._rows[rows]
        values = _eigvalsh(self.gram.index_select(0, picked.to(self.gram.device)))
        if self.center:
            for i in np.flatnonzero(picked.numpy() == self._zero):
                zero = self.gram[self._zero] - torch.outer(self._sum, self._sum.conj()) / self.count
                values[i] = _eigvalsh(zero[None])[0]
        return values[:, ::-1]

    def spectrum(self, squared: np.ndarray | None = None) -> Spectrum:
        """The singular values of every representative frequency's ``C x B`` matrix, ``min(C, B)`` per row.

        ``squared`` (all rows of :meth:`squared_values`, in order) when they were computed elsewhere.
        """
        if self.count == 0:
            raise ValueError("no inputs accumulated")
        if squared is None:
            squared = self.squared_values(slice(0, len(self._rows)))
        keep = min(self.channels, self.count)
        values = np.sqrt(np.clip(squared[:, :keep], 0.0, None))
        return Spectrum(grid=self.grid, frequencies=self.frequencies, multiplicity=self.multiplicity,
                        values=np.ascontiguousarray(values), exact=True)


def _eigvalsh(gram: torch.Tensor) -> np.ndarray:
    """Ascending eigenvalues of a batch of Hermitian matrices, float64 numpy (numpy's LAPACK on the CPU)."""
    if gram.device.type == "cpu":
        return np.linalg.eigvalsh(gram.numpy())
    return torch.linalg.eigvalsh(gram).cpu().numpy()
