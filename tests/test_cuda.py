"""The GPU path (``--device cuda``): the same reports as the CPU. Skipped where no CUDA device is present."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cbn_inspect.inspect import analyze_model
from cbn_inspect.loaders import load
from cbn_inspect.records import Settings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _values(report) -> list[np.ndarray]:
    return [np.array([vals for _freq, vals in r.spectrum.full()]) for r in report.layers]


def _compare(cpu, gpu, rtol: float) -> None:
    assert [r.layer.name for r in gpu.layers] == [r.layer.name for r in cpu.layers]
    for a, b in zip(_values(cpu), _values(gpu)):
        if a.max() == 0:  # an all-zero layer (timm's zero-initialised last BatchNorm of a block, folded)
            assert b.max() == 0
            continue
        big = a >= 1e-3 * a.max()
        assert np.max(np.abs(b[big] - a[big]) / a[big]) < rtol
    assert gpu.bottleneck.found == cpu.bottleneck.found
    assert (gpu.bottleneck.start, gpu.bottleneck.end) == (cpu.bottleneck.start, cpu.bottleneck.end)


def test_planted_network_on_cuda_matches_cpu(planted_path):
    loaded = load(planted_path)
    cpu = analyze_model(loaded, Settings(keep_spectra=True))
    gpu = analyze_model(loaded, Settings(keep_spectra=True, device="cuda"))
    _compare(cpu, gpu, 1e-6)
    assert [r.metrics.mode_count for r in gpu.layers] == [r.metrics.mode_count for r in cpu.layers]


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_timm_resnet18_on_cuda_matches_cpu(precision):
    """Every layer kind of a real architecture: stem, strided 3x3, strided 1x1, wide Gram matrices."""
    loaded = load("timm:resnet18", input_size="64")
    cpu = analyze_model(loaded, Settings(keep_spectra=True, precision="float64"))
    gpu = analyze_model(loaded, Settings(keep_spectra=True, precision=precision, device="cuda"))
    _compare(cpu, gpu, 1e-4 if precision == "float32" else 1e-9)


def test_cli_device_cuda(cli, planted_path):
    result = cli(planted_path, "--device", "cuda", "--json", "-")
    assert result.exit_code == 0, result.stderr
    on_gpu = json.loads(result.stdout)
    on_cpu = json.loads(cli(planted_path, "--json", "-").stdout)
    keys = ("found", "start", "end", "rank", "degree_counts", "type", "strength_label", "clean")
    assert {k: on_gpu["bottleneck"][k] for k in keys} == {k: on_cpu["bottleneck"][k] for k in keys}
