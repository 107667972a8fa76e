"""TensorFlow Lite models (``.tflite`` flatbuffers), read without TensorFlow.

Reads the main subgraph's ``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``TRANSPOSE_CONV``, ``CONV_3D`` and
``CONV_3D_TRANSPOSE`` operators in the file's operator order (the order the interpreter runs them), with
strides, dilations and padding (``SAME``/``VALID``) from their options and grids from the stored shape of
each operator's input tensor (geometry and grids declared by the file: ``metadata``).

Layouts are those the TFLite schema declares, converted to the records' PyTorch layout by a fixed permutation
per operator (never guessed from the shape):

========================  =========================  ===================================
operator                  TFLite filter               records (PyTorch) layout
========================  =========================  ===================================
CONV_2D                   OHWI (out, kh, kw, in/g)    OIHW, groups = input channels / I
DEPTHWISE_CONV_2D         1HWO (1, kh, kw, in*mult)   O1HW, groups = input channels
TRANSPOSE_CONV            OHWI (out, kh, kw, in)      IOHW, transposed
CONV_3D                   DHWIO                       OIDHW
CONV_3D_TRANSPOSE         DHWOI                       IODHW, transposed
========================  =========================  ===================================

Weights may be float32, float16 or quantised integers (int8/uint8/int16 with per-tensor or per-channel
scales and zero points along the tensor's ``quantized_dimension``), stored on the filter itself or behind a
``DEQUANTIZE`` operator; they are dequantised ``(q - zero_point) * scale`` in the file's layout, then
permuted, and flagged ``quantised``. A filter computed at run time, a sparse (compressed) one or int4 is
listed as skipped with the reason. Nothing in the file executes: it is data for this reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ResourceLimitError, UnreadableInputError
from ...records import ConvLayer, LoadedModel, SourceInfo
from .._statedict import MAX_DECLARED
from ._flatbuffer import Table, checked, import_flatbuffers, root

DEQUANTIZE = 6
# builtin code -> (kind, TFLite filter layout, permutation to the records' layout, input tensor index)
CONV_OPS = {
    3: ("CONV_2D", "OHWI", (0, 3, 1, 2), 0),
    4: ("DEPTHWISE_CONV_2D", "1HWO", (3, 0, 1, 2), 0),
    67: ("TRANSPOSE_CONV", "OHWI", (3, 0, 1, 2), 2),
    132: ("CONV_3D", "DHWIO", (4, 3, 0, 1, 2), 0),
    141: ("CONV_3D_TRANSPOSE", "DHWOI", (4, 3, 0, 1, 2), 2),
}
FILTER_AT = 1  # the filter is every conv operator's second input
# TensorType -> numpy dtype (the types a filter can hold and this reader can dequantise)
DTYPES = {0: "<f4", 1: "<f2", 3: "u1", 7: "<i2", 9: "i1", 10: "<f8"}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8",
              10: "float64", 17: "int4", 18: "bfloat16"}
PADDING = {0: "SAME", 1: "VALID"}
CONV_NAME = re.compile(r"conv|depthwise", re.IGNORECASE)


@dataclass(frozen=True)
class TfliteWeight:
    """A filter's bytes in the file, dequantised and permuted to the records' layout when loaded."""

    buf: Any = field(repr=False)
    start: int
    shape: tuple[int, ...]
    dtype: str
    permutation: tuple[int, ...]
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    axis: int = 0

    def load(self) -> Any:
        import torch

        count = int(np.prod(self.shape))
        raw = np.frombuffer(self.buf, dtype=np.dtype(self.dtype), count=count, offset=self.start).reshape(self.shape)
        if self.scale:
            values = dequantise(raw, np.asarray(self.scale, np.float64), np.asarray(self.zero_point, np.float64),
                                self.axis).astype(np.float32)
        else:
            values = raw.astype(np.float32 if raw.dtype == np.float16 else raw.dtype)
        return torch.from_numpy(np.ascontiguousarray(values.transpose(self.permutation)))


def dequantise(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """``(q - zero_point) * scale``, per tensor (one scale) or per channel along ``axis``."""
    if scale.size == 1:
        return (q.astype(np.float64) - (zero[0] if zero.size else 0.0)) * scale[0]
    shape = [1] * q.ndim
    shape[axis] = scale.size
    zero = zero if zero.size == scale.size else np.zeros(scale.size)
    return (q.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    signature: tuple[int, ...]
    type: int
    buffer: int
    quant: Table | None
    sparse: bool


def read_tflite(path: Path, *, input_size: tuple[int, ...] | None = None,
                max_memory_mb: int | None = None) -> LoadedModel:
    """Conv operators of a ``.tflite`` model's main subgraph, in execution order."""
    import_flatbuffers()
    size = path.stat().st_size
    if max_memory_mb is not None and size > max_memory_mb * 2**20:
        raise ResourceLimitError(f"{path}: a {size // 2**20} MB TFLite file is more than --max-memory {max_memory_mb} MB")
    buf = path.read_bytes()
    with checked(path, "TFLite flatbuffer"):
        loaded = _read(path, buf)
    if input_size is not None:  # the flag would do nothing: say so (the shapes were fixed at conversion)
        import dataclasses

        note = (f"--input-size {'x'.join(map(str, input_size))} not applied: a TFLite model's tensor shapes are "
                "fixed in the file at conversion")
        loaded = dataclasses.replace(loaded, source=dataclasses.replace(loaded.source, notes=loaded.source.notes + (note,)))
    return loaded


