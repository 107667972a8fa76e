"""Layer order where a file carries none: a chain recovered from channel counts, and how sure it is.

safetensors sorts its keys, so a safetensors state dict says nothing about the data flow. The channel
counts do: the entry layer reads the input's few channels (1 to 3), and a layer whose input channels equal
the previous layer's output channels can follow it. :func:`chain_from_shapes` walks that chain (preferring,
among the layers that fit, one the chain can continue from, so an output head comes last) and falls back to a
natural sort of names only where the shapes cannot decide (a tie, or no layer that fits).

Confidence, reported beside the order (``order_confidence``):

- ``high``: every step was forced (one entry layer, then exactly one layer that fits at each step);
- ``medium``: every step fitted the channel counts, but some ties were broken by name;
- ``low``: the chain broke (no entry layer, or no layer fitting at some step), names decided there.

Depthwise layers stored as ``(C, 1, k, k)`` read as one input channel under the assumed ``groups=1``; they
follow a layer with ``C`` output channels, and are not taken as entry layers while another fits.
"""

from __future__ import annotations

from typing import Sequence

from ..records import ConvLayer

ENTRY_CHANNELS = (1, 2, 3)
# The walk is quadratic in the number of layers; past this many (no real network comes close: ResNet-152
# has 155 conv layers) names decide, so a hostile file of tiny layers cannot make loading slow.
MAX_CHAIN_LAYERS = 4096


def _key(layer: ConvLayer):
    from ._statedict import natural_key

    return natural_key(layer.name)


def _depthwise(layer: ConvLayer) -> bool:
    return not layer.transposed and layer.groups == 1 and layer.shape[1] == 1 and layer.shape[0] > 3


def _follows(layer: ConvLayer, previous: ConvLayer) -> bool:
    """Whether ``layer`` can read ``previous``'s output (equal channels, or a depthwise conv over them)."""
    if layer.in_channels == previous.out_channels:
        return True
    return _depthwise(layer) and layer.shape[0] == previous.out_channels


def file_order_confidence(layers: Sequence[ConvLayer]) -> str:
    """``high`` when the file's own order is a chain of matching channel counts, else ``medium``."""
    if not layers:
        return "high"
    links = sum(_follows(b, a) for a, b in zip(layers, layers[1:]))
    return "high" if links == len(layers) - 1 and layers[0].in_channels in ENTRY_CHANNELS else "medium"


def chain_from_shapes(layers: Sequence[ConvLayer]) -> tuple[list[ConvLayer], str, str]:
    """The layers reordered as a chain of channel counts; the confidence; a short account of what decided."""
    remaining = sorted(layers, key=_key)
    if len(remaining) < 2:
        return remaining, "high", "a single layer"
    if len(remaining) > MAX_CHAIN_LAYERS:
        return remaining, "low", (f"{len(remaining)} layers, more than the {MAX_CHAIN_LAYERS} a chain is recovered "
                                  "for: natural sort of names")
    ties = breaks = 0
    entries = [layer for layer in remaining if layer.in_channels in ENTRY_CHANNELS and not _depthwise(layer)]
    entries = entries or [layer for layer in remaining if layer.in_channels in ENTRY_CHANNELS]
    if entries:
        first = entries[0]
        ties += len(entries) > 1
    else:
        first, breaks = remaining[0], breaks + 1
    chain = [first]
    remaining.remove(first)
    while remaining:
        fits = [layer for layer in remaining if _follows(layer, chain[-1])]
        # prefer a layer the chain can go on from; a dead end (an output head) only when nothing else fits
        alive = [f for f in fits if any(_follows(other, f) for other in remaining if other is not f)]
        fits = alive or fits
        if fits:
            ties += len(fits) > 1
            nxt = fits[0]
        else:
            nxt, breaks = remaining[0], breaks + 1
        chain.append(nxt)
        remaining.remove(nxt)
    confidence = "low" if breaks else ("medium" if ties else "high")
    entry = (f"entry layer {first.name} ({first.in_channels} input channels)" if entries
             else "no entry layer with 1-3 input channels")
    how = f"{entry}; {ties} tie(s) and {breaks} break(s) in the chain decided by name"
    return chain, confidence, how
