"""Synthetic networks of full-size circular convolutions with a known spectrum, for tests and benchmarks.

:func:`planted_network` builds layer kernels from chosen per-frequency matrices: inside the planted range
each listed frequency gets a matrix of the requested rank with singular values near 1 (plus a small noise
floor), every other frequency only the noise floor; outside the range the matrices are random and full.
The kernels are real (W_hat(-m) = conj(W_hat(m)) by construction), in PyTorch's Conv2d layout, with
``cbn_inspect.*`` metadata declaring the grid and circular padding. No file is written here.
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np

Frequency = tuple[int, ...]


def _random_matrix(rng: np.random.Generator, rows: int, cols: int, rank: int, real: bool) -> np.ndarray:
    def orth(n: int, k: int) -> np.ndarray:
        a = rng.standard_normal((n, k)) + (0 if real else 1j * rng.standard_normal((n, k)))
        return np.linalg.qr(a)[0][:, :k]

    values = rng.uniform(0.8, 1.2, size=rank)
    return (orth(rows, rank) * values) @ orth(cols, rank).conj().T


def _kernel_from_spectrum(grid: tuple[int, ...], mats: dict[Frequency, np.ndarray]) -> np.ndarray:
    """Real kernel (C_out, C_in, *grid) whose DFT over the spatial axes is ``mats`` (mirrors filled in)."""
    first = next(iter(mats.values()))
    spectrum = np.zeros(first.shape + grid, dtype=np.complex128)
    for freq, mat in mats.items():
        mirror = tuple((-f) % n for f, n in zip(freq, grid))
        spectrum[(..., *freq)] = mat
        spectrum[(..., *mirror)] = mat.conj()
    kernel = np.fft.ifftn(spectrum, axes=tuple(range(2, 2 + len(grid))))
    return kernel.real


def _conjugate_classes(grid: tuple[int, ...]) -> list[Frequency]:
    seen: set[Frequency] = set()
    out = []
    for freq in np.ndindex(*grid):
        mirror = tuple((-f) % n for f, n in zip(freq, grid))
        if mirror not in seen:
            seen.add(freq)
            out.append(tuple(int(f) for f in freq))
    return out


def planted_layer(
    rng: np.random.Generator,
    grid: tuple[int, ...],
    channels: tuple[int, int],
    ranks: Mapping[Frequency, int] | None,
    noise: float = 1e-3,
) -> np.ndarray:
    """One full-size kernel. ``ranks`` maps a frequency to the rank kept there (None: random, full rank)."""
    c_out, c_in = channels
    mats = {}
    for freq in _conjugate_classes(grid):
        mirror = tuple((-f) % n for f, n in zip(freq, grid))
        real = mirror == freq
        if ranks is None:
            rank = min(c_out, c_in)
            mat = _random_matrix(rng, c_out, c_in, rank, real) * rng.uniform(0.5, 2.0)
        else:
            rank = ranks.get(freq, ranks.get(mirror, 0))
            mat = _random_matrix(rng, c_out, c_in, rank, real) if rank else np.zeros((c_out, c_in))
            mat = mat + noise * _random_matrix(rng, c_out, c_in, min(c_out, c_in), real) / 1.2
        mats[freq] = mat.real if real else mat
    return _kernel_from_spectrum(grid, mats)


def planted_network(
    *,
    grid: tuple[int, ...] = (8, 8),
    channels: int = 8,
    depth: int = 10,
    planted: tuple[int, int] = (2, 7),
    ranks: Mapping[Frequency, int] | None = None,
    in_channels: int = 1,
    seed: int = 0,
    dtype: str = "float32",
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """State dict ``layers.{i}.weight`` and safetensors metadata of a network with a planted bottleneck.

    Layers ``planted[0]..planted[1]`` (inclusive) keep exactly ``ranks`` (frequency -> rank; default: 3 at
    the zero frequency, 1 at each of the 2d degree-1 frequencies); the others are random and full rank.
    ``ranks=None`` with ``planted=(-1, -1)`` gives the random control.
    """
    d = len(grid)
    if ranks is None:
        ranks = {(0,) * d: 3}
        for axis in range(d):
            unit = tuple(1 if j == axis else 0 for j in range(d))
            ranks[unit] = 1
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}
    layers_meta = {}
    for i in range(depth):
        c_in = in_channels if i == 0 else channels
        c_out = in_channels if i == depth - 1 else channels
        inside = planted[0] <= i <= planted[1]
        kernel = planted_layer(rng, grid, (c_out, c_in), ranks if inside else None)
        state[f"layers.{i}.weight"] = kernel.astype(dtype)
        layers_meta[f"layers.{i}"] = {"grid": list(grid), "stride": [1] * d, "padding_mode": "circular"}
    metadata = {
        "cbn_inspect.layers": json.dumps(layers_meta),
        "cbn_inspect.order": json.dumps([f"layers.{i}" for i in range(depth)]),
        "cbn_inspect.grid": "x".join(map(str, grid)),
        "architecture": f"{depth} full-size circular conv layers, {channels} channels, grid {grid}",
        "planted": json.dumps({"layers": list(planted), "ranks": {str(list(k)): v for k, v in ranks.items()}}),
    }
    return state, metadata


def random_network(**kwargs) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The same architecture as :func:`planted_network`, every layer random and full rank (the control)."""
    return planted_network(planted=(-1, -1), **kwargs)


