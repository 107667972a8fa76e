"""Per-frequency singular values against dense references (THEORY.md, "Per-frequency matrices")."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
import torch

from cbn_inspect.analysis import compute_spectrum, plan_kernel, representative_frequencies


def dense_operator(weight, grid, groups=1, stride=None, dilation=None, transposed=False):
    """The circular conv y[o,p] = sum W[o,c,x] in[c, s*p + dil*x mod N], unrolled into a matrix (float64)."""
    w = np.asarray(weight, dtype=np.float64)
    d = w.ndim - 2
    stride = stride or (1,) * d
    dilation = dilation or (1,) * d
    if transposed:
        fine = tuple(n * s for n, s in zip(grid, stride))
        return dense_operator(w, fine, groups, stride, dilation).T
    c_out, c_in_g = w.shape[:2]
    out_grid = tuple(n // s for n, s in zip(grid, stride))
    n_in, n_out = int(np.prod(grid)), int(np.prod(out_grid))
    a = np.zeros((c_out * n_out, c_in_g * groups * n_in))
    for o in range(c_out):
        group = o // (c_out // groups)
        for p in itertools.product(*(range(n) for n in out_grid)):
            row = o * n_out + np.ravel_multi_index(p, out_grid)
            for c, x in itertools.product(range(c_in_g), itertools.product(*(range(k) for k in w.shape[2:]))):
                q = tuple((s * pp + r * xx) % n for pp, xx, s, r, n in zip(p, x, stride, dilation, grid))
                a[row, (group * c_in_g + c) * n_in + np.ravel_multi_index(q, grid)] += w[(o, c) + x]
    return a


def tool_values(weight, grid, precision="float64", **geometry):
    plan = plan_kernel(torch.from_numpy(np.asarray(weight)), grid, **geometry)
    spectrum = compute_spectrum(plan, precision=precision)
    return np.sort(np.repeat(spectrum.values, spectrum.multiplicity, axis=0).ravel())[::-1]


CASES = {
    "2d-even": ((4, 3, 3, 3), (6, 6), {}),
    "2d-odd": ((4, 3, 3, 3), (5, 7), {}),
    "1d-odd": ((4, 3, 5), (9,), {}),
    "1d-even": ((3, 5, 4), (8,), {}),
    "groups": ((6, 2, 3, 3), (6, 6), {"groups": 3}),
    "depthwise": ((6, 1, 3, 3), (5, 5), {"groups": 6}),
    "stride2": ((4, 3, 3, 3), (8, 8), {"stride": (2, 2)}),
    "stride2-even-kernel": ((4, 3, 4, 4), (6, 6), {"stride": (2, 2)}),
    "stride2-1d": ((4, 3, 3), (10,), {"stride": (2,)}),
    "stride2-groups": ((4, 2, 3, 3), (6, 6), {"stride": (2, 2), "groups": 2}),
    "kernel-larger-than-grid": ((3, 2, 9, 9), (5, 6), {}),
    "non-square-kernel": ((3, 2, 2, 5), (6, 7), {}),
    "dilation": ((4, 3, 3, 3), (6, 6), {"dilation": (2, 2)}),
    "transposed-stride2": ((3, 4, 3, 3), (4, 4), {"transposed": True, "stride": (2, 2)}),
    "1x1": ((4, 2, 1, 1), (5, 5), {}),
    "1x1-stride2": ((4, 2, 1, 1), (6, 6), {"stride": (2, 2)}),
    "3d": ((2, 2, 2, 3, 2), (3, 4, 3), {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_dense_reference(name):
    shape, grid, geometry = CASES[name]
    weight = np.random.default_rng(zlib.crc32(name.encode())).standard_normal(shape)
    reference = np.linalg.svd(dense_operator(weight, grid, **geometry), compute_uv=False)
    got = tool_values(weight, grid, **geometry)
    assert len(got) == len(reference)  # capacity: one value per min(rows, cols) of the operator
    np.testing.assert_allclose(got, np.sort(reference)[::-1], rtol=1e-6, atol=1e-9 * reference.max())


def test_float32_close_to_float64():
    weight = np.random.default_rng(3).standard_normal((16, 16, 3, 3))
    f64 = tool_values(weight, (12, 12), precision="float64")
    f32 = tool_values(weight.astype(np.float32), (12, 12), precision="float32")
    big = f64 > 1e-3 * f64[0]
    assert np.max(np.abs(f32[big] - f64[big]) / f64[big]) < 1e-4


def test_matches_pytorch_circular_conv():
    """The convention agrees with what PyTorch's own circular Conv2d computes."""
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular", bias=False).double()
    grid = (6, 5)
    basis = torch.eye(3 * 30, dtype=torch.float64).reshape(-1, 3, *grid)
    with torch.no_grad():
        matrix = conv(basis).reshape(3 * 30, -1).T.numpy()
    reference = np.sort(np.linalg.svd(matrix, compute_uv=False))[::-1]
    np.testing.assert_allclose(tool_values(conv.weight.detach().numpy(), grid), reference, rtol=1e-9)


def test_parseval():
    weight = np.random.default_rng(4).standard_normal((5, 3, 3, 3))
    grid = (7, 6)
    plan = plan_kernel(torch.from_numpy(weight), grid)
    spectrum = compute_spectrum(plan, precision="float64")
    energy = float((spectrum.values**2).sum(axis=1) @ spectrum.multiplicity)
    assert energy == pytest.approx(np.prod(grid) * (weight**2).sum(), rel=1e-10)


@pytest.mark.parametrize("grid", [(4, 4), (5, 4), (6,), (3, 4, 5)])
def test_representatives_cover_each_conjugate_class_once(grid):
    freqs, mult = representative_frequencies(grid)
    covered = set()
    for f, m in zip(freqs, mult):
        mirror = tuple((-np.asarray(f)) % grid)
        covered.add(tuple(f))
        covered.add(mirror)
        assert (m == 1) == (mirror == tuple(f))
    assert len(covered) == np.prod(grid) == int(mult.sum())


def test_one_by_one_kernel_same_values_everywhere():
    weight = torch.randn(6, 4, 1, 1, dtype=torch.float64)
    spectrum = compute_spectrum(plan_kernel(weight, (8, 8)), precision="float64")
    direct = torch.linalg.svdvals(weight[:, :, 0, 0]).numpy()
    assert np.allclose(spectrum.values, direct[None, :])


def test_small_memory_budget_gives_same_values():
    weight = torch.randn(8, 8, 3, 3, dtype=torch.float64)
    plan = plan_kernel(weight, (10, 10))
    a = compute_spectrum(plan, precision="float64").values
    b = compute_spectrum(plan, precision="float64", memory_budget_mb=0).values  # one frequency per chunk
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_fft_path_agrees_with_twiddle_path():
    from cbn_inspect.analysis import spectrum as module

    weight = torch.randn(3, 2, 9, 9, dtype=torch.float64)
    plan = plan_kernel(weight, (9, 9))
    assert module._use_fft(81, len(representative_frequencies((9, 9))[0]), (9, 9))
    fft_values = compute_spectrum(plan, precision="float64").values
    original = module._use_fft
    try:
        module._use_fft = lambda *a: False
        twiddle_values = compute_spectrum(plan, precision="float64").values
    finally:
        module._use_fft = original
    np.testing.assert_allclose(fft_values, twiddle_values, rtol=1e-10)
