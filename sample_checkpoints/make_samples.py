"""Re-create the sample checkpoints that ship with cbn-inspect.

Usage::

    python sample_checkpoints/make_samples.py [--only NAME ...] [--out DIR] [--smoke] [--series]

``--series`` writes a training series instead: ``NAME_run/step_XXXX.safetensors`` every 400 steps of
the same run (default NAME ``cbn_demo_1d``), the last one equal to ``NAME.safetensors``.

Four samples (see ``SAMPLES.md`` for what each one shows):

* ``cbn_demo``            12 full-size circular 2-D convolutions trained with weight decay: a clean
                          Convolution Bottleneck (Wen & Jacot, ICML 2024).
* ``cbn_demo_untrained``  the same network at initialisation: the control, no bottleneck.
* ``cbn_demo_1d``         the same recipe with full-size circular 1-D convolutions.
* ``digits_cnn``          a conventional small CNN (3x3, zero padding, stride 2, BatchNorm) on
                          scikit-learn's 8x8 digits.

Everything is deterministic on CPU: fixed seeds, a fixed thread count and
``torch.use_deterministic_algorithms(True)``. Nothing is downloaded.

Why the circular networks are trained in the Fourier domain: a full-size circular convolution is
block-diagonal in the Fourier basis, so each layer is parameterised by its per-frequency matrices
(the real kernel is their inverse real FFT). Adam on these coefficients converges to a balanced,
low-rank optimum in a few thousand full-batch steps; Adam on the raw n x n kernels did not
(THEORY.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.utils.deterministic
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

GENERATOR = "sample_checkpoints/make_samples.py"
HERE = Path(__file__).resolve().parent
NUM_THREADS = 1  # see make_deterministic
SMOKE_STEPS = 5


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def make_deterministic(seed: int) -> None:
    """Fix every source of run-to-run variation we control (seed, threads, algorithms).

    One thread: the work per step is small, a second thread gains little, and on a busy 2-core
    machine two spinning threads were 5x slower than one. The thread count is part of the
    recipe (it fixes the order of floating-point reductions).
    """
    torch.set_num_threads(NUM_THREADS)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode fills every new tensor with NaN by default; we never read uninitialised
    # memory, and the fill costs time on every step.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    # Weights that weight decay drives towards zero become subnormal floats, which are very slow.
    torch.set_flush_denormal(True)


# --------------------------------------------------------------------------------------------
# Full-size circular networks, parameterised in the Fourier domain
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CircularConfig:
    """One full-size circular network and how it is trained."""

    name: str
    ndim: int  # 1 or 2 spatial axes
    n: int  # grid size per axis (= kernel size)
    depth: int
    width: int  # hidden channels
    weight_decay: float  # lambda in  MSE + lambda * sum ||W||_F^2
    lr_start: float
    lr_end: float
    lr_hold: float  # fraction of the steps at lr_start before the decay
    steps: int
    samples: int  # full-batch training set size
    threshold: float  # target y = relu(x - threshold * mean(x))
    seed: int
    trained: bool = True


def _spatial_dims(ndim: int) -> tuple[int, ...]:
    return tuple(range(-ndim, 0))


class FourierCircularNet(nn.Module):
    """A stack of full-size circular convolutions with ReLU between them (none after the last).

    Layer l holds the real FFT of its kernel (half spectrum, real and imaginary parts); the real
    kernel is ``irfftn`` of it, and the layer acts as  y_hat(m) = W_hat(m) x_hat(m)  at every
    frequency m, i.e. a true circular convolution  y[p] = sum_u W[u] x[p - u].
    """

    def __init__(self, cfg: CircularConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = [1] + [cfg.width] * (cfg.depth - 1) + [1]
        self.coeffs = nn.ParameterList()
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            kernel = self._init_kernel(c_out, c_in)
            half = torch.fft.rfftn(kernel, dim=_spatial_dims(cfg.ndim))
            self.coeffs.append(nn.Parameter(torch.view_as_real(half).contiguous()))

    def _init_kernel(self, c_out: int, c_in: int) -> torch.Tensor:
        """Kaiming-normal kernel (fan-in = c_in * n^d), the usual init for a ReLU conv layer."""
        shape = (c_out, c_in) + (self.cfg.n,) * self.cfg.ndim
        fan_in = c_in * self.cfg.n**self.cfg.ndim
        return torch.randn(shape) * math.sqrt(2.0 / fan_in)

    def kernels(self) -> list[torch.Tensor]:
        """The real spatial kernels (convolution convention), one per layer."""
        grid = (self.cfg.n,) * self.cfg.ndim
        dims = _spatial_dims(self.cfg.ndim)
        return [torch.fft.irfftn(torch.view_as_complex(c), s=grid, dim=dims) for c in self.coeffs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = _spatial_dims(self.cfg.ndim)
        grid = x.shape[-self.cfg.ndim :]
        kernels = self.kernels()
        for i, kernel in enumerate(kernels):
            # rfftn of the real kernel (not the raw coefficients) so that the layer applied is
            # exactly the real kernel that gets saved.
            w_hat = torch.fft.rfftn(kernel, dim=dims)
            y_hat = apply_per_frequency(w_hat, torch.fft.rfftn(x, dim=dims))
            x = torch.fft.irfftn(y_hat, s=grid, dim=dims)
            if i < len(kernels) - 1:
                x = F.relu(x)
        return x

    def penalty(self) -> torch.Tensor:
        """Sum over layers of the squared Frobenius norm of the real kernel."""
        return sum(k.square().sum() for k in self.kernels())


def apply_per_frequency(w_hat: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """y_hat[b, :, m] = w_hat[:, :, m] @ x_hat[b, :, m] for every frequency m.

    Written as one real batched matmul with the 2x2 real block form of complex numbers: on CPU
    this is about 15x faster than the complex einsum, which falls back to a slow loop.
    """
    c_out, c_in = w_hat.shape[:2]
    batch, half = x_hat.shape[0], x_hat.shape[2:]
    w = w_hat.reshape(c_out, c_in, -1).permute(2, 1, 0)  # (F, C_in, C_out)
    w_block = torch.cat(
        [torch.cat([w.real, w.imag], -1), torch.cat([-w.imag, w.real], -1)], -2
    )  # (F, 2 C_in, 2 C_out): [xr, xi] @ w_block = [Re(x w), Im(x w)]
    x = x_hat.reshape(batch, c_in, -1).permute(2, 0, 1)  # (F, B, C_in)
    y = torch.bmm(torch.cat([x.real, x.imag], -1), w_block)  # (F, B, 2 C_out)
    y = torch.complex(y[..., :c_out], y[..., c_out:])
    return y.permute(1, 2, 0).reshape(batch, c_out, *half)


def geometric_lr(step: int, steps: int, lr_start: float, lr_end: float, hold: float) -> float:
    """lr_start for the first ``hold`` fraction of the steps, then geometric decay to lr_end.

    Why hold: Adam moves a coefficient that only weight decay pulls on by about lr per step, so
    the sum of the learning rates bounds how far initial weights that the task does not use can
    shrink. A plain decay from 3e-3 to 3e-5 over 3,000 steps sums to about 2, less than the
    largest initial first-layer coefficients, which then survive as spurious modes.
    """
    t = max(step / max(steps - 1, 1) - hold, 0.0) / (1.0 - hold)
    return lr_start * (lr_end / lr_start) ** t


# --------------------------------------------------------------------------------------------
# Synthetic data whose needed frequencies are known
# --------------------------------------------------------------------------------------------


def latent_frequencies(ndim: int) -> list[tuple[int, ...]]:
    """One frequency of each conjugate pair that the inputs use (the constant one comes on top).

    2-D: every non-zero frequency of l-inf degree 1, i.e. (1,0), (0,1), (1,1), (1,-1).
    1-D: frequencies 1, 2 and 3.
    """
    if ndim == 2:
        return [(1, 0), (0, 1), (1, 1), (1, -1)]
    return [(1,), (2,), (3,)]


def make_threshold_task(ndim: int, n: int, count: int, threshold: float,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x: positive smooth fields; targets y = relu(x - threshold * mean(x)).

    x = c + sum_k r_k cos(2 pi <m_k, p> / n + phi_k) over the latent frequencies m_k, with
    c in [0.8, 1.2] and sum_k r_k < c, so x > 0 and everything x carries lives on the constant
    frequency plus 2 * len(latent_frequencies) non-constant ones, one channel each. The target is
    positively homogeneous in x (no biases needed) and depends on every latent coordinate, so the
    middle layers must keep exactly these frequencies; its ReLU kinks spread y over all
    frequencies, so the last layer must be broad.
    Returns two tensors of shape (count, 1, n, ..., n).
    """
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64)] * ndim, indexing="ij")
    freqs = latent_frequencies(ndim)
    shape = (count,) + (1,) * ndim
    dc = 0.8 + 0.4 * torch.rand(count, generator=generator, dtype=torch.float64)
    x = dc.view(shape).expand((count,) + (n,) * ndim).clone()
    for freq in freqs:
        radius = dc / len(freqs) * torch.rand(count, generator=generator, dtype=torch.float64)
        phi = 2 * math.pi * torch.rand(count, generator=generator, dtype=torch.float64)
        angle = sum(2 * math.pi * m * a / n for m, a in zip(freq, axes))
        x += radius.view(shape) * torch.cos(angle + phi.view(shape))
    y = F.relu(x - threshold * dc.view(shape))
    return x.float().unsqueeze(1), y.float().unsqueeze(1)