def _read(path: Path, buf: bytes) -> LoadedModel:
    model = root(buf)
    codes = [max(c.scalar(0, "int8"), c.scalar(3, "int32")) for c in model.tables(1)]
    buffers = model.tables(4)
    subgraphs = model.tables(2)
    if not subgraphs:
        raise UnreadableInputError(f"{path}: a TFLite model without a subgraph")
    layers: list[ConvLayer] = []
    skipped: list[tuple[str, str]] = []
    notes = ["a TFLite model: geometry from operator options, grids from stored tensor shapes, "
             "order from the operators' execution order"]
    names: set[str] = set()
    for index, graph in enumerate(subgraphs):
        tensors = [_tensor(t) for t in graph.tables(0)]
        producers = {}
        ops = graph.tables(3)
        for op in ops:
            for out in op.array(2, "<i4"):
                producers.setdefault(int(out), op)
        for number, op in enumerate(ops):
            code = _code(codes, op.scalar(0, "uint32"))
            if code not in CONV_OPS:
                continue
            kind = CONV_OPS[code][0]
            outputs = op.array(2, "<i4")
            name = _name(tensors, outputs, f"{kind}_{number}", names)
            if index:
                skipped.append((name, f"in subgraph {index} (a control-flow body or another signature): "
                                      "only the main subgraph is analysed"))
                continue
            layer, why = _layer(path, buf, code, op, tensors, buffers, codes, producers, name, len(layers))
            if layer is None:
                skipped.append((name, why))
            else:
                layers.append(layer)
    if len(subgraphs) > 1:
        notes.append(f"{len(subgraphs)} subgraphs: the main one (0) analysed")
    metadata = _metadata(model, buffers, buf)
    info = SourceInfo(path=str(path), format="tflite", metadata=metadata, notes=tuple(notes))
    return LoadedModel(source=info, layers=tuple(layers), skipped=tuple(skipped), order_source="graph",
                       order_confidence="high")


def _code(codes: list[int], index: int) -> int | None:
    return codes[index] if 0 <= index < len(codes) else None


def _tensor(t: Table) -> _Tensor:
    shape = tuple(int(v) for v in t.array(0, "<i4"))
    signature = tuple(int(v) for v in t.array(7, "<i4")) or shape
    return _Tensor(name=t.string(3), shape=shape, signature=signature, type=t.scalar(1, "int8"),
                   buffer=t.scalar(2, "uint32"), quant=t.table(4), sparse=t.has(6))


