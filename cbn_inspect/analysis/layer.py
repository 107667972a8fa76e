"""From one loaded layer's weight tensor to its report: grid rule, BatchNorm fold, spectrum, counts.

Pure: the caller hands in the weight tensor (loading it is the loader's business), and gets a record back.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..records import BatchNormParams, ConvLayer, LayerEvidence, LayerReport, Settings
from ._threads import analysis_threads, configure_threads, submit
from .counting import count_modes, metrics_from_counts
from .counts import compute_counts
from .geometry import plan_kernel
from .spectrum import compute_spectrum, gram_layout

if TYPE_CHECKING:
    from concurrent.futures import Future


def unit_axes(layers: Sequence[ConvLayer]) -> dict[int, frozenset[int]]:
    """Per number of spatial axes: the axes on which every such layer's kernel has extent 1 (and stride 1),
    while some other axis has a longer kernel -- 1-D convolutions stored as ``(k, 1)`` Conv2d, as audio models
    do. The feature map has extent 1 there, so a default grid must be 1 on those axes, not 32."""
    out: dict[int, frozenset[int]] = {}
    for d in {layer.ndim for layer in layers}:
        same = [layer for layer in layers if layer.ndim == d]
        axes = frozenset(
            j for j in range(d)
            if all(layer.kernel_size[j] == 1 and (layer.stride is None or layer.stride[j if len(layer.stride) > 1 else 0] == 1)
                   for layer in same)
        )
        if axes and any(layer.kernel_size[j] > 1 for layer in same for j in range(d) if j not in axes):
            out[d] = axes
    return out


def resolve_grid(layer: ConvLayer, settings: Settings, unit: frozenset[int] = frozenset()) -> ConvLayer:
    """Fill the layer's grid by THEORY.md's order of preference: trace, metadata, user flag, default.

    The default is ``settings.default_grid`` on every spatial axis, raised to the kernel size where the
    kernel is larger (a kernel as large as the grid is the full-size circular case), and 1 on the ``unit``
    axes (see :func:`unit_axes`); a one-number ``--grid`` also leaves the unit axes at 1.
    """
    if layer.grid is not None and layer.grid_source in ("trace", "metadata"):
        return layer
    d = layer.ndim
    note = (f"kernel extent 1 on spatial axis {', '.join(str(j) for j in sorted(unit))} in every layer: "
            "grid 1 there",) if unit else ()
    if settings.grid is not None:
        if len(settings.grid) == d:
            return dataclasses.replace(layer, grid=tuple(settings.grid), grid_source="flag")
        grid = tuple(1 if j in unit else settings.grid[0] for j in range(d))
        return dataclasses.replace(layer, grid=grid, grid_source="flag", notes=layer.notes + note)
    grid = tuple(1 if j in unit else max(settings.default_grid, k) for j, k in enumerate(layer.kernel_size))
    return dataclasses.replace(layer, grid=grid, grid_source="default", notes=layer.notes + note)


def fold_batchnorm(weight: torch.Tensor, bn: BatchNormParams, *, transposed: bool, groups: int) -> torch.Tensor:
    """Scale each output channel by gamma / sqrt(var + eps), the BatchNorm's linear part at inference."""
    scale = 1.0 / torch.sqrt(bn.running_var.to(weight.dtype) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(weight.dtype)
    if not transposed:
        return weight * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
    rows_per_group = weight.shape[0] // groups
    cols = weight.shape[1]
    per_row = scale.reshape(groups, 1, cols).expand(groups, rows_per_group, cols).reshape(weight.shape[0], cols)
    return weight * per_row.reshape(per_row.shape + (1,) * (weight.ndim - 2))


# Why a conv with non-zero kernels is all zero once its BatchNorm is folded in (timm's ResNets at initialisation).
ZERO_SCALE_NOTE = ("its kernel is not zero, but the BatchNorm after it scales every channel by 0: timm (zero_init_last) "
                   "and torchvision (zero_init_residual) initialise the last BatchNorm of each residual block so; "
                   "--no-fold-bn analyses the kernel itself")


SPECTRUM_ROUTES = ("auto", "full")


def counts_route_applies(settings: Settings) -> bool:
    """Whether ``settings`` ask only for what the counts route (:mod:`.counts`) gives exactly: a relative or
    absolute rule, no kept spectra, the float32 accuracy level (the Gram path), the CPU, and no --exact-values."""
    return (settings.spectrum_route == "auto" and not settings.keep_spectra and settings.precision == "float32"
            and settings.device == "cpu" and settings.tolerance.name in ("relative", "absolute"))


def analyze_layer(layer: ConvLayer, weight: torch.Tensor, settings: Settings, route: str | None = None) -> LayerReport:
    """Spectrum and metrics of one layer whose grid is resolved (see :func:`resolve_grid`).

    ``route`` None follows ``settings`` (:func:`counts_route_applies`); ``full`` computes every value;
    ``counts`` takes the counts route where the layer allows it (tests, benchmarks). The report's ``route``
    says which ran: a layer the counts route does not serve (one tap, depthwise, zero) is ``full``."""
    assert layer.grid is not None, "resolve_grid first"
    if settings.threads is not None:
        configure_threads(settings.threads)
    notes = list(layer.notes)
    # BatchNorm fold, dilation, wrapping and polyphase in float64 whatever the precision: exact for float32
    # weights, cheap (one layer at a time), and it keeps float32 rounding out of wrapped small-grid kernels.
    compute = torch.float64
    weight = weight.detach().to(dtype=compute if weight.is_floating_point() else torch.float32)
    if not _all_finite(weight):
        bad = int((~torch.isfinite(weight)).sum())
        return LayerReport(layer=layer, spectrum_grid=None, exact=False, metrics=None,
                           flags=("nonfinite",), notes=(f"{bad} NaN/Inf weights: layer not analysed",))
    flags = list(layer.flags)
    raw_nonzero = bool(weight.numpy().any()) if weight.device.type == "cpu" else bool(weight.any())
    if layer.batchnorm is not None and settings.fold_batchnorm:
        folded, refusal = _fold_checked(weight, layer)
        if refusal:
            notes.append(refusal)
        else:
            weight = folded
            flags.append("batchnorm-folded")
            notes.append(f"BatchNorm {layer.batchnorm.name} folded in")
    weight, exponent = _normalise(weight)
    plan = plan_kernel(weight, layer.grid, groups=layer.groups, stride=layer.stride,
                       dilation=layer.dilation, transposed=layer.transposed)
    notes.extend(plan.notes)
    tolerance = settings.tolerance
    if exponent and tolerance.name == "absolute":  # an absolute threshold applies to the unscaled values
        tolerance = dataclasses.replace(tolerance, value=_ldexp(tolerance.value, -exponent))
    counted = layout = None
    forced = route == "counts" and settings.device == "cpu" and settings.precision == "float32" and \
        tolerance.name in ("relative", "absolute")
    if forced or route is None and counts_route_applies(settings):
        # built once: the full route reuses it where the counts route declines the layer
        layout = gram_layout(plan, "cpu", settings.memory_budget_mb)
        counted = compute_counts(plan, tolerance, memory_budget_mb=settings.memory_budget_mb, force=forced,
                                 layout=layout)
    if counted is not None:
        spectrum, metrics = None, metrics_from_counts(counted)
    else:
        spectrum = compute_spectrum(plan, precision=settings.precision, device=settings.device,
                                    memory_budget_mb=settings.memory_budget_mb, layout=layout)
        metrics = count_modes(spectrum, tolerance)
    if exponent:
        metrics, spectrum = _denormalise(metrics, spectrum, exponent)
        if not math.isfinite(metrics.spectral_norm):
            return LayerReport(layer=layer, spectrum_grid=None, exact=False, metrics=None, flags=("overflow",),
                               notes=tuple(notes) + ("singular values beyond float64's range: layer not analysed",))
        notes.append(f"weights of magnitude 2^{exponent} analysed scaled by 2^{-exponent} (exact)")
    # A kernel larger than its grid is analysed with its taps wrapped: exact for the wrapped operator, not
    # for the layer the network runs, so never exact (and never a strong bottleneck call).
    exact = plan.exact and not plan.wrapped and layer.padding_mode == "circular" and layer.grid_source != "default"
    if layer.padding_mode != "circular":
        flags.append("approximate")
    if plan.wrapped:
        flags.append("wrapped-kernel")
    if layer.grid_source == "default":
        flags.append("default-grid")
    if metrics.spectral_norm == 0:
        flags.append("zero")
        notes.append("all weights are zero (after BatchNorm folding): not a bottleneck candidate")
        if raw_nonzero and "batchnorm-folded" in flags:
            notes.append(ZERO_SCALE_NOTE)
    return LayerReport(layer=layer, spectrum_grid=plan.grid, exact=exact, metrics=metrics,
                       spectrum=spectrum if settings.keep_spectra else None,
                       flags=tuple(flags), notes=tuple(notes), route="full" if counted is None else "counts")


def layer_evidence(report: LayerReport) -> LayerEvidence:
    """What the bottleneck call may use of an analysed layer besides its counts (channels, grid, wrapping)."""
    layer = report.layer
    return LayerEvidence(in_channels=layer.in_channels, out_channels=layer.out_channels, grid=layer.grid,
                         exact=report.exact, wrapped="wrapped-kernel" in report.flags)


def submit_layer(layer: ConvLayer, weight: torch.Tensor, settings: Settings) -> "Future[LayerReport]":
    """:func:`analyze_layer` on an analysis thread; the future's result is the report (or its exception).

    With ``threads`` workers, a caller that keeps up to ``threads`` layers in flight lets small layers
    (one tap, a single eigensolve) overlap the frequency chunks of big ones. Results do not depend on it.
    On a GPU the layer runs here, in the caller's thread: the device serialises the work anyway, and torch's
    CUDA linear algebra is loaded lazily in a way that two threads must not race (seen on an H100 with torch
    2.11: "lazy wrapper should be called at most once").
    """
    if settings.threads is not None:
        configure_threads(settings.threads)
    return submit(analyze_layer, layer, weight, settings, inline=settings.device != "cpu")


def layers_in_flight(settings: Settings) -> int:
    """How many layers a caller of :func:`submit_layer` should keep in flight (bounds memory too)."""
    if settings.device != "cpu":
        return 1
    return settings.threads if settings.threads is not None else analysis_threads()


# Weights whose largest magnitude lies outside [2^-64, 2^64] are analysed scaled by a power of two (exact),
# so that Gram matrices (squares) and energies stay far from float64's overflow and underflow; singular
# values are linear in the weight, so the absolute results are scaled back. Inside the range nothing changes.
_NORMAL_RANGE = (2.0**-64, 2.0**64)


def _ldexp(value: float, exponent: int) -> float:
    with np.errstate(over="ignore", under="ignore"):
        return float(np.ldexp(value, exponent))


def _normalise(weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``weight * 2^-e`` with its largest magnitude in [0.5, 1), and ``e``; ``e = 0`` for ordinary weights."""
    peak = float(weight.abs().max()) if weight.numel() else 0.0
    if peak == 0.0 or _NORMAL_RANGE[0] <= peak <= _NORMAL_RANGE[1]:
        return weight, 0
    exponent = math.frexp(peak)[1]
    return torch.ldexp(weight, torch.tensor(-exponent, dtype=weight.dtype)), exponent


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or Inf in ``tensor``; numpy's check on the CPU (about 15x faster than torch's at these sizes)."""
    if tensor.device.type == "cpu":
        return bool(np.isfinite(tensor.numpy()).all())
    return bool(torch.isfinite(tensor).all())


def _denormalise(metrics, spectrum, exponent: int):
    """Scale the absolute quantities of a layer analysed at ``2^-exponent`` back (ratios are unchanged)."""
    def back(value):
        return None if value is None else _ldexp(value, exponent)

    metrics = dataclasses.replace(
        metrics, threshold=back(metrics.threshold), spectral_norm=back(metrics.spectral_norm),
        smallest_kept=back(metrics.smallest_kept), largest_discarded=back(metrics.largest_discarded),
        profile=tuple(back(v) for v in metrics.profile), leading=tuple(back(v) for v in metrics.leading))
    if spectrum is not None:
        with np.errstate(over="ignore", under="ignore"):
            spectrum = dataclasses.replace(spectrum, values=np.ldexp(spectrum.values, exponent))
    return metrics, spectrum


def _fold_checked(weight: torch.Tensor, layer: ConvLayer) -> tuple[torch.Tensor, str | None]:
    """The BatchNorm-folded weight, or the reason folding is refused (the layer is then analysed unfolded).

    A running variance with ``var + eps <= 0`` (negative or zero variance, a zero or negative epsilon), a
    non-finite BatchNorm vector or a fold that overflows has no inference-time linear map to fold.
    """
    bn = layer.batchnorm
    try:
        var = torch.as_tensor(bn.running_var).detach().to(torch.float64).reshape(-1)
        gamma = None if bn.weight is None else torch.as_tensor(bn.weight).detach().to(torch.float64).reshape(-1)
        eps = float(bn.eps)
    except (TypeError, ValueError, RuntimeError) as exc:
        return weight, f"BatchNorm {bn.name} not folded: its parameters cannot be read ({exc})"
    channels = layer.out_channels
    if var.numel() != channels or (gamma is not None and gamma.numel() != channels):
        return weight, f"BatchNorm {bn.name} not folded: {var.numel()} variances for {channels} output channels"
    if not math.isfinite(eps) or not bool(torch.isfinite(var).all()) or (
            gamma is not None and not bool(torch.isfinite(gamma).all())):
        return weight, f"BatchNorm {bn.name} not folded: non-finite running_var, weight or eps"
    if bool(((var + eps) <= 0).any()):
        bad = int(((var + eps) <= 0).sum())
        return weight, (f"BatchNorm {bn.name} not folded: running_var + eps is not positive in {bad} channel(s) "
                        "(no inference-time scale); analysed unfolded")
    bn = dataclasses.replace(bn, running_var=var, weight=gamma, eps=eps)
    folded = fold_batchnorm(weight, bn, transposed=layer.transposed, groups=layer.groups)
    if not _all_finite(folded):
        return weight, f"BatchNorm {bn.name} not folded: the folded weights overflow; analysed unfolded"
    return folded, None
