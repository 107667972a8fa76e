"""Dynamic input axes of an ONNX model, fixed for shape inference (``--input-size``, or the images' size).

For an input of rank ``2 + d`` (batch, channels, d spatial axes): one number is the size of every spatial
axis with the channels from the model (the conv reading the input, its weight folded if need be), ``d``
numbers the spatial sizes, ``d + 1`` the channels and spatial sizes. Other free axes (the batch) become 1;
a dynamic spatial axis the size does not reach would too, collapsing the grids behind it to 1x1, which a
note (shown as a warning) says.
"""

from __future__ import annotations

from typing import Any

from ._onnx_fold import FoldedWeight, fold_weight


def input_channels(model: Any, name: str) -> int | None:
    """The channels a conv reading ``name`` directly expects (its weight's C_in x groups), or None."""
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input and node.input[0] == name and len(node.input) > 1:
            weight = inits.get(node.input[1])
            dims = tuple(weight.dims) if weight is not None else None
            if dims is None:  # a weight reached through Identity, Cast, Reshape, ...
                folded = fold_weight(node.input[1], producers, inits)
                dims = folded.shape if isinstance(folded, FoldedWeight) else None
            if dims is not None and len(dims) >= 3:
                group = next((a.i for a in node.attribute if a.name == "group"), 1) or 1
                return int(dims[1]) * int(group)
    return None


def fix_inputs(model: Any, size: tuple[int, ...] | None) -> list[str]:
    """Give the model's dynamic input axes the size ``--input-size`` names (batch 1), in place; notes.

    For an input of rank ``2 + d`` (batch, channels, d spatial axes): one number is the size of every spatial
    axis (channels from the model), ``d`` numbers the spatial sizes, ``d + 1`` the channels and spatial sizes.
    A dynamic spatial axis the size does not reach would be set to 1, collapsing every grid behind it to 1x1:
    that is said in a note (shown as a warning)."""
    if size is None:
        return []
    inits = {i.name for i in model.graph.initializer}
    notes = []
    main_done = False  # the size is the first fitting input's (the image, the audio); other inputs keep theirs
    for value in model.graph.input:
        if value.name in inits or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        rank = len(dims)
        if rank < 2:
            continue
        want: dict[int, int] = {}
        if main_done:
            pass
        elif rank >= 3 and len(size) in (1, rank - 2):  # spatial sizes only: the channels from the model
            want = {axis: size[0] if len(size) == 1 else size[axis - 2] for axis in range(2, rank)}
            channels = input_channels(model, value.name)
            if channels is not None and not (dims[1].HasField("dim_value") and dims[1].dim_value > 0):
                want[1] = channels
        elif rank == len(size) + 2 or (rank == 2 and len(size) == 1):
            want = {rank - len(size) + i: v for i, v in enumerate(size)}
        elif rank == len(size) + 1:
            want = {1 + i: v for i, v in enumerate(size)}
        main_done = main_done or bool(want)
        before = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in dims]
        collapsed = []
        for axis, dim in enumerate(dims):
            static = dim.HasField("dim_value") and dim.dim_value > 0
            if axis in want:
                dim.Clear()
                dim.dim_value = int(want[axis])
            elif not static:
                dim.Clear()
                dim.dim_value = 1  # batch and other free axes
                collapsed += [axis] if axis >= 2 and rank >= 3 else []
        after = [d.dim_value for d in dims]
        if before != after:
            notes.append(f"input {value.name}: shape {before} fixed to {after} for shape inference"
                         + (" (--input-size)" if want else " (free axes set to 1)"))
        if collapsed:
            notes.append(f"input {value.name}: spatial axes {collapsed} are dynamic and --input-size "
                         f"{'x'.join(map(str, size))} does not reach them: set to 1, so the grids behind them "
                         f"collapse to 1x1; give one number (every spatial axis) or one per spatial axis")
    return notes
