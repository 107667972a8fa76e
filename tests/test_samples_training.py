"""Tests for sample_checkpoints/make_samples.py and the shipped sample checkpoints.

The smoke test runs the generator for a few steps per sample (in a subprocess, so that its global
torch settings do not leak into other tests); the spectrum tests recompute, with numpy alone, the
per-layer mode counts documented in sample_checkpoints/SAMPLES.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_checkpoints"
NAMES = ["cbn_demo", "cbn_demo_untrained", "cbn_demo_1d", "digits_cnn"]
REQUIRED = ["cbn_inspect.layers", "cbn_inspect.order", "cbn_inspect.grid", "architecture", "task",
            "depth", "width", "weight_decay", "learning_rate", "optimizer", "steps", "seed",
            "train_seconds", "generator"]
LAYER_KEYS = {"grid", "stride", "dilation", "groups", "padding_mode", "transposed"}


def read(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    with safe_open(str(path), "np") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def check_layout(path: Path) -> None:
    """Required metadata keys present, JSON valid, layer names matching the tensor keys."""
    meta, tensors = read(path)
    missing = [k for k in REQUIRED if k not in meta]
    assert not missing, f"{path.name}: missing metadata {missing}"
    assert "final_loss" in meta or "final_accuracy" in meta
    assert all(isinstance(v, str) for v in meta.values())
    layers, order = json.loads(meta["cbn_inspect.layers"]), json.loads(meta["cbn_inspect.order"])
    assert sorted(order) == sorted(layers) and len(order) == len(set(order))
    for name, spec in layers.items():
        weight = tensors[f"{name}.weight"]
        assert set(spec) == LAYER_KEYS, name
        d = weight.ndim - 2
        assert len(spec["grid"]) == len(spec["stride"]) == len(spec["dilation"]) == d
        assert spec["padding_mode"] in ("circular", "zeros") and spec["transposed"] is False
        assert spec["groups"] == 1
    first = layers[order[0]]["grid"]
    assert meta["cbn_inspect.grid"] == "x".join(str(n) for n in first)
    conv_like = {k for k, v in tensors.items() if k.endswith(".weight") and v.ndim >= 3}
    assert conv_like == {f"{name}.weight" for name in layers}
    assert all(v.dtype == np.float32 for v in tensors.values())


def test_smoke_mode_writes_valid_files(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SAMPLES / "make_samples.py"), "--smoke", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in NAMES:
        assert name in done.stdout
        check_layout(tmp_path / f"{name}.safetensors")
        assert "smoke" in read(tmp_path / f"{name}.safetensors")[0]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_samples_have_the_layout(name: str) -> None:
    path = SAMPLES / f"{name}.safetensors"
    check_layout(path)
    assert "smoke" not in read(path)[0]


def mode_counts(path: Path) -> tuple[list[int], list[float]]:
    """Per layer: singular values of fft2(kernel) above 0.1 x the layer's largest, and the gap
    smallest-kept / largest-discarded (full-size circular layers: kernel size = grid)."""
    meta, tensors = read(path)
    counts, gaps = [], []
    for name in json.loads(meta["cbn_inspect.order"]):
        w = tensors[f"{name}.weight"].astype(np.float64)
        axes = tuple(range(2, w.ndim))
        w_hat = np.fft.fftn(w, axes=axes).reshape(w.shape[0], w.shape[1], -1)
        sv = np.linalg.svd(np.moveaxis(w_hat, -1, 0), compute_uv=False).ravel()
        kept = sv > 0.1 * sv.max()
        counts.append(int(kept.sum()))
        gaps.append(float(sv[kept].min() / sv[~kept].max()))
    return counts, gaps