def train_circular(
    cfg: CircularConfig, smoke: bool, snapshot: Callable[[int, FourierCircularNet, float], None] | None = None,
    every: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Train (or just initialise) one full-size circular network; return tensors and metadata.

    With ``snapshot`` and ``every``, ``snapshot(step, net, loss)`` is called before the update of
    every step that is a multiple of ``every`` (``step`` = updates done so far; ``loss`` the loss at
    these weights, nan at the end where no forward pass was made). It reads the weights under
    ``no_grad`` and touches no random state, so the run (and its final weights) is the same as
    without it.
    """
    make_deterministic(cfg.seed)
    x, y = make_threshold_task(cfg.ndim, cfg.n, cfg.samples, cfg.threshold,
                               torch.Generator().manual_seed(cfg.seed))
    net = FourierCircularNet(cfg)
    steps = 0 if not cfg.trained else (SMOKE_STEPS if smoke else cfg.steps)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr_start)
    start = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = geometric_lr(step, steps, cfg.lr_start, cfg.lr_end, cfg.lr_hold)
        loss = (net(x) - y).square().mean() + cfg.weight_decay * net.penalty()
        if snapshot is not None and every and step % every == 0:
            snapshot(step, net, loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 500 == 0:
            print(f"  {cfg.name} step {step}: loss {loss.item():.5g}", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    if snapshot is not None and every and steps % every == 0:
        snapshot(steps, net, math.nan)
    with torch.no_grad():
        mse = (net(x) - y).square().mean().item()
        penalty = net.penalty().item()
        kernels = net.kernels()
    check_saved_kernels(net, x[:8])
    tensors = {f"layers.{i}.weight": to_cross_correlation(k).contiguous()
               for i, k in enumerate(kernels)}
    check_fourier_singular_values(net, [tensors[f"layers.{i}.weight"] for i in range(cfg.depth)])
    stats = {
        "final_loss": mse + cfg.weight_decay * penalty,
        "final_mse": mse,
        "final_penalty": penalty,
        "layer_sq_norms": [k.square().sum().item() for k in kernels],
        "steps": steps,
        "train_seconds": seconds,
    }
    return tensors, circular_metadata(cfg, stats)


def to_cross_correlation(kernel: torch.Tensor) -> torch.Tensor:
    """Re-index a convolution kernel for PyTorch's cross-correlation: K[x] = W[-x mod n].

    With it, ``F.conv{d}d(F.pad(x, (0, n-1) * d, mode="circular"), K)`` is exactly the trained
    layer. Its DFT at m is conj(W_hat(m)) = W_hat(-m), so per-frequency singular values match.
    """
    dims = _spatial_dims(kernel.dim() - 2)
    return torch.roll(torch.flip(kernel, dims), shifts=(1,) * len(dims), dims=dims)


def check_fourier_singular_values(net: FourierCircularNet, saved: list[torch.Tensor]) -> None:
    """Assert that numpy's fftn of each saved kernel has, at every frequency of the half grid,
    the singular values of the layer's trained Fourier coefficients (the parameters themselves)."""
    axes = tuple(range(-net.cfg.ndim, 0))
    for coeff, kernel in zip(net.coeffs, saved):
        half = torch.view_as_complex(coeff.detach()).numpy().astype(np.complex128)
        full = np.fft.fftn(kernel.numpy().astype(np.float64), axes=axes)[..., : half.shape[-1]]
        per_freq = [np.moveaxis(a.reshape(a.shape[0], a.shape[1], -1), -1, 0) for a in (half, full)]
        sv_param, sv_saved = (np.linalg.svd(a, compute_uv=False) for a in per_freq)
        err = np.abs(sv_param - sv_saved).max()
        assert err <= 1e-5 * sv_param.max(), f"fft of saved kernel != trained spectrum ({err:.2e})"


def check_saved_kernels(net: FourierCircularNet, x: torch.Tensor) -> None:
    """Assert that the saved kernels, used as PyTorch circular convs, give the trained network."""
    ndim, n = net.cfg.ndim, net.cfg.n
    conv = F.conv1d if ndim == 1 else F.conv2d
    with torch.no_grad():
        expected = net(x)
        h = x
        kernels = net.kernels()
        for i, kernel in enumerate(kernels):
            h = conv(F.pad(h, (0, n - 1) * ndim, mode="circular"), to_cross_correlation(kernel))
            h = F.relu(h) if i < len(kernels) - 1 else h
    err = (h - expected).abs().max().item()
    scale = expected.abs().max().item() + 1e-12
    assert err <= 1e-4 * scale, f"saved kernels disagree with the trained layers ({err:.2e})"


def circular_metadata(cfg: CircularConfig, stats: dict) -> dict[str, str]:
    """The metadata layout shared by all samples, filled in for a full-size circular network."""
    grid = [cfg.n] * cfg.ndim
    names = [f"layers.{i}" for i in range(cfg.depth)]
    layer = {"grid": grid, "stride": [1] * cfg.ndim, "dilation": [1] * cfg.ndim, "groups": 1,
             "padding_mode": "circular", "transposed": False}
    size = "x".join(str(g) for g in grid)
    task = (f"regression (per-pixel MSE), {cfg.samples} samples: input x > 0 a random field on the "
            f"constant frequency and {latent_frequencies(cfg.ndim)} with their mirrors, target "
            f"relu(x - {cfg.threshold:g} * mean(x))")
    if not cfg.trained:
        task = "none: weights at initialisation (control for the trained model of the same seed)"
    return {
        "cbn_inspect.layers": json.dumps({name: layer for name in names}),
        "cbn_inspect.order": json.dumps(names),
        "cbn_inspect.grid": size,
        "architecture": (
            f"{cfg.depth} full-size circular Conv{cfg.ndim}d layers (kernel = grid = {size}, "
            f"stride 1, no bias), channels 1 -> {cfg.width} x {cfg.depth - 1} -> 1, ReLU between "
            f"layers, none after the last; every layer sees a {size} grid"),
        "kernel_convention": (
            "PyTorch cross-correlation: layer(x)[p] = sum_u W[:, :, u] x[:, (p + u) mod n], "
            "i.e. conv with padding (0, n-1) circular on each axis"),
        "task": task,
        "depth": str(cfg.depth),
        "width": str(cfg.width),
        "weight_decay": (f"{cfg.weight_decay:g} (loss = per-pixel MSE + wd * sum of squared "
                         "kernel entries)"),
        "learning_rate": (f"{cfg.lr_start:g} for the first {cfg.lr_hold:.0%} of the steps, then "
                          f"decayed geometrically to {cfg.lr_end:g}"),
        "optimizer": "Adam, full batch, on the real-FFT coefficients of each kernel",
        "steps": str(stats["steps"]),
        "seed": str(cfg.seed),
        "final_loss": f"{stats['final_loss']:.6g}",
        "final_mse": f"{stats['final_mse']:.6g}",
        "layer_squared_norms": json.dumps([round(v, 6) for v in stats["layer_sq_norms"]]),
        "train_seconds": f"{stats['train_seconds']:.1f}",
        "generator": GENERATOR,
    }


# --------------------------------------------------------------------------------------------
# A conventional small CNN on scikit-learn's 8x8 digits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsConfig:
    """The conventional CNN sample and how it is trained."""

    name: str = "digits_cnn"
    # (out channels, stride) per 3x3 conv block; inputs are 8x8
    blocks: tuple[tuple[int, int], ...] = ((16, 1), (32, 2), (32, 1), (64, 2))
    weight_decay: float = 5e-4
    lr: float = 0.05
    momentum: float = 0.9
    epochs: int = 40
    batch_size: int = 64
    seed: int = 0


class ConvBlock(nn.Module):
    """3x3 conv (zero padding, no bias) -> BatchNorm -> ReLU; names match the tool's BN folding."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class DigitsCNN(nn.Module):
    """features.{i} conv blocks, global average pooling, then a linear classifier."""

    def __init__(self, cfg: DigitsConfig) -> None:
        super().__init__()
        chans = [1] + [c for c, _ in cfg.blocks]
        self.features = nn.Sequential(
            *[ConvBlock(chans[i], chans[i + 1], s) for i, (_, s) in enumerate(cfg.blocks)]
        )
        self.classifier = nn.Linear(chans[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(-2, -1)))


def load_digits_split(seed: int) -> tuple[torch.Tensor, ...]:
    """scikit-learn's 8x8 digits (shipped with the package), 75/25 stratified split, in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=0.25, random_state=seed, stratify=digits.target
    )
    return images[idx_train], labels[idx_train], images[idx_test], labels[idx_test]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def train_digits(cfg: DigitsConfig, smoke: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Mini-batch SGD with momentum and weight decay, cosine learning rate; BN saved for eval."""
    make_deterministic(cfg.seed)
    x_train, y_train, x_test, y_test = load_digits_split(cfg.seed)
    model = DigitsCNN(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    batches = math.ceil(len(y_train) / cfg.batch_size)
    total = SMOKE_STEPS if smoke else cfg.epochs * batches
    shuffle = torch.Generator().manual_seed(cfg.seed)
    start, step = time.perf_counter(), 0
    while step < total:
        model.train()
        for idx in torch.randperm(len(y_train), generator=shuffle).split(cfg.batch_size):
            if step == total:
                break
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        train_loss = F.cross_entropy(model(x_train), y_train).item()
    stats = {"steps": total, "train_seconds": seconds, "train_loss": train_loss,
             "train_accuracy": accuracy(model, x_train, y_train),
             "test_accuracy": accuracy(model, x_test, y_test),
             "n_train": len(y_train), "n_test": len(y_test)}
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    return tensors, digits_metadata(cfg, stats)


def digits_metadata(cfg: DigitsConfig, stats: dict) -> dict[str, str]:
    """Metadata for the digits CNN: each conv's input grid follows from the strides before it."""
    layers, order, size = {}, [], 8
    for i, (_, stride) in enumerate(cfg.blocks):
        name = f"features.{i}.conv"
        layers[name] = {"grid": [size, size], "stride": [stride, stride], "dilation": [1, 1],
                        "groups": 1, "padding_mode": "zeros", "transposed": False}
        order.append(name)
        size = (size + 2 - 3) // stride + 1
    chans = " -> ".join(str(c) for c in [1] + [c for c, _ in cfg.blocks])
    grids = ", ".join(f"{n} on {l['grid'][0]}x{l['grid'][1]} stride {l['stride'][0]}"
                      for n, l in layers.items())
    return {
        "cbn_inspect.layers": json.dumps(layers),
        "cbn_inspect.order": json.dumps(order),
        "cbn_inspect.grid": "8x8",
        "architecture": (
            f"conventional CNN: 3x3 conv (zero padding 1, no bias) + BatchNorm + ReLU blocks, "
            f"channels {chans}; {grids}; then global average pooling and a linear classifier "
            f"(classifier.weight, classifier.bias). BatchNorm features.i.bn follows conv "
            f"features.i.conv"),
        "task": (f"10-class classification of scikit-learn's 8x8 digits (load_digits, "
                 f"pixels / 16), "
                 f"stratified split random_state={cfg.seed}: {stats['n_train']} train, "
                 f"{stats['n_test']} test"),
        "depth": str(len(cfg.blocks)),
        "width": chans,
        "weight_decay": f"{cfg.weight_decay:g} (SGD weight_decay, on all parameters)",
        "learning_rate": f"{cfg.lr:g} with cosine decay to 0",
        "optimizer": f"SGD momentum {cfg.momentum:g}, batch {cfg.batch_size}, {cfg.epochs} epochs",
        "steps": str(stats["steps"]),
        "seed": str(cfg.seed),
        "final_loss": f"{stats['train_loss']:.6g} (train cross-entropy, eval mode)",
        "final_accuracy": (f"{stats['test_accuracy']:.4f} (test); "
                           f"train {stats['train_accuracy']:.4f}"),
        "train_seconds": f"{stats['train_seconds']:.1f}",
        "generator": GENERATOR,
    }


# --------------------------------------------------------------------------------------------
# The samples and the command line
# --------------------------------------------------------------------------------------------

CBN_DEMO = CircularConfig(name="cbn_demo", ndim=2, n=16, depth=12, width=8, weight_decay=3e-2,
                          lr_start=3e-3, lr_end=3e-5, lr_hold=0.5, steps=4000, samples=64,
                          threshold=0.9, seed=0)
SAMPLES: dict[str, CircularConfig | DigitsConfig] = {
    "cbn_demo": CBN_DEMO,
    "cbn_demo_untrained": replace(CBN_DEMO, name="cbn_demo_untrained", trained=False),
    "cbn_demo_1d": CircularConfig(name="cbn_demo_1d", ndim=1, n=64, depth=12, width=8,
                                  weight_decay=3e-2, lr_start=3e-3, lr_end=3e-5, lr_hold=0.5,
                                  steps=4000, samples=64, threshold=0.9, seed=0),
    "digits_cnn": DigitsConfig(),
}


def make_sample(name: str, out: Path, smoke: bool) -> Path:
    """Train one sample, write ``out/NAME.safetensors`` (float32) and print a one-line summary."""
    cfg = SAMPLES[name]
    if isinstance(cfg, DigitsConfig):
        tensors, metadata = train_digits(cfg, smoke)
    else:
        tensors, metadata = train_circular(cfg, smoke)
    if smoke:
        metadata["smoke"] = f"true: only {SMOKE_STEPS} training steps, not a real sample"
    path = out / f"{name}.safetensors"
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    result = metadata.get("final_accuracy", "")
    print(f"{name}: {metadata['train_seconds']} s, {metadata['steps']} steps, "
          f"final loss {metadata['final_loss']}" + (f", accuracy {result}" if result else ""),
          flush=True)
    return path


SERIES_EVERY = 400  # steps between the checkpoints of a --series run
SERIES_DIGITS = 4  # step_0000.safetensors ... step_4000.safetensors


def series_folder(name: str) -> str:
    """The folder a --series run of sample NAME writes to, e.g. ``cbn_demo_1d_run``."""
    return f"{name}_run"


def make_series(name: str, out: Path, smoke: bool, every: int = SERIES_EVERY) -> Path:
    """Train sample NAME once, saving a checkpoint every ``every`` steps (step 0 = initialisation).

    Each file is ``out/NAME_run/step_XXXX.safetensors`` (float32) with the sample's metadata plus
    ``step`` and ``global_step`` (updates done), ``series`` (NAME), ``loss`` (at these weights),
    ``train_seconds`` (wall-clock since step 0) and ``total_steps``; the last file also has the sample's
    ``final_loss`` and ``final_mse``. The recipe is exactly the sample's: the last file holds the same tensors as
    ``NAME.safetensors``. Only the full-size circular samples have a series.
    """
    cfg = SAMPLES[name]
    if not isinstance(cfg, CircularConfig) or not cfg.trained:
        raise SystemExit(f"--series: {name} is not a trained circular sample")
    folder = out / series_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    if smoke:
        every = 1
    saved: list[tuple[int, dict[str, torch.Tensor], float, float]] = []
    started: list[float] = []

    def snapshot(step: int, net: FourierCircularNet, loss: float) -> None:
        started.append(started[0] if started else time.perf_counter())
        with torch.no_grad():
            tensors = {f"layers.{i}.weight": to_cross_correlation(k).contiguous()
                       for i, k in enumerate(net.kernels())}
        saved.append((step, tensors, loss, time.perf_counter() - started[0]))

    tensors, metadata = train_circular(cfg, smoke, snapshot=snapshot, every=every)
    total = metadata["steps"]
    for step, snap, loss, elapsed in saved:
        meta = {k: v for k, v in metadata.items()
                if k not in ("final_loss", "final_mse", "layer_squared_norms", "train_seconds")}
        meta.update({
            "series": name, "step": str(step), "global_step": str(step), "total_steps": total,
            "steps": str(step),
            "train_seconds": f"{elapsed:.1f}",
            "loss": "n/a (end of training; see final_loss)" if math.isnan(loss) else f"{loss:.6g}",
            "layer_squared_norms": json.dumps([round(v.square().sum().item(), 6)
                                               for v in snap.values()]),
        })
        if step == int(total):
            meta.update({k: metadata[k] for k in ("final_loss", "final_mse", "train_seconds")})
            assert all(torch.equal(snap[k], tensors[k]) for k in tensors), "last snapshot != final"
        if smoke:
            meta["smoke"] = f"true: only {SMOKE_STEPS} training steps, not a real sample"
        path = folder / f"step_{step:0{SERIES_DIGITS}d}.safetensors"
        save_file({k: v.float().contiguous() for k, v in snap.items()}, str(path), metadata=meta)
    print(f"{name} series: {len(saved)} checkpoints every {every} steps in {folder} "
          f"({metadata['train_seconds']} s)", flush=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SAMPLES), metavar="NAME",
                        help=f"samples to make (default: all of {', '.join(SAMPLES)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: sample_checkpoints/; with --smoke a new "
                             "temporary folder, so the shipped samples are never overwritten)")
    parser.add_argument("--series", action="store_true",
                        help=f"instead of NAME.safetensors, write NAME_run/step_XXXX.safetensors every "
                             f"{SERIES_EVERY} steps of the same training (default NAME: cbn_demo_1d)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"train each sample for {SMOKE_STEPS} steps only (for CI)")
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="cbn_samples_")) if args.smoke else HERE
    out.mkdir(parents=True, exist_ok=True)
    if args.series:
        for name in args.only or ["cbn_demo_1d"]:
            make_series(name, out, args.smoke)
        print(f"wrote {out}", flush=True)
        return 0
    for name in args.only or list(SAMPLES):
        make_sample(name, out, args.smoke)
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
