"""How much memory one layer's analysis needs, from its geometry alone: checked before anything is allocated.

The spectrum of a layer has one row per conjugate class of frequencies of the grid it lives on (about half
the grid's points) and ``groups x min(C_out, C_in)`` values per row, kept in float64; the frequency tables,
the tolerance rule's masks and weights, and the degree tables are of the same order; the per-frequency
matrices are processed in chunks within ``memory_budget_mb``; the kernel is copied a few times in float64
(dilation, wrapping, polyphase). :func:`layer_working_set` adds these up (an upper estimate, not a
measurement), so a grid of 100,000 or a metadata grid of 4096 is refused before the first array exists.
Pure arithmetic: no tensors, no I/O.
"""

from __future__ import annotations

import math

from ..records import ConvLayer

_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
SPECTRUM_COPIES = 8  # values, kept mask, weights, sorted and rule copies (measured: 6-8x on 1x1 and depthwise layers)
FREQUENCY_BYTES_PER_POINT_AND_AXIS = 40  # indices, mirror, flat indices, degrees (int64 and float64 tables)
KERNEL_COPIES = 6  # float64 weight, BatchNorm fold, dilation, wrap, polyphase, tap layout


def spectrum_grid(layer: ConvLayer) -> tuple[int, ...]:
    """The grid the per-frequency matrices live on (the coarse grid of a strided conv), without building it."""
    assert layer.grid is not None, "resolve_grid first"
    d = layer.ndim
    grid = tuple(layer.grid) if len(layer.grid) == d else (layer.grid[0],) * d
    stride = tuple(layer.stride or (1,) * d)
    if len(stride) != d:
        stride = (stride[0],) * d
    if layer.transposed:
        return grid
    return tuple(-(-n // max(1, s)) for n, s in zip(grid, stride))


def spectrum_bytes(layer: ConvLayer) -> int:
    """Bytes of the layer's kept spectrum (values and frequency tables)."""
    grid = spectrum_grid(layer)
    points = math.prod(grid)
    rows = points // 2 + 1
    d = layer.ndim
    g = max(1, layer.groups)
    stride = math.prod(layer.stride or (1,) * d)
    co, ci = layer.out_channels // g, max(1, layer.in_channels // g) * stride
    width = g * max(1, min(co, ci))
    return rows * width * 8 + rows * (d + 1) * 8


def layer_working_set(layer: ConvLayer, memory_budget_mb: int) -> int:
    """Upper estimate of the bytes analysing ``layer`` (grid resolved) needs at its peak."""
    grid = spectrum_grid(layer)
    points = math.prod(grid)
    d = layer.ndim
    rows = points // 2 + 1
    g = max(1, layer.groups)
    stride = math.prod(layer.stride or (1,) * d)
    co, ci = layer.out_channels // g, max(1, layer.in_channels // g) * stride
    width = g * max(1, min(co, ci))
    dilation = layer.dilation or (1,) * d
    taps = math.prod((k - 1) * max(1, r) + 1 for k, r in zip(layer.kernel_size, dilation))  # dilated, before wrapping
    kernel = g * co * ci * max(1, taps) * 8 * KERNEL_COPIES
    stored = math.prod(layer.shape) * (8 + _ITEMSIZE.get(layer.dtype, 8))
    frequencies = points * d * FREQUENCY_BYTES_PER_POINT_AND_AXIS + points * 24
    return (rows * width * 8 * SPECTRUM_COPIES + frequencies + kernel + stored
            + memory_budget_mb * 2**20 * 5 // 4)


def format_bytes(n: float) -> str:
    """``1536 MiB`` or ``4.2 GiB``."""
    if n >= 10 * 2**30:
        return f"{n / 2**30:.0f} GiB"
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{max(1, round(n / 2**20))} MiB"
