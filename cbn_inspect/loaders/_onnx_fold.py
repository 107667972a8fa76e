"""ONNX conv weights reached through graph nodes, folded as onnxruntime would compute them.

Exporters de-duplicate identical initializers and feed the copies to a conv through ``Identity`` (tied or
equal weights); weights also arrive through ``Cast``, ``Reshape``/``Unsqueeze``/``Squeeze`` or ``Transpose``
of a constant, or ``DequantizeLinear``. :func:`fold_weight` follows such a chain back to an initializer or
``Constant`` (shapes and types worked out without reading the data) and :class:`FoldedWeight` replays it with
numpy when the layer is analysed, with onnxruntime's numerics: casts as C++ ``static_cast`` (numpy's
``astype``), ``DequantizeLinear`` as ``(x - zero_point) * scale`` in float32, rounded to the scale's type.
Bounded: at most :data:`MAX_FOLD_NODES` nodes and :data:`MAX_FOLD_ELEMENTS` elements. Nothing runs the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ._onnx_graph import _attrs, _text, const_array

FOLDABLE = ("Identity", "Cast", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "DequantizeLinear")
MAX_FOLD_NODES = 64  # a longer chain of shape ops in front of one weight is not an exporter's
MAX_FOLD_ELEMENTS = 2**31  # a conv weight beyond this is an attack on memory, not a kernel
# ONNX data types the fold can produce, as numpy dtypes (bfloat16 and the 4/8-bit floats have none).
NUMPY_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


@dataclass(frozen=True)
class FoldStep:
    """One node of a chain: its operator, the name it is reported under, and what replaying it needs."""

    op: str
    node: str
    args: tuple = ()


@dataclass(frozen=True)
class FoldedWeight:
    """A conv weight computed from a constant by a chain of foldable nodes, replayed only when loaded."""

    source: Any = field(repr=False)  # the TensorProto the chain starts from
    steps: tuple[FoldStep, ...] = ()
    shape: tuple[int, ...] = ()
    data_type: int = 1  # ONNX type of the result

    def load(self) -> Any:
        import torch

        return torch.from_numpy(np.array(replay(const_from(self.source), self.steps), copy=True, order="C"))


def const_from(proto: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(proto)


def replay(array: np.ndarray, steps: tuple[FoldStep, ...]) -> np.ndarray:
    """Apply the chain to ``array`` as onnxruntime would."""
    for step in steps:
        if step.op == "Cast":
            array = array.astype(NUMPY_TYPES[step.args[0]])
        elif step.op in ("Reshape", "Unsqueeze", "Squeeze"):
            array = array.reshape(step.args[0])
        elif step.op == "Transpose":
            array = np.transpose(array, step.args[0])
        elif step.op == "DequantizeLinear":
            scale, zero_point, axis, out_type = step.args
            shape = [1] * array.ndim
            if np.size(scale) > 1:
                shape[axis] = -1
            w = array.astype(np.int64) if array.dtype.kind in "iu" else array.astype(np.float32)
            if zero_point is not None:
                zp = np.asarray(zero_point).astype(w.dtype)
                w = w - (zp.reshape(shape) if zp.size > 1 else zp.reshape(()))
            sc = np.asarray(scale).astype(np.float32)
            w = w.astype(np.float32) * (sc.reshape(shape) if sc.size > 1 else sc.reshape(()))
            array = w.astype(NUMPY_TYPES[out_type])
    return array


def _fold_step(node: Any, shape: tuple[int, ...], dtype: int,
               scope: Mapping[str, Any]) -> tuple[FoldStep, tuple[int, ...], int] | str:
    """The step a foldable node makes, with the shape and ONNX type it gives; or why it cannot be folded."""
    attrs = _attrs(node)
    name = _text(node.name or node.op_type)
    op = node.op_type
    rank = len(shape)
    if op == "Identity":
        return FoldStep(op, name), shape, dtype
    if op == "Cast":
        to = int(attrs.get("to", 0))
        if to not in NUMPY_TYPES or dtype not in NUMPY_TYPES:
            return f"Cast {name} between ONNX types {dtype} and {to}"
        return FoldStep(op, name, (to,)), shape, to
    if op == "Transpose":
        perm = tuple(int(p) for p in attrs.get("perm", range(rank - 1, -1, -1)))
        if sorted(perm) != list(range(rank)):
            return f"Transpose {name} with perm {list(perm)} on {rank} axes"
        return FoldStep(op, name, (perm,)), tuple(shape[p] for p in perm), dtype
    if op == "Reshape":
        target = const_array(node.input[1], scope) if len(node.input) > 1 else None
        if target is None:
            return f"Reshape {name} to a shape computed at run time"
        want = [int(v) for v in target.ravel()]
        if not int(attrs.get("allowzero", 0)):
            want = [shape[i] if v == 0 and i < rank else v for i, v in enumerate(want)]
        total = int(np.prod(shape, dtype=np.int64))
        if want.count(-1) == 1:
            rest = int(np.prod([v for v in want if v != -1], dtype=np.int64))
            want[want.index(-1)] = total // rest if rest else -1
        if min(want, default=0) < 0 or int(np.prod(want, dtype=np.int64)) != total:
            return f"Reshape {name} of {list(shape)} to {[int(v) for v in target.ravel()]}"
        return FoldStep(op, name, (tuple(want),)), tuple(want), dtype
    if op in ("Unsqueeze", "Squeeze"):
        if "axes" in attrs:
            axes = [int(a) for a in attrs["axes"]]
        elif len(node.input) > 1 and node.input[1]:
            found = const_array(node.input[1], scope)
            if found is None:
                return f"{op} {name} with axes computed at run time"
            axes = [int(a) for a in found.ravel()]
        else:
            axes = None
        if op == "Unsqueeze":
            if not axes:
                return f"Unsqueeze {name} without axes"
            out_rank = rank + len(axes)
            axes = sorted(a % out_rank for a in axes)
            out, rest = [], iter(shape)
            for i in range(out_rank):
                out.append(1 if i in axes else next(rest))
            return FoldStep(op, name, (tuple(out),)), tuple(out), dtype
        drop = [i for i, v in enumerate(shape) if v == 1] if axes is None else sorted(a % rank for a in axes)
        if any(shape[i] != 1 for i in drop):
            return f"Squeeze {name} of axes {drop} of {list(shape)}"
        out = tuple(v for i, v in enumerate(shape) if i not in drop)
        return FoldStep(op, name, (out,)), out, dtype
    if op == "DequantizeLinear":
        if dtype not in NUMPY_TYPES:
            return f"DequantizeLinear {name} of ONNX type {dtype}"
        scale = const_array(node.input[1], scope) if len(node.input) > 1 else None
        zero = const_array(node.input[2], scope) if len(node.input) > 2 and node.input[2] else None
        if scale is None:
            return f"DequantizeLinear {name} with a scale computed at run time"
        if int(attrs.get("block_size", 0) or 0):
            return f"DequantizeLinear {name} with blocked scales"
        axis = int(attrs.get("axis", 1))
        if scale.size > 1 and not (-rank <= axis < rank and shape[axis % rank] == scale.size):
            return f"DequantizeLinear {name}: {scale.size} scales along axis {axis} of {list(shape)}"
        if zero is not None and zero.size not in (1, scale.size):
            return f"DequantizeLinear {name}: {zero.size} zero points for {scale.size} scales"
        out_type = {np.dtype(np.float16): 10, np.dtype(np.float64): 11}.get(scale.dtype, 1)
        return FoldStep(op, name, (scale, zero, axis % max(rank, 1), out_type)), shape, out_type
    return f"{op} {name} is not constant-foldable"


def fold_weight(value: str, producers: Mapping[str, Any], scope: Mapping[str, Any]) -> FoldedWeight | str | None:
    """The weight ``value`` as a chain of foldable nodes from an initializer or Constant; None when ``value`` is
    itself a constant (nothing to fold) or comes from a node outside :data:`FOLDABLE` (computed at run time),
    and a reason (str) when the chain exists but cannot be folded."""
    chain = []
    while value not in scope:
        node = producers.get(value)
        if node is None or node.op_type not in FOLDABLE or not node.input:
            return None
        if len(chain) >= MAX_FOLD_NODES:
            return f"a chain of more than {MAX_FOLD_NODES} nodes in front of the weight"
        chain.append(node)
        value = node.input[0]
    if not chain:
        return None
    proto = scope[value]
    shape, dtype = tuple(int(v) for v in proto.dims), int(proto.data_type)
    steps = []
    for node in reversed(chain):
        try:
            made = _fold_step(node, shape, dtype, scope)
        except Exception as exc:  # a malformed attribute or constant: this weight is not analysed, the rest is
            made = f"{_text(node.op_type)} {_text(node.name)}: {' '.join(str(exc).split())[:80]}"
        if isinstance(made, str):
            return made
        step, shape, dtype = made
        steps.append(step)
    if int(np.prod(shape, dtype=np.int64)) > MAX_FOLD_ELEMENTS:
        return f"a folded weight of shape {list(shape)} is larger than {MAX_FOLD_ELEMENTS} elements"
    return FoldedWeight(proto, tuple(steps), shape, dtype)
