"""Numpy-only check of the per-frequency spectra of the sample checkpoints (numbers for SAMPLES.md).

Usage::

    python sample_checkpoints/check_spectra.py [FILE.safetensors ...]   (default: all samples here)

For every conv layer named in the file's ``cbn_inspect.layers`` metadata it prints the mode count
(singular values of the per-frequency matrices, over every frequency of the layer's grid, above
0.1 x the layer's largest), the utilisation, the kept count per degree (l1 and l-inf readings of
the wrapped distance min(m, n - m)), the gap ratio smallest-kept / largest-discarded and the
squared Frobenius norm. Strided layers use the polyphase form (coarse-grid degrees); BatchNorm
``X.bn`` is folded into conv ``X.conv``. Zero-padded layers are the circular approximation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open

REL_TOL = 0.1


def per_frequency_matrices(kernel: np.ndarray, grid: list[int], stride: list[int]) -> np.ndarray:
    """(n_freq, C_out, s^d C_in) matrices of the circular conv with this kernel on ``grid``."""
    d = len(grid)
    padded = np.zeros(kernel.shape[:2] + tuple(grid))
    for idx in np.ndindex(*kernel.shape[2:]):  # wrap a kernel larger than the grid
        where = tuple(i % n for i, n in zip(idx, grid))
        padded[(slice(None), slice(None)) + where] += kernel[(slice(None), slice(None)) + idx]
    every = (slice(None), slice(None))
    phases = [padded[every + tuple(slice(a, None, s) for a, s in zip(o, stride))]
              for o in np.ndindex(*stride)]
    stacked = np.concatenate(phases, axis=1)  # C_out x (s^d C_in) x coarse grid
    w_hat = np.fft.fftn(stacked, axes=tuple(range(2, 2 + d)))
    return np.moveaxis(w_hat.reshape(w_hat.shape[0], w_hat.shape[1], -1), -1, 0)


def degrees(coarse: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """l1 and l-inf degree of every frequency of the grid, in np.fft order (C order)."""
    axes = np.meshgrid(*[np.minimum(np.arange(n), n - np.arange(n)) for n in coarse], indexing="ij")
    stack = np.stack([a.ravel() for a in axes])
    return stack.sum(axis=0), stack.max(axis=0)


def per_degree(per_freq: np.ndarray, degree: np.ndarray) -> dict[int, int]:
    """Kept count per degree class, leaving out classes with none kept."""
    counts = {int(g): int(per_freq[degree == g].sum()) for g in np.unique(degree)}
    return {g: c for g, c in counts.items() if c}


def layer_report(kernel: np.ndarray, spec: dict) -> dict:
    """Mode count, utilisation, per-degree kept counts and gap of one layer."""
    grid, stride = spec["grid"], spec["stride"]
    sv = np.linalg.svd(per_frequency_matrices(kernel, grid, stride), compute_uv=False)
    kept = sv > REL_TOL * sv.max()
    deg_l1, deg_inf = degrees([n // s for n, s in zip(grid, stride)])
    per_freq = kept.sum(axis=1)
    count = int(kept.sum())
    return {
        "count": count,
        "utilisation": count / sv.size,
        "l1": per_degree(per_freq, deg_l1),
        "linf": per_degree(per_freq, deg_inf),
        "gap": float(sv[kept].min() / sv[~kept].max()) if (~kept).any() else float("inf"),
        "kept_range": (float(sv[kept].min()), float(sv.max())),
        "sq_norm": float(np.square(kernel).sum()),
    }


def fold_batchnorm(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The conv kernel with a following BatchNorm ``X.bn`` (eval form) folded into ``X.conv``."""
    kernel = tensors[f"{name}.weight"].astype(np.float64)
    bn = name[: -len(".conv")] + ".bn" if name.endswith(".conv") else None
    if bn and f"{bn}.weight" in tensors:
        scale = tensors[f"{bn}.weight"] / np.sqrt(tensors[f"{bn}.running_var"] + 1e-5)
        kernel = kernel * scale.reshape(-1, *[1] * (kernel.ndim - 1))
    return kernel


def report_file(path: Path) -> None:
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    layers = json.loads(meta["cbn_inspect.layers"])
    print(f"== {path.name}  grid {meta['cbn_inspect.grid']}  final_loss {meta.get('final_loss')}"
          f"  {meta.get('final_accuracy', '')}")
    for name in json.loads(meta["cbn_inspect.order"]):
        r = layer_report(fold_batchnorm(tensors, name), layers[name])
        print(f"{name:18s} count {r['count']:5d}  util {r['utilisation']:.3f}  gap {r['gap']:8.1f}"
              f"  kept {r['kept_range'][0]:.3f}..{r['kept_range'][1]:.3f}  |W|^2 {r['sq_norm']:.4f}"
              f"  l1 {r['l1']}  linf {r['linf']}")


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    paths = [Path(p) for p in argv] or sorted(here.glob("*.safetensors"))
    for path in paths:
        report_file(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