def planted_linear_network(
    *,
    grid: tuple[int, ...] = (4, 4),
    channels: int = 8,
    in_channels: int = 4,
    depth: int = 5,
    ranks: Mapping[Frequency, int] | None = None,
    seed: int = 0,
    noise: float = 0.0,
    dtype: str = "float32",
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A linear network (no nonlinearity) of full-size circular convs whose activations have planted ranks.

    At each planted frequency m one orthonormal basis ``U_m`` (``channels x ranks[m]``) is drawn; layer 0
    maps the input channels onto it (``W_hat(m) = U_m V_m^H``), every later layer is the projection
    ``U_m U_m^H``; at every other frequency all layers are zero. With more inputs than kept directions, the
    feature map entering any layer after the first has rank exactly ``ranks[m]`` at m and 0 elsewhere
    (THEORY.md, "From activations": the planted check). Default: 3 @ degree 0, 4 @ degree 1 (one channel
    at (1, 0) and (0, 1) and their mirrors) and 1 @ degree 2 (the self-conjugate (2, 0) of a 4x4 grid).
    The metadata declares the geometry and ``cbn_inspect.activation: none``, so the file can be run.
    ``noise`` adds a random full-rank floor of that size to every layer at every frequency (0: exact zeros,
    whose discarded values are round-off; a floor makes the gaps machine-independent, e.g. for golden files).
    """
    d = len(grid)
    if ranks is None:
        ranks = {(0,) * d: 3}
        for axis in range(d):
            ranks[tuple(1 if j == axis else 0 for j in range(d))] = 1
        ranks[(2,) + (0,) * (d - 1)] = 1
    rng = np.random.default_rng(seed)
    bases, inputs = {}, {}
    for freq, rank in ranks.items():
        mirror = tuple((-f) % n for f, n in zip(freq, grid))
        real = mirror == tuple(freq)
        draw = (lambda n, k: rng.standard_normal((n, k))) if real else (
            lambda n, k: rng.standard_normal((n, k)) + 1j * rng.standard_normal((n, k)))
        bases[tuple(freq)] = np.linalg.qr(draw(channels, rank))[0][:, :rank]
        inputs[tuple(freq)] = np.linalg.qr(draw(in_channels, rank))[0][:, :rank]
    state: dict[str, np.ndarray] = {}
    layers_meta = {}
    for i in range(depth):
        c_in = in_channels if i == 0 else channels
        mats = {}
        for freq in _conjugate_classes(grid):
            if freq in bases:
                u = bases[freq]
                mats[freq] = u @ (inputs[freq] if i == 0 else u).conj().T
            else:
                mats[freq] = np.zeros((channels, c_in))
            if noise:
                real = tuple((-f) % n for f, n in zip(freq, grid)) == freq
                floor = noise * _random_matrix(rng, channels, c_in, min(channels, c_in), real) / 1.2
                mats[freq] = mats[freq] + (floor.real if real else floor)
        state[f"layers.{i}.weight"] = _kernel_from_spectrum(grid, mats).astype(dtype)
        layers_meta[f"layers.{i}"] = {"grid": list(grid), "stride": [1] * d, "padding_mode": "circular"}
    metadata = {
        "cbn_inspect.layers": json.dumps(layers_meta),
        "cbn_inspect.order": json.dumps([f"layers.{i}" for i in range(depth)]),
        "cbn_inspect.grid": "x".join(map(str, grid)),
        "cbn_inspect.activation": "none",
        "architecture": f"{depth} full-size circular conv layers, {channels} channels, grid {grid}, linear",
        "planted": json.dumps({"ranks": {str(list(k)): v for k, v in ranks.items()}}),
    }
    return state, metadata