def _name(tensors: list[_Tensor], outputs: np.ndarray, fallback: str, seen: set[str]) -> str:
    """The output tensor's name; of a fused name (``relu;batchnorm;conv``), the part naming the conv."""
    name = fallback
    if outputs.size and 0 <= int(outputs[0]) < len(tensors) and tensors[int(outputs[0])].name:
        parts = [p for p in tensors[int(outputs[0])].name.split(";") if p] or [fallback]
        name = next((p for p in parts if CONV_NAME.search(p)), parts[0])
    base, n = name, 1
    while name in seen:
        n += 1
        name = f"{base}#{n}"
    seen.add(name)
    return name


def _data(buffers: list[Table], buf: bytes, number: int) -> tuple[int, int] | None:
    """(start, length) of a buffer's bytes in the file, inline or at an offset (files over 2 GB); None if empty."""
    if not 0 < number < len(buffers):
        return None
    b = buffers[number]
    start, length = b.byte_span(0)
    if length:
        return start, length
    offset, size = b.scalar(1, "uint64"), b.scalar(2, "uint64")
    if offset > 1 and size:
        if offset + size > len(buf):
            raise UnreadableInputError(f"buffer {number} runs past the end of the file")
        return offset, size
    return None


def _filter(t_index: int, tensors, buffers, buf, codes, producers) -> tuple[_Tensor | None, tuple[int, int] | None, str]:
    """The constant tensor holding a conv's filter (through one DEQUANTIZE), its bytes, and how it was reached."""
    if not 0 <= t_index < len(tensors):
        return None, None, f"filter tensor index {t_index} is out of range"
    tensor = tensors[t_index]
    data = _data(buffers, buf, tensor.buffer)
    if data is not None:
        return tensor, data, ""
    op = producers.get(t_index)
    if op is not None and _code(codes, op.scalar(0, "uint32")) == DEQUANTIZE:
        inputs = op.array(1, "<i4")
        if inputs.size and 0 <= int(inputs[0]) < len(tensors):
            source = tensors[int(inputs[0])]
            data = _data(buffers, buf, source.buffer)
            if data is not None:
                return source, data, "through a DEQUANTIZE operator"
    return None, None, "filter is computed at run time (not a constant tensor): not analysed"


def _quant(tensor: _Tensor) -> tuple[tuple[float, ...], tuple[int, ...], int, str | None]:
    """(scales, zero points, axis, why not) of an integer filter."""
    if tensor.quant is None:
        return (), (), 0, "integer filter without quantisation parameters"
    scale = tuple(float(v) for v in tensor.quant.array(2, "<f4"))
    zero = tuple(int(v) for v in tensor.quant.array(3, "<i8"))
    axis = tensor.quant.scalar(6, "int32")
    if not scale:
        return (), (), 0, "integer filter without scales"
    if not all(np.isfinite(scale)):
        return (), (), 0, "integer filter with non-finite scales"
    if len(scale) > 1 and not (0 <= axis < len(tensor.shape) and tensor.shape[axis] == len(scale)):
        return (), (), 0, f"{len(scale)} scales do not match quantized_dimension {axis} of shape {tensor.shape}"
    if zero and len(zero) not in (1, len(scale)):
        return (), (), 0, f"{len(zero)} zero points for {len(scale)} scales"
    return scale, zero, axis, None


