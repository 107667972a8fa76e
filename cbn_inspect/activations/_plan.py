"""Memory plan of an activation profile, made before the first input is fed: batch size and layer groups.

What an activation profile holds, per layer profiled (THEORY.md, "From activations"; :mod:`.gram`):

- the Gram sums: ``|N_half| * C^2`` complex128 (16 bytes) per layer, for the whole run, whatever the
  number of inputs (``N_half`` is the rfft half of the grid, about ``|N| / 2``);
- per batch of ``B`` inputs, the feature maps the runner hands over (``C * |N|`` float32 per input and
  layer): a module runs with hooks, so the model's own activations are live once; onnxruntime keeps every
  exposed output in its buffers and returns numpy copies that are concatenated and converted, so the
  exposed maps count three times more (the runner turns onnxruntime's arena off, so these are freed after
  every batch);
- per layer while it is added, the rfft (complex64) and its complex128 copy: ``|N_half| * C * B * 24`` bytes.

The shapes come from a probe pass of a single zero input (:func:`probe_layers`). :func:`plan_memory`
then picks the largest batch size up to the one asked for, and groups the layers so that each group's
Gram sums fit next to one batch: one group is one pass over the inputs (several passes read or
recompute the inputs again, never hold them). A layer whose Gram sums alone do not fit next to a batch
of one is refused at once (:class:`ResourceLimitError`, exit 7), saying what would fit. Pure arithmetic
apart from the probe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..analysis.budget import format_bytes
from ..errors import ResourceLimitError

GRAM_ITEM = 16  # complex128
MAP_ITEM = 4  # float32
TRANSIENT_PER_ROW = 24  # rfft complex64 + its complex128 copy, per (frequency, channel, input)
ONNX_EXPOSED_COPIES = 3  # onnxruntime's output buffer, the numpy result, the concatenated float32 copy
SLACK = 1.5  # allocator fragmentation and the numpy/torch temporaries not counted above
MAX_PASSES = 256


@dataclass(frozen=True)
class LayerShape:
    """One conv layer as the probe saw it: its feature map's ``(C, *grid)`` and the layer it shares it with."""

    name: str
    shape: tuple[int, ...]
    alias: str | None = None  # the earlier layer whose input is the very same tensor

    @property
    def channels(self) -> int:
        return int(self.shape[0])

    @property
    def half(self) -> int:
        grid = self.shape[1:]
        return math.prod(grid[:-1]) * (grid[-1] // 2 + 1) if grid else 1

    @property
    def gram_bytes(self) -> int:
        return 0 if self.alias else self.half * self.channels**2 * GRAM_ITEM

    @property
    def map_bytes(self) -> int:
        return math.prod(self.shape) * MAP_ITEM

    @property
    def transient_bytes(self) -> int:
        return 0 if self.alias else self.half * self.channels * TRANSIENT_PER_ROW


@dataclass(frozen=True)
class ActivationPlan:
    batch_size: int
    groups: tuple[tuple[str, ...], ...]  # layer names accumulated together, one pass over the inputs each
    estimate_bytes: int  # the largest pass: its Gram sums and one batch
    room_bytes: int
    notes: tuple[str, ...] = ()


def probe_layers(runner: Any, input_shape: tuple[int, ...], pattern: Any) -> tuple[list[LayerShape], dict[str, int]]:
    """Run one zero input through ``runner``; every conv layer's feature-map shape (in execution order,
    ``pattern`` applied), aliases by tensor identity, and the layers called several times per pass."""
    import torch

    seen: dict[str, LayerShape] = {}
    by_id: dict[int, str] = {}
    held: list[Any] = []  # keeps every tensor alive during the pass, so ids stay unique
    repeats: dict[str, int] = {}

    def sink(name: str, tensor: Any) -> None:
        if pattern is not None and not pattern.search(name):
            return
        if name in seen:
            repeats[name] = repeats.get(name, 1) + 1
            return
        if tensor.ndim < 3:
            seen[name] = LayerShape(name, ())
            return
        held.append(tensor)
        alias = by_id.get(id(tensor))
        seen[name] = LayerShape(name, tuple(int(v) for v in tensor.shape[1:]), alias)
        by_id.setdefault(id(tensor), name)

    runner.run(torch.zeros((1, *input_shape), dtype=torch.float32), sink)
    return [layer for layer in seen.values() if layer.shape], repeats


def batch_bytes(layers: list[LayerShape], group: set[str], batch: int, onnx: bool) -> int:
    """One batch's feature maps and transients while the layers of ``group`` are accumulated."""
    maps = sum(layer.map_bytes for layer in layers)
    exposed = sum(layer.map_bytes for layer in layers if layer.name in group or layer.alias in group)
    held = maps + (ONNX_EXPOSED_COPIES * exposed if onnx else 0)
    transient = max((layer.transient_bytes + layer.map_bytes for layer in layers if layer.name in group), default=0)
    return int(SLACK * batch * (held + transient))


def plan_memory(layers: list[LayerShape], batch_size: int, room_bytes: int, *, onnx: bool = False,
                limit_mb: int | None = None, fixed_batch: int | None = None) -> ActivationPlan:
    """The batch size and layer groups that keep the run within ``room_bytes``; refuses (exit 7) otherwise."""
    targets = [layer for layer in layers if not layer.alias]
    names = {layer.name for layer in targets}
    biggest = max(targets, key=lambda layer: layer.gram_bytes)
    notes: list[str] = []
    floor = fixed_batch or 1  # a static batch axis runs that many at a time anyway
    batch = max(1, batch_size)
    # the batch: at most half the room for all layers' maps at once, and room for the largest Gram next to it
    while batch > floor and (batch_bytes(layers, names, batch, onnx) > room_bytes // 2
                             or int(SLACK * biggest.gram_bytes) + batch_bytes(layers, {biggest.name}, batch, onnx)
                             > room_bytes):
        batch = max(floor, batch // 2)
    alone = int(SLACK * biggest.gram_bytes) + batch_bytes(layers, {biggest.name}, batch, onnx)
    if alone > room_bytes:
        _refuse(biggest, alone, room_bytes, limit_mb, layers, batch)
    if batch < batch_size:
        notes.append(f"batch size lowered from {batch_size} to {batch} to stay within --max-memory")
    groups: list[list[LayerShape]] = []
    current: list[LayerShape] = []
    for layer in targets:
        trial = current + [layer]
        need = (int(SLACK * sum(t.gram_bytes for t in trial))
                + batch_bytes(layers, {t.name for t in trial}, batch, onnx))
        if current and need > room_bytes:
            groups.append(current)
            trial = [layer]
        current = trial
    groups.append(current)
    if len(groups) > MAX_PASSES:
        raise ResourceLimitError(
            f"the layers' Gram sums ({format_bytes(sum(t.gram_bytes for t in targets))} in all) would need "
            f"{len(groups)} passes over the inputs within --max-memory", hint="a larger --max-memory, or --layers")
    estimate = max(int(SLACK * sum(t.gram_bytes for t in g)) + batch_bytes(layers, {t.name for t in g}, batch, onnx)
                   for g in groups)
    if len(groups) > 1:
        notes.append(f"the layers' Gram sums ({format_bytes(sum(t.gram_bytes for t in targets))}) do not fit "
                     f"together within --max-memory: {len(groups)} groups of layers, one pass over the inputs each")
    return ActivationPlan(batch_size=batch, groups=tuple(tuple(t.name for t in g) for g in groups),
                          estimate_bytes=estimate, room_bytes=room_bytes, notes=tuple(notes))


def _refuse(layer: LayerShape, need: int, room: int, limit_mb: int | None, layers: list[LayerShape],
            batch: int) -> None:
    grid = "x".join(str(v) for v in layer.shape[1:])
    used = (limit_mb * 2**20 - room) if limit_mb else 0
    total_mb = math.ceil((need + max(used, 0)) / 2**20)
    fits = [t.name for t in layers if not t.alias and int(SLACK * t.gram_bytes)
            + batch_bytes(layers, {t.name}, batch, False) <= room]
    also = f"; {len(fits)} of the layers fit alone (pick them with --layers)" if fits else ""
    raise ResourceLimitError(
        f"--activations: layer {layer.name} ({layer.channels} channels on grid {grid}) needs about {format_bytes(need)} for its "
        f"Gram sums and a batch of {batch}; --max-memory leaves {format_bytes(max(room, 0))}",
        hint=f"--max-memory {total_mb} or more would fit it{also}, or a smaller --input-size")


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc's ``malloc_trim``), so that what one pass freed is
    room for the next: the many mid-sized batch buffers otherwise stay resident after they are freed."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
