"""Known answers for cbn_inspect.analysis.spectrum: dense reference, both methods, both precisions."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from cbn_inspect.analysis import compute_spectrum, configure_threads, plan_kernel
from cbn_inspect.analysis.spectrum import _offsets_pay

# (weight shape, grid, groups, stride, dilation)
CASES = [
    ((4, 3, 3, 3), (6, 6), 1, 1, 1),
    ((6, 4, 3, 3), (8, 6), 2, 1, 1),  # groups
    ((4, 4, 3, 3), (8, 8), 1, 2, 1),  # stride: polyphase
    ((5, 3, 1, 1), (6, 6), 1, 2, 1),  # strided 1x1: zero polyphase columns dropped
    ((4, 1, 3, 3), (6, 6), 4, 1, 1),  # depthwise: vector norms
    ((3, 5, 3, 3), (7, 7), 1, 1, 2),  # dilation, tall -> transposed Gram
    ((3, 2, 5), (9,), 1, 1, 1),  # 1-D
    ((2, 3, 2, 2, 2), (4, 4, 4), 1, 1, 1),  # 3-D
    ((4, 4, 6, 6), (6, 6), 1, 1, 1),  # full-size circular kernel: FFT path
]


def dense_values(weight: torch.Tensor, grid, groups: int, stride: int, dilation: int) -> np.ndarray:
    """Singular values of the unrolled circular convolution (C_out*|N/s|) x (C_in*|N|), descending."""
    d = weight.ndim - 2
    c_in = weight.shape[1] * groups
    size = int(np.prod(grid))
    cols = []
    for k in range(c_in * size):
        x = torch.zeros((1, c_in) + tuple(grid), dtype=torch.float64)
        x.view(-1)[k] = 1.0
        pads = []
        for t in reversed(weight.shape[2:]):
            span = (t - 1) * dilation
            pads += [0, span]
        xp = torch.nn.functional.pad(x, pads, mode="circular")
        conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[d]
        cols.append(conv(xp, weight.double(), stride=stride, dilation=dilation, groups=groups).reshape(-1))
    return np.linalg.svd(torch.stack(cols, 1).numpy(), compute_uv=False)


def tool_values(spectrum) -> np.ndarray:
    vals = np.repeat(spectrum.values, spectrum.multiplicity, axis=0).ravel()
    return np.sort(vals)[::-1]


@pytest.mark.parametrize("case", CASES, ids=[str(c[0]) + str(c[1]) for c in CASES])
@pytest.mark.parametrize("method,precision,tol", [("svd", "float64", 1e-11), ("gram", "float32", 1e-9),
                                                   ("svd", "float32", 1e-4)])
def test_matches_dense_reference(case, method, precision, tol):
    shape, grid, groups, stride, dilation = case
    torch.manual_seed(0)
    weight = torch.randn(shape)
    d = len(shape) - 2
    plan = plan_kernel(weight, grid, groups=groups, stride=(stride,) * d, dilation=(dilation,) * d)
    spectrum = compute_spectrum(plan, precision=precision, method=method)
    ref = dense_values(weight, grid, groups, stride, dilation)
    got = tool_values(spectrum)
    assert got.shape == ref.shape
    big = ref >= 1e-3 * ref[0]
    assert np.max(np.abs(got[big] - ref[big]) / ref[big]) < tol
    assert np.max(np.abs(got - ref)) < 1e-6 * ref[0]  # the rest are tiny both ways


def test_offsets_and_direct_gram_agree():
    torch.manual_seed(1)
    plan = plan_kernel(torch.randn(32, 24, 3, 3), (10, 10))
    freqs = len(compute_spectrum(plan).frequencies)
    assert _offsets_pay(1, 24, 32, (3, 3), freqs, 256) and not _offsets_pay(1, 24, 32, (3, 3), freqs, 0)
    by_offsets = compute_spectrum(plan, method="gram").values
    direct = compute_spectrum(plan, method="gram", memory_budget_mb=0).values  # no room: per-frequency products
    np.testing.assert_allclose(by_offsets, direct, rtol=1e-10, atol=1e-12)


def test_zero_kernel_and_zero_channels():
    weight = torch.zeros(4, 3, 3, 3)
    spectrum = compute_spectrum(plan_kernel(weight, (5, 5)))
    assert spectrum.values.shape == (13, 3) and not spectrum.values.any()
    weight[1, 2] = torch.randn(3, 3)  # a single nonzero (row, column) pair: rank 1 at each frequency
    spectrum = compute_spectrum(plan_kernel(weight, (5, 5)))
    assert spectrum.values.shape == (13, 3)
    assert (spectrum.values[:, 1:] == 0).all() and (spectrum.values[:, 0] > 0).all()


def test_small_chunks_and_threads_give_the_same_values():
    torch.manual_seed(2)
    plan = plan_kernel(torch.randn(8, 8, 3, 3), (12, 12), stride=(2, 2))
    configure_threads(2)
    many = compute_spectrum(plan, memory_budget_mb=0).values
    configure_threads(1)
    one = compute_spectrum(plan).values
    configure_threads(None)
    np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision,method", [("float32", "gram"), ("float64", "svd"), ("float32", "svd")])
def test_cuda_matches_cpu(precision, method):
    torch.manual_seed(3)
    plan = plan_kernel(torch.randn(16, 8, 3, 3), (14, 14), stride=(2, 2))
    cpu = compute_spectrum(plan, precision=precision, method=method).values
    gpu = compute_spectrum(plan, precision=precision, method=method, device="cuda").values
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4 if precision == "float32" else 1e-10, atol=1e-6 * cpu.max())


_PEAK_SCRIPT = """
import sys, torch
from cbn_inspect.analysis import compute_spectrum, configure_threads, plan_kernel

def peak_mb():  # VmHWM: this process's own high-water mark (ru_maxrss can carry the parent's after fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

configure_threads(1)  # one thread: the budget alone bounds the memory (threads add allocator arenas)
torch.manual_seed(0)
plan = plan_kernel(torch.randn(128, 128, 3, 3, dtype=torch.float64), (64, 64))
compute_spectrum(plan_kernel(torch.randn(8, 8, 3, 3, dtype=torch.float64), (8, 8)))  # first-call costs
before = peak_mb()
values = compute_spectrum(plan, memory_budget_mb=int(sys.argv[1])).values
print(peak_mb() - before, float(values.sum()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_memory_budget_bounds_peak_memory():
    """A 128-channel 3x3 layer on a 64x64 grid (2,080 Gram matrices, 545 MB if held at once): the growth of
    peak RSS follows --memory-budget, and the values do not depend on it."""
    import subprocess
    import sys

    def run(budget: int) -> tuple[float, float]:
        done = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(budget)], capture_output=True, text=True,
                              check=True)
        grown, total = done.stdout.split()
        return float(grown), float(total)

    small, small_sum = run(8)
    large, large_sum = run(1024)
    assert small < 40, f"peak RSS grew {small:.0f} MB with an 8 MB budget"
    assert large > 100, f"peak RSS grew only {large:.0f} MB with a 1 GB budget: the test no longer tests"
    assert small_sum == pytest.approx(large_sum, rel=1e-12)