def _layer(path, buf, code, op, tensors, buffers, codes, producers, name, order):
    kind, layout, perm, input_at = CONV_OPS[code]
    inputs = [int(v) for v in op.array(1, "<i4")]
    d = 3 if code in (132, 141) else 2
    if len(inputs) <= max(FILTER_AT, input_at):
        return None, f"{kind} with {len(inputs)} inputs: not analysed"
    tensor, data, how = _filter(inputs[FILTER_AT], tensors, buffers, buf, codes, producers)
    if tensor is None:
        return None, how
    shape = tensor.shape
    if len(shape) != d + 2 or min(shape) < 1:
        return None, f"filter of shape {shape} is not a {layout} kernel"
    if tensor.sparse:
        return None, "sparse (compressed) filter: not read"
    dtype = DTYPES.get(tensor.type)
    type_name = TYPE_NAMES.get(tensor.type, f"type {tensor.type}")
    if dtype is None:
        return None, f"{type_name} filter: not read"
    need = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if need != data[1]:
        raise UnreadableInputError(f"filter {name}: {data[1]} bytes stored for shape {shape} of {type_name} ({need} bytes)")
    notes = [f"TFLite {kind}, filter layout {layout}"]
    scale, zero, axis, flags, note = _stored_as(tensor, dtype, type_name, how)
    if note is None:
        return None, flags[0]
    if note:
        notes.append(note)
    torch_shape = tuple(shape[p] for p in perm)
    options = op.table(4)
    stride, dilation, padding, extra = _options(code, options, d)
    notes.insert(1, f"padding {padding}")
    notes += extra
    x = tensors[inputs[input_at]] if 0 <= inputs[input_at] < len(tensors) else None
    grid, channels = _grid(x, d)
    outputs = op.array(2, "<i4")
    y = tensors[int(outputs[0])] if outputs.size and 0 <= int(outputs[0]) < len(tensors) else None
    kernel = shape[1:3] if d == 2 else shape[:3]
    mismatch = _disagrees(grid, y, d, kernel, stride, dilation, padding, code in (67, 141))
    if mismatch:
        notes.append(mismatch)
        grid = None
    groups, why = _groups(code, shape, channels, options)
    if why:
        return None, why
    if code == 4:
        torch_shape = (shape[3], 1, *shape[1:3])
    if grid is None:
        shape_text = "x".join(map(str, x.shape)) if x is not None else "none"
        notes.append(f"input tensor (shape {shape_text}) without a static spatial shape of 1 to 2^20 per axis: "
                     "default grid")
    layer = ConvLayer(
        name=name, shape=torch_shape, dtype=type_name, order=order, groups=groups, stride=stride,
        dilation=dilation, transposed=code in (67, 141), padding_mode="zeros", grid=grid,
        grid_source="metadata" if grid else "default", geometry_source="metadata", notes=tuple(notes),
        flags=flags, weight=TfliteWeight(buf=buf, start=data[0], shape=shape, dtype=dtype, permutation=perm,
                                         scale=scale, zero_point=zero, axis=axis),
    )
    return layer, ""


def _stored_as(tensor: _Tensor, dtype: str, type_name: str, how: str):
    """(scales, zero points, axis, flags, note) of how the filter is stored; note None (and the reason as the
    only flag) when an integer filter cannot be dequantised."""
    if dtype in ("u1", "<i2", "i1"):
        scale, zero, axis, why = _quant(tensor)
        if why:
            return (), (), 0, (why,), None
        per = "per channel" if len(scale) > 1 else "per tensor"
        return scale, zero, axis, ("quantised",), f"{type_name} weights dequantised ({per} scales{', ' + how if how else ''})"
    if dtype == "<f2":
        return (), (), 0, ("quantised",) if how else (), f"float16 weights{' ' + how if how else ''}, read as float32"
    return (), (), 0, (), ""


