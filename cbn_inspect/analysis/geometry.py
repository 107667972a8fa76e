"""From a stored conv weight and its geometry to the kernel whose per-frequency matrices are wanted.

A strided, dilated, grouped or transposed convolution on grid N is rewritten as a plain stride-1 grouped
convolution on a (possibly coarser) grid, whose per-frequency singular values are exactly the operator's
(THEORY.md, "Per-frequency matrices"):

- transposed: the adjoint of a conv whose weight has the same layout, on the grid ``N * stride``;
- dilation: zeros inserted between taps;
- kernel larger than the grid: taps wrapped modulo n;
- stride s: the grid-padded kernel split into s^d polyphase components, stacked as input channels, on the
  coarse grid N / s.

Pure tensor code: no I/O, no printing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import AnalysisError


# No geometry beyond this many grid positions (or dilated kernel taps) is analysed: past it the sizes do not
# describe a network but overflow tensor sizes (what an analysis may cost below it: the resource limits).
MAX_POSITIONS = 2**32


@dataclass(frozen=True)
class KernelPlan:
    """A stride-1 grouped kernel ``(groups, C_out/g, C_in_eff/g, *taps)`` on ``grid``, ready for a DFT."""

    kernel: torch.Tensor
    grid: tuple[int, ...]
    exact: bool
    notes: tuple[str, ...]
    wrapped: bool = False  # taps folded modulo a grid smaller than the kernel: not the layer the network runs
    rank_bound: int | None = None  # singular values per frequency the geometry allows (union over groups)


def _as_tuple(value: tuple[int, ...] | None, d: int, default: int = 1) -> tuple[int, ...]:
    if value is None:
        return (default,) * d
    if len(value) == 1 and d > 1:
        return tuple(value) * d
    if len(value) != d:
        raise AnalysisError(f"expected {d} values per spatial axis, got {tuple(value)}")
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AnalysisError(f"not integers per spatial axis: {tuple(value)!r}") from exc


def _dilate(kernel: torch.Tensor, dilation: tuple[int, ...]) -> torch.Tensor:
    d = len(dilation)
    taps = kernel.shape[-d:]
    size = tuple((t - 1) * r + 1 for t, r in zip(taps, dilation))
    out = kernel.new_zeros(kernel.shape[:-d] + size)
    index = (Ellipsis,) + tuple(slice(None, None, r) for r in dilation)
    out[index] = kernel
    return out


def _wrap(kernel: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Fold taps beyond the grid back modulo n (a circular conv only sees the kernel modulo the grid)."""
    d = len(grid)
    for axis, n in enumerate(grid):
        dim = kernel.ndim - d + axis
        t = kernel.shape[dim]
        if t <= n:
            continue
        folds = math.ceil(t / n)
        pad = [0, 0] * (kernel.ndim - dim - 1) + [0, folds * n - t]
        padded = torch.nn.functional.pad(kernel, pad)
        shape = padded.shape[:dim] + (folds, n) + padded.shape[dim + 1 :]
        kernel = padded.reshape(shape).sum(dim=dim)
    return kernel


