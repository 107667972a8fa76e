"""The streaming Gram accumulator against direct SVDs of the per-frequency C x B matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbn_inspect.activations.gram import GramAccumulator


def _direct(x: np.ndarray, center: bool) -> dict[tuple[int, ...], np.ndarray]:
    """Singular values of [X_hat_1(m) ... X_hat_B(m)] at every frequency of the full grid (numpy fftn)."""
    d = x.ndim - 2
    spec = np.fft.fftn(x.astype(np.float64), axes=tuple(range(2, 2 + d)))
    if center:
        zero = (slice(None), slice(None)) + (0,) * d
        spec[zero] -= spec[zero].mean(axis=0, keepdims=True)
    out = {}
    for freq in np.ndindex(*x.shape[2:]):
        mat = spec[(slice(None), slice(None), *freq)].T  # (C, B)
        out[freq] = np.linalg.svd(mat, compute_uv=False)
    return out


@pytest.mark.parametrize("shape", [(7, 3, 6), (9, 4, 5, 6), (6, 3, 3, 4, 2)])
@pytest.mark.parametrize("center", [False, True])
def test_streaming_gram_matches_direct_svd(shape, center):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 0.7  # a mean, so centring matters
    acc = GramAccumulator(shape[1], shape[2:], center=center)
    for part in np.array_split(x, 3):  # uneven batches
        acc.add(torch.from_numpy(part))
    spectrum = acc.spectrum()
    expected = _direct(x, center)
    keep = min(shape[1], shape[0])
    assert spectrum.values.shape[1] == keep
    full = dict(spectrum.full())
    assert set(full) == set(expected)
    for freq, values in full.items():
        np.testing.assert_allclose(values, expected[freq][:keep], rtol=1e-8, atol=1e-8 * expected[(0,) * len(freq)].max())
    assert spectrum.count == int(np.prod(shape[2:])) * keep


def test_results_do_not_depend_on_batching():
    x = torch.randn(10, 4, 6, 6, dtype=torch.float64)
    one, many = GramAccumulator(4, (6, 6)), GramAccumulator(4, (6, 6))
    one.add(x)
    for part in x.split(3):
        many.add(part)
    np.testing.assert_allclose(one.spectrum().values, many.spectrum().values, rtol=1e-10)


def test_capacity_is_min_channels_inputs():
    acc = GramAccumulator(8, (4,))
    acc.add(torch.randn(3, 8, 4))
    spectrum = acc.spectrum()
    assert spectrum.values.shape == (3, 3)  # 3 representatives of a 4-grid, min(8, 3) values each
    assert spectrum.count == 4 * 3


def test_memory_does_not_grow_with_inputs():
    acc = GramAccumulator(4, (8, 8))
    before = acc.gram.shape
    for _ in range(5):
        acc.add(torch.randn(16, 4, 8, 8))
    assert acc.gram.shape == before and acc.count == 80


def test_wrong_shape_is_refused():
    acc = GramAccumulator(4, (8, 8))
    with pytest.raises(ValueError):
        acc.add(torch.randn(2, 3, 8, 8))
