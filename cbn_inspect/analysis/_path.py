"""Which layers lie off the main path, for the bottleneck call (THEORY.md, "Locating the bottleneck").

A squeeze-excitation pair, an attention gate, a shortcut projection or a side head is a conv layer, but the
features that form a bottleneck do not flow through it. Such a *side layer* neither breaks a run of the
main path nor forms one. The rule, from evidence in the records only (first that applies):

1. ``1x1 grid``: the layer's input grid (or, without one, its spectrum grid) has a single point: it acts on
   pooled features (SE, a classifier head after pooling) and has no spatial frequencies to keep.
2. ``off the channel chain``: its channels do not chain with its neighbours' while skipping it does
   (``out(previous) == in(next)`` but ``in(layer) != out(previous)`` or ``out(layer) != in(next)``): a
   side head with ``C_out = 1``, a shortcut projection traced after its block.
3. ``tiny capacity``: its capacity is at most 1/16 of the median capacity of the analysed layers around it
   (up to 3 on each side); at most 1/4 when its name also hints at a side branch (a path component
   ``se``, ``gate``, ``attn``, ``attention``, ``squeeze``, ``excite``, ``head``, ``aux``). A name alone
   never decides. The first and last layers of the path are judged by capacity only with such a name:
   an entry layer with one input channel is narrow by nature.

Pure code: no I/O.
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Sequence

from ..records import LayerEvidence, LayerMetrics

TINY_CAPACITY = 1 / 16
HINTED_CAPACITY = 1 / 4
NEIGHBOURHOOD = 3
_HINT = re.compile(r"(?:^|[._/\-])(se|gate|attn|attention|squeeze|excite|excitation|head|aux)\d*(?=$|[._/\-])",
                   re.IGNORECASE)


def name_hints_side(name: str) -> bool:
    """Whether a layer's name suggests a side branch (a weak hint only)."""
    return bool(_HINT.search(name))


def _one_point(metrics: LayerMetrics, evidence: LayerEvidence | None) -> bool:
    grid = evidence.grid if evidence is not None and evidence.grid else metrics.grid
    return bool(grid) and math.prod(grid) == 1


def _channels(evidence: Sequence[LayerEvidence | None], i: int) -> tuple[int | None, int | None]:
    e = evidence[i] if i < len(evidence) else None
    return (e.in_channels, e.out_channels) if e is not None else (None, None)


def side_layers(
    names: Sequence[str],
    metrics: Sequence[LayerMetrics | None],
    evidence: Sequence[LayerEvidence | None] | None = None,
) -> dict[int, str]:
    """Index -> reason for every analysed layer judged off the main path (module docstring)."""
    evidence = list(evidence) if evidence is not None else [None] * len(names)
    analysed = [i for i, m in enumerate(metrics) if m is not None]
    side: dict[int, str] = {}
    for i in analysed:
        if _one_point(metrics[i], evidence[i]):  # type: ignore[arg-type]
            side[i] = "on a 1x1 grid (pooled features: no spatial frequencies)"
    main = [i for i in analysed if i not in side]
    for pos, i in enumerate(main):
        if pos == 0 or pos == len(main) - 1:
            continue
        (_, prev_out), (cin, cout), (next_in, _) = (_channels(evidence, main[pos - 1]), _channels(evidence, i),
                                                     _channels(evidence, main[pos + 1]))
        if None in (prev_out, cin, cout, next_in):
            continue
        if prev_out == next_in and (cin != prev_out or cout != next_in):
            side[i] = (f"off the channel chain ({cin} -> {cout} channels between layers passing {prev_out} "
                       f"to each other)")
    main = [i for i in analysed if i not in side]
    for pos, i in enumerate(main):
        hinted = name_hints_side(names[i])
        if (pos == 0 or pos == len(main) - 1) and not hinted:  # entry and exit layers are narrow by nature
            continue
        around = main[max(0, pos - NEIGHBOURHOOD): pos] + main[pos + 1: pos + 1 + NEIGHBOURHOOD]
        capacities = [metrics[j].capacity for j in around if metrics[j].capacity > 0]  # type: ignore[union-attr]
        if not capacities:
            continue
        reference = statistics.median(capacities)
        ratio = metrics[i].capacity / reference  # type: ignore[union-attr]
        if ratio <= TINY_CAPACITY or (hinted and ratio <= HINTED_CAPACITY):
            side[i] = (f"tiny capacity ({metrics[i].capacity} values, {ratio:.2g} of its neighbours')"  # type: ignore
                       + (" and a side-branch name" if hinted else ""))
    return dict(sorted(side.items()))