def _groups(code: int, shape: tuple[int, ...], channels: int | None, options: Table | None) -> tuple[int, str]:
    """(groups, why not): a depthwise conv has one group per input channel; a CONV_2D/CONV_3D whose filter holds
    fewer input channels than its input is grouped (the filter's input axis is 3 in both layouts)."""
    if code == 4:
        groups = channels or (shape[3] // max(1, options.scalar(3, "int32", 1)) if options else 0)
        if not groups or shape[3] % groups:
            return 1, f"depthwise filter of {shape[3]} channels does not fit an input of {groups} channels"
        return groups, ""
    if code in (3, 132) and channels:
        filter_in, filter_out = shape[3], shape[0 if code == 3 else 4]
        if channels % filter_in or filter_out % (channels // filter_in):
            return 1, f"filter of {filter_in} input channels does not divide the input's {channels}"
        return channels // filter_in, ""
    return 1, ""


def _options(code: int, t: Table | None, d: int) -> tuple[tuple[int, ...], tuple[int, ...], str, list[str]]:
    """(stride, dilation, padding, notes) from an operator's options table (schema field indices)."""
    if t is None:
        return (1,) * d, (1,) * d, "SAME", ["no options table: stride 1, dilation 1, padding SAME (defaults)"]
    padding = PADDING.get(t.scalar(0, "int8"), f"code {t.scalar(0, 'int8')}")
    if code == 3:  # Conv2DOptions: padding, stride_w, stride_h, activation, dilation_w, dilation_h
        stride, dilation = (t.scalar(2, "int32"), t.scalar(1, "int32")), (t.scalar(5, "int32", 1), t.scalar(4, "int32", 1))
    elif code == 4:  # DepthwiseConv2DOptions: padding, stride_w, stride_h, depth_multiplier, activation, dil_w, dil_h
        stride, dilation = (t.scalar(2, "int32"), t.scalar(1, "int32")), (t.scalar(6, "int32", 1), t.scalar(5, "int32", 1))
    elif code == 67:  # TransposeConvOptions: padding, stride_w, stride_h, activation
        stride, dilation = (t.scalar(2, "int32"), t.scalar(1, "int32")), (1, 1)
    else:  # Conv3DOptions: padding, stride_d, stride_w, stride_h, activation, dil_d, dil_w, dil_h
        stride = (t.scalar(1, "int32"), t.scalar(3, "int32"), t.scalar(2, "int32"))
        dilation = (t.scalar(5, "int32", 1), t.scalar(7, "int32", 1), t.scalar(6, "int32", 1))
    if min(stride + dilation) < 1 or max(stride + dilation) > 2**16:
        raise UnreadableInputError(f"operator options with stride {stride} and dilation {dilation}")
    return tuple(stride), tuple(dilation), padding, []


def _disagrees(grid, y: _Tensor | None, d: int, kernel, stride, dilation, padding: str, transposed: bool) -> str | None:
    """Why the input's stored shape cannot be the conv's grid, given its output tensor's stored shape (a
    converter writes both; a damaged file may not agree with itself), or None when they agree or the output
    shape is not static."""
    if grid is None or y is None or len(y.shape) != d + 2 or min(y.shape[1:-1]) < 1:
        return None
    out = y.shape[1:-1]
    for n, m, k, s, r in zip(grid, out, kernel, stride, dilation):
        extent = r * (k - 1) + 1
        if transposed:
            fits = (n - 1) * s + 1 <= m <= n * s + extent
        elif padding == "SAME":
            fits = m == -(-n // s)
        else:
            fits = m == (n - extent) // s + 1
        if not fits:
            return (f"input shape {'x'.join(map(str, grid))} and output shape {'x'.join(map(str, out))} do not fit "
                    f"stride {stride}, padding {padding}: the file disagrees with itself, default grid")
    return None


def _grid(x: _Tensor | None, d: int) -> tuple[tuple[int, ...] | None, int | None]:
    """(spatial size, channels) of a channels-last input tensor; the grid is None where an axis is dynamic."""
    if x is None or len(x.shape) != d + 2:
        return None, None
    channels = x.shape[-1] if x.shape[-1] > 0 else None
    spatial = x.shape[1:-1]
    dynamic = len(x.signature) == len(x.shape) and any(v < 0 for v in x.signature[1:-1])
    if dynamic or min(spatial) < 1 or max(spatial) > MAX_DECLARED:  # beyond 2^20: not a geometry (as metadata)
        return None, channels
    return tuple(spatial), channels


def _metadata(model: Table, buffers: list[Table], buf: bytes) -> dict[str, str]:
    out = {"tflite_schema_version": str(model.scalar(0, "uint32"))}
    description = model.string(3)
    if description:
        out["description"] = description[:200]
    for entry in model.tables(6):
        key = entry.string(0)
        if key == "min_runtime_version":
            data = _data(buffers, buf, entry.scalar(1, "uint32"))
            if data:
                out[key] = bytes(buf[data[0]:data[0] + min(data[1], 32)]).split(b"\0")[0].decode("ascii", "replace")
        elif key:
            out.setdefault("metadata_entries", "")
            out["metadata_entries"] = ", ".join(filter(None, [out["metadata_entries"], key[:60]]))
    return out
