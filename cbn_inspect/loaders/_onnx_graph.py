"""Patterns around an ONNX conv node: explicit padding in front of it, and quantised weights.

- **Padding.** A ``Pad`` node (``constant``, ``reflect``, ``edge`` or ``wrap`` mode), or the ``Slice`` +
  ``Concat`` pattern PyTorch's exporter writes for ``padding_mode="circular"`` (per axis: the tail of the
  tensor, the tensor, its head), feeding a conv. :func:`unpad` walks back through them to the unpadded
  tensor, so that the conv is analysed on its real grid with the padding mode the graph applies. A circular
  pad of ``dilation * (k - 1)`` in total on every axis, into a conv with no padding of its own, is exactly a
  circular conv on the unpadded grid.
- **Quantised weights.** ``QLinearConv`` (weight, scale, zero point), ``ConvInteger`` (weight and zero point;
  the scale is a ``Mul`` after the node), and ``DequantizeLinear`` in front of a ``Conv``'s weight:
  :class:`DequantizedWeight` gives the real-valued kernel ``(w - zero_point) * scale``.

- **Weights reached through graph nodes**: :mod:`._onnx_fold`.

Nothing here runs the graph: constants are read from initializers and ``Constant`` nodes only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

PAD_MODES = {"constant": "zeros", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
INT64_BIG = 2**62


def const_array(name: str, scope: Mapping[str, Any]) -> np.ndarray | None:
    """The value of an initializer or Constant named ``name``, or None when it is computed at run time."""
    from onnx import numpy_helper

    proto = scope.get(name) if name else None
    return None if proto is None else numpy_helper.to_array(proto)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Padding:
    """Explicit padding found in front of a conv: the unpadded value, the mode, (before, after) per spatial axis."""

    source: str
    mode: str  # a ConvLayer padding_mode: zeros, reflect, replicate, circular
    pads: tuple[tuple[int, int], ...]
    how: str


def _pad_node(node: Any, scope: Mapping[str, Any], rank: int) -> tuple[str, tuple[tuple[int, int], ...]] | None:
    attrs = _attrs(node)
    mode = PAD_MODES.get(_text(attrs.get("mode", "constant")))
    if mode is None:
        return None
    pads = attrs.get("pads")
    if pads is None and len(node.input) > 1:
        value = const_array(node.input[1], scope)
        pads = None if value is None else [int(v) for v in value.ravel()]
    if pads is None:
        return None
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        value = const_array(node.input[3], scope)
        if value is None:
            return None
        axes = [int(a) % rank for a in value.ravel()]
    if len(pads) != 2 * len(axes):
        return None
    per_axis = {a: (pads[i], pads[i + len(axes)]) for i, a in enumerate(axes)}
    if any(per_axis.get(a, (0, 0)) != (0, 0) for a in (0, 1)):
        return None  # batch or channel padding: not a spatial pad
    if mode == "zeros" and len(node.input) > 2 and node.input[2]:
        value = const_array(node.input[2], scope)
        if value is None or np.any(value != 0):
            return None  # a non-zero constant is not zero padding
    return mode, tuple(per_axis.get(a, (0, 0)) for a in range(2, rank))


def _slice_extent(node: Any, scope: Mapping[str, Any], axis: int, rank: int, length: int | None,
                  shapes: Mapping[str, tuple]) -> tuple[str, int] | None:
    """``("tail", p)`` or ``("head", p)`` for a Slice taking the last or first p entries along ``axis``."""
    if node.op_type != "Slice" or len(node.input) < 3:
        return None
    starts, ends = const_array(node.input[1], scope), const_array(node.input[2], scope)
    axes = const_array(node.input[3], scope) if len(node.input) > 3 and node.input[3] else None
    steps = const_array(node.input[4], scope) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if axes is not None and (axes.size != 1 or int(axes.ravel()[0]) % rank != axis):
        return None
    if axes is None and axis != 0:
        return None
    if steps is not None and int(steps.ravel()[0]) != 1:
        return None
    start, end = int(starts.ravel()[0]), int(ends.ravel()[0])
    if start < 0 and end >= INT64_BIG // 4:
        return "tail", -start
    if start == 0 and 0 < end < INT64_BIG // 4:
        return "head", end
    if length is not None and 0 < start < length and end >= length:
        return "tail", length - start
    out = shapes.get(node.output[0])
    if out is not None and len(out) == rank and out[axis] is not None and start == 0:
        return "head", int(out[axis])
    return None


def _circular_concat(node: Any, producers: Mapping[str, Any], scope: Mapping[str, Any],
                     shapes: Mapping[str, tuple], rank: int) -> tuple[str, int, int, int] | None:
    """A Concat of [tail slices of X, X, head slices of X] along one spatial axis: (X, axis, before, after)."""
    if node.op_type != "Concat" or len(node.input) < 2:
        return None
    axis = int(_attrs(node).get("axis", 0)) % rank
    if axis < 2:
        return None
    pieces = [producers.get(name) for name in node.input]
    middles = [i for i, name in enumerate(node.input)
               if all(j == i or (p is not None and p.op_type == "Slice" and p.input[0] == name)
                      for j, p in enumerate(pieces))]
    if len(middles) != 1:
        return None
    mid = middles[0]
    source = node.input[mid]
    shape = shapes.get(source)
    length = shape[axis] if shape is not None and len(shape) == rank else None
    before = after = 0
    for j, piece in enumerate(pieces):
        if j == mid:
            continue
        extent = _slice_extent(piece, scope, axis, rank, length, shapes)
        if extent is None or (extent[0] == "tail") != (j < mid):
            return None
        if j < mid:
            before += extent[1]
        else:
            after += extent[1]
    return source, axis, before, after


def unpad(value: str, producers: Mapping[str, Any], scope: Mapping[str, Any], shapes: Mapping[str, tuple],
          rank: int) -> Padding | None:
    """The explicit padding in front of ``value`` (a conv's input of ``rank`` axes), or None."""
    node = producers.get(value)
    if node is None:
        return None
    if node.op_type == "Pad":
        found = _pad_node(node, scope, rank)
        if found is None:
            return None
        return Padding(node.input[0], found[0], found[1], f"a Pad node in {_text(_attrs(node).get('mode', 'constant'))} mode")
    pads = [[0, 0] for _ in range(rank - 2)]
    source, seen = value, False
    while (node := producers.get(source)) is not None:
        found = _circular_concat(node, producers, scope, shapes, rank)
        if found is None:
            break
        source, axis, before, after = found
        pads[axis - 2][0] += before
        pads[axis - 2][1] += after
        seen = True
    if not seen:
        return None
    return Padding(source, "circular", tuple((a, b) for a, b in pads), "circular padding (Slice + Concat)")


@dataclass(frozen=True)
class DequantizedWeight:
    """A quantised weight read as ``(w - zero_point) * scale`` along ``axis`` (per-tensor when scalar)."""

    weight: Any = field(repr=False)  # TensorProto
    scale: np.ndarray | None = field(default=None, repr=False)
    zero_point: np.ndarray | None = field(default=None, repr=False)
    axis: int = 0

    def load(self) -> Any:
        import torch
        from onnx import numpy_helper

        w = numpy_helper.to_array(self.weight).astype(np.float64)
        shape = [1] * w.ndim
        shape[self.axis] = -1
        if self.zero_point is not None:
            zp = np.asarray(self.zero_point, dtype=np.float64)
            w = w - (zp.reshape(shape) if zp.size > 1 else zp.reshape(()))
        if self.scale is not None:
            s = np.asarray(self.scale, dtype=np.float64)
            w = w * (s.reshape(shape) if s.size > 1 else s.reshape(()))
        return torch.from_numpy(w.astype(np.float32))


def _int_dtype(code: int) -> str | None:
    return {2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 21: "uint4", 22: "int4"}.get(code)


def _consumer_scale(node: Any, producers: Mapping[str, Any], consumers: Mapping[str, list],
                    scope: Mapping[str, Any], c_out: int) -> np.ndarray | None:
    """The weight scale of a ConvInteger: a float constant multiplied into its (cast) output, directly or as a
    factor of the ``x_scale * w_scale`` product that dynamic quantisation writes; per tensor or per channel."""

    def scale_of(name: str) -> np.ndarray | None:
        const = const_array(name, scope)
        if const is not None:
            return const.ravel() if const.size in (1, c_out) and const.dtype.kind == "f" else None
        prod = producers.get(name)
        if prod is not None and prod.op_type == "Mul":
            for inner in prod.input:
                const = const_array(inner, scope)
                if const is not None and const.size in (1, c_out) and const.dtype.kind == "f":
                    return const.ravel()
        return None

    frontier = [node.output[0]]
    for _ in range(2):  # ConvInteger -> Cast -> Mul(scale)
        nxt = []
        for value in frontier:
            for user in consumers.get(value, []):
                if user.op_type == "Cast":
                    nxt.append(user.output[0])
                elif user.op_type == "Mul":
                    for other in user.input:
                        if other != value and (found := scale_of(other)) is not None:
                            return found
        frontier = nxt
    return None


def quantised_weight(node: Any, producers: Mapping[str, Any], consumers: Mapping[str, list],
                     scope: Mapping[str, Any]) -> tuple[DequantizedWeight, str, str] | None:
    """(weight, stored dtype, note) for a quantised conv, or None when its weight is not a constant."""
    if node.op_type == "QLinearConv":
        if len(node.input) < 6 or scope.get(node.input[3]) is None:
            return None
        proto = scope[node.input[3]]
        scale, zp = const_array(node.input[4], scope), const_array(node.input[5], scope)
        return (DequantizedWeight(proto, scale, zp, 0), _int_dtype(proto.data_type) or str(proto.data_type),
                "QLinearConv: weights dequantised with their scale and zero point")
    if node.op_type == "ConvInteger":
        proto = scope.get(node.input[1]) if len(node.input) > 1 else None
        if proto is None:
            return None
        zp = const_array(node.input[3], scope) if len(node.input) > 3 and node.input[3] else None
        scale = _consumer_scale(node, producers, consumers, scope, int(proto.dims[0]))
        note = ("ConvInteger: weights dequantised with their zero point and the scale multiplied after the node"
                if scale is not None else
                "ConvInteger: weights dequantised with their zero point; no constant scale found after the node, "
                "so singular values are in units of the quantisation step (counts unaffected if per-tensor)")
        return DequantizedWeight(proto, scale, zp, 0), _int_dtype(proto.data_type) or str(proto.data_type), note
    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
        deq = producers.get(node.input[1])
        if deq is None or deq.op_type != "DequantizeLinear" or scope.get(deq.input[0]) is None:
            return None
        proto = scope[deq.input[0]]
        scale = const_array(deq.input[1], scope) if len(deq.input) > 1 else None
        zp = const_array(deq.input[2], scope) if len(deq.input) > 2 and deq.input[2] else None
        if scale is None:
            return None
        axis = int(_attrs(deq).get("axis", 1)) % len(proto.dims) if scale.size > 1 else 0
        return (DequantizedWeight(proto, scale, zp, axis), _int_dtype(proto.data_type) or str(proto.data_type),
                "DequantizeLinear in front of the conv: weights dequantised")
    return None

