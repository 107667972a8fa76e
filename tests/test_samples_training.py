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


def spectra(path: Path) -> list[dict]:
    """Per layer (full-size circular layers: kernel size = grid): the count of singular values of
    fftn(kernel) above 0.1 x the layer's largest, the utilisation, the gap smallest-kept /
    largest-discarded, and the kept count per l1 degree (wrapped distance min(m, n - m))."""
    meta, tensors = read(path)
    rows = []
    for name in json.loads(meta["cbn_inspect.order"]):
        w = tensors[f"{name}.weight"].astype(np.float64)
        grid = w.shape[2:]
        w_hat = np.fft.fftn(w, axes=tuple(range(2, w.ndim))).reshape(w.shape[0], w.shape[1], -1)
        sv = np.linalg.svd(np.moveaxis(w_hat, -1, 0), compute_uv=False)  # (freq, min(C_out, C_in))
        kept = sv > 0.1 * sv.max()
        wrapped = [np.minimum(np.arange(n), n - np.arange(n)) for n in grid]
        degree = sum(np.meshgrid(*wrapped, indexing="ij")).ravel()
        per_degree = {int(d): int(kept[degree == d].sum()) for d in np.unique(degree)}
        rows.append({"count": int(kept.sum()), "utilisation": kept.sum() / sv.size,
                     "gap": float(sv[kept].min() / sv[~kept].max()) if (~kept).any() else np.inf,
                     "l1": {d: c for d, c in per_degree.items() if c}})
    return rows


def test_cbn_demo_shows_the_documented_bottleneck() -> None:
    """The numbers in SAMPLES.md: layers 0-10 keep exactly the task's 8 non-constant frequencies
    (4 at l1 degree 1, 4 at degree 2), layers 1-10 keep 10-12 modes in all (2-4 constant
    channels), the last layer is broad, and layers 1, 2, 7, 8, 9 have a gap of at least 10."""
    rows = spectra(SAMPLES / "cbn_demo.safetensors")
    assert len(rows) == 12
    for row in rows[:11]:
        assert {d: c for d, c in row["l1"].items() if d > 0} == {1: 4, 2: 4}
    middle = rows[1:11]
    assert all(10 <= r["count"] <= 12 and r["utilisation"] < 0.01 for r in middle)
    assert rows[-1]["count"] >= 2 * max(r["count"] for r in middle)
    assert all(rows[i]["gap"] >= 10 for i in (1, 2, 7, 8, 9))
    assert rows[8]["count"] == rows[9]["count"] == 10


def test_untrained_control_has_no_bottleneck() -> None:
    rows = spectra(SAMPLES / "cbn_demo_untrained.safetensors")
    for row in rows[1:-1]:
        assert row["utilisation"] > 0.8 and row["gap"] < 1.5


def test_cbn_demo_1d_shows_the_documented_bottleneck() -> None:
    """Layers 0-10 keep exactly 7 modes (1 at degree 0, 2 each at degrees 1, 2, 3) with a gap of
    at least 10; the last layer keeps more."""
    rows = spectra(SAMPLES / "cbn_demo_1d.safetensors")
    for row in rows[:11]:
        assert row["count"] == 7 and row["l1"] == {0: 1, 1: 2, 2: 2, 3: 2}
        assert row["gap"] >= 10
    assert rows[-1]["count"] > 7