def _polyphase(kernel: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """Split each spatial axis into ``stride`` phases and stack the phases as extra input channels.

    Component r of axis j holds taps ``s*u + r``; on the coarse grid the strided conv is the sum over r of
    stride-1 convs of component r with input phase r, i.e. one conv with ``s^d`` times the input channels.
    """
    d = len(stride)
    g, co, ci = kernel.shape[:3]
    taps = kernel.shape[3:]
    padded_taps = tuple(math.ceil(t / s) * s for t, s in zip(taps, stride))
    pad: list[int] = []
    for t, p in reversed(list(zip(taps, padded_taps))):
        pad += [0, p - t]
    kernel = torch.nn.functional.pad(kernel, pad)
    split: list[int] = []
    for p, s in zip(padded_taps, stride):
        split += [p // s, s]
    kernel = kernel.reshape((g, co, ci, *split))
    coarse_axes = [3 + 2 * j for j in range(d)]
    phase_axes = [4 + 2 * j for j in range(d)]
    kernel = kernel.permute(0, 1, 2, *phase_axes, *coarse_axes)
    return kernel.reshape((g, co, ci * math.prod(stride), *(p // s for p, s in zip(padded_taps, stride))))


def plan_kernel(
    weight: torch.Tensor,
    grid: tuple[int, ...],
    *,
    groups: int = 1,
    stride: tuple[int, ...] | None = None,
    dilation: tuple[int, ...] | None = None,
    transposed: bool = False,
) -> KernelPlan:
    """Rewrite a conv (PyTorch weight layout) as a stride-1 grouped kernel on the grid its spectrum lives on.

    ``grid`` is the layer's input spatial size. For a transposed conv the weight layout
    ``(C_in, C_out/groups, *k)`` is read as the conv it is the adjoint of.
    """
    d = weight.ndim - 2
    if d not in (1, 2, 3):
        raise AnalysisError(f"a conv weight has 3 to 5 axes, got shape {tuple(weight.shape)}")
    grid = _as_tuple(grid, d)
    stride = _as_tuple(stride, d)
    dilation = _as_tuple(dilation, d)
    if min(grid) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise AnalysisError(f"grid, stride and dilation must be positive: {grid}, {stride}, {dilation}")
    extent = [(t - 1) * r + 1 for t, r in zip(weight.shape[2:], dilation)]
    if math.prod(grid) * math.prod(stride) > MAX_POSITIONS or math.prod(extent) > MAX_POSITIONS:
        raise AnalysisError(f"grid {_fmt(grid)}, stride {_fmt(stride)} and dilation {_fmt(dilation)} are too "
                            f"large to analyse (more than {MAX_POSITIONS} positions)")
    rows = weight.shape[0]
    if groups < 1 or rows % groups:
        raise AnalysisError(f"{rows} output rows of the weight do not split into {groups} groups")
    notes: list[str] = []
    exact = True
    if transposed:
        grid = tuple(n * s for n, s in zip(grid, stride))
    elif any(n % s for n, s in zip(grid, stride)):
        rounded = tuple(math.ceil(n / s) * s for n, s in zip(grid, stride))
        notes.append(f"grid {_fmt(grid)} not divisible by stride {_fmt(stride)}: analysed on {_fmt(rounded)}")
        grid, exact = rounded, False
    kernel = weight.reshape((groups, rows // groups) + tuple(weight.shape[1:]))
    taps = torch.ones((1, 1, 1) + tuple(weight.shape[2:]), dtype=torch.float64)  # where taps can be: geometry
    if any(r > 1 for r in dilation):
        kernel = _dilate(kernel, dilation)
        taps = _dilate(taps, dilation)
    wrapped = any(t > n for t, n in zip(kernel.shape[3:], grid))
    if wrapped:
        notes.append(f"kernel {_fmt(tuple(kernel.shape[3:]))} larger than grid {_fmt(grid)}: taps wrapped")
        kernel = _wrap(kernel, grid)
        taps = _wrap(taps, grid)
    rank_bound = None
    if any(s > 1 for s in stride):
        phases = _occupied_phases(taps, stride)
        kernel = _polyphase(kernel, stride)
        grid = tuple(n // s for n, s in zip(grid, stride))
        g, co, ci = kernel.shape[:3]
        possible = g * min(co, ci // math.prod(stride) * phases)
        if possible < g * min(co, ci):
            rank_bound = possible
    return KernelPlan(kernel=kernel, grid=grid, exact=exact, notes=tuple(notes), wrapped=wrapped,
                      rank_bound=rank_bound)


def _occupied_phases(taps: torch.Tensor, stride: tuple[int, ...]) -> int:
    """How many of the s^d polyphase components can hold a tap, from the mask of tap positions (after
    dilation and wrapping). Geometry only, never the weights' values: a strided 1x1 conv fills one of s^d,
    so the other components are structural zeros (a zero a trained weight happens to hold is not one)."""
    phases = _polyphase(taps, stride)  # (1, 1, s^d, *coarse taps)
    return int((phases != 0).flatten(3).any(dim=-1).sum())


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)
