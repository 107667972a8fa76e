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
(``baddbmm`` into the accumulator, no temporary of the accumulator's size).
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
        self._index = torch.from_numpy(index.astype(np.int64)).to(device)
        self._zero = int(np.flatnonzero((self.frequencies == 0).all(axis=1))[0])
        self._dims = tuple(range(2, 2 + len(self.grid)))
        self.gram = torch.zeros((len(index), self.channels, self.channels), dtype=torch.complex128, device=device)
        self._sum = torch.zeros(self.channels, dtype=torch.complex128, device=device)

    def add(self, batch: torch.Tensor) -> None:
        """Accumulate a batch ``(B, C, *grid)`` of real feature maps."""
        if tuple(batch.shape[1:]) != (self.channels, *self.grid):
            raise ValueError(f"expected a batch of shape (B, {self.channels}, {self.grid}), got {tuple(batch.shape)}")
        b = batch.shape[0]
        x = batch.detach()
        x = x.to(torch.float64) if x.dtype == torch.float64 else x.to(torch.float32)
        spec = torch.fft.rfftn(x, dim=self._dims).reshape(b, self.channels, -1)
        spec = spec.index_select(2, self._index).to(torch.complex128)  # (B, C, F)
        mats = spec.permute(2, 1, 0)  # (F, C, B)
        self.gram.baddbmm_(mats, mats.transpose(1, 2).conj())
        if self.center:
            self._sum += spec[:, :, self._zero].sum(dim=0)
        self.count += b

    def spectrum(self) -> Spectrum:
        """The singular values of every representative frequency's ``C x B`` matrix, ``min(C, B)`` per row."""
        if self.count == 0:
            raise ValueError("no inputs accumulated")
        gram = self.gram
        if self.center:
            gram = gram.clone()
            gram[self._zero] -= torch.outer(self._sum, self._sum.conj()) / self.count
        gram = 0.5 * (gram + gram.transpose(1, 2).conj())  # exactly Hermitian before the eigensolver
        values = _eigvalsh(gram)
        keep = min(self.channels, self.count)
        values = np.sqrt(np.clip(values[:, ::-1][:, :keep], 0.0, None))
        return Spectrum(grid=self.grid, frequencies=self.frequencies, multiplicity=self.multiplicity,
                        values=np.ascontiguousarray(values), exact=True)


def _eigvalsh(gram: torch.Tensor) -> np.ndarray:
    """Ascending eigenvalues of a batch of Hermitian matrices, float64 numpy (numpy's LAPACK on the CPU)."""
    if gram.device.type == "cpu":
        return np.linalg.eigvalsh(gram.numpy())
    return torch.linalg.eigvalsh(gram).cpu().numpy()
