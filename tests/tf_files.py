"""Builders for small TensorFlow-family test files, written here without TensorFlow: TFLite flatbuffers with
the ``flatbuffers`` runtime (the schema's field order, as in ``tensorflow/lite/schema/schema.fbs``), Keras
``.h5`` and ``.keras`` files with ``h5py``; and dense references of NHWC / Keras-layout circular convs.
"""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE, TRANSPOSE_CONV, CONV_3D = 3, 4, 6, 67, 132
TYPES = {"float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int8": 9}


@dataclass
class Op:
    """One conv operator: ``filter`` in the TFLite layout of its kind; ``input`` the NHWC input shape."""

    code: int
    input: tuple[int, ...]
    filter: np.ndarray
    stored: str = "float32"  # float32, float16 (behind a DEQUANTIZE), int8 (per-channel scales), int8-deq
    padding: int = 0  # 0 SAME, 1 VALID
    stride: tuple[int, ...] = (1, 1)
    dilation: tuple[int, ...] = (1, 1)
    multiplier: int = 1
    name: str = ""
    scales: np.ndarray | None = None
    axis: int = 0
    extra: dict = field(default_factory=dict)


def quantise(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per-channel quantisation along ``axis``: (q, scales)."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scales = np.maximum(np.abs(moved).max(axis=1), 1e-8) / 127.0
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales.astype(np.float32)


def output_shape(op: Op) -> tuple[int, ...]:
    """The NHWC (NDHWC) output shape a converter would store for the operator."""
    d = len(op.input) - 2
    kernel = op.filter.shape[1:3] if d == 2 else op.filter.shape[:3]
    out_channels = {CONV_2D: op.filter.shape[0], DEPTHWISE_CONV_2D: op.filter.shape[3],
                    TRANSPOSE_CONV: op.filter.shape[0], CONV_3D: op.filter.shape[-1]}[op.code]
    stride = op.stride if len(op.stride) == d else (1,) * d
    dilation = op.dilation if len(op.dilation) == d else (1,) * d
    spatial = []
    for n, k, s, r in zip(op.input[1:-1], kernel, stride, dilation):
        extent = r * (k - 1) + 1
        if op.code == TRANSPOSE_CONV:
            spatial.append(n * s if op.padding == 0 else (n - 1) * s + extent)
        else:
            spatial.append(-(-n // s) if op.padding == 0 else (n - extent) // s + 1)
    return (1, *spatial, out_channels)


def write_tflite(path: Path, ops: list[Op], *, description: str = "test", subgraphs: int = 1) -> Path:
    import flatbuffers

    b = flatbuffers.Builder(4096)
    buffers: list[bytes] = [b""]
    tensors: list[dict] = []
    operators: list[tuple[int, list[int], list[int], int | None]] = []  # (opcode index, inputs, outputs, options)
    codes: list[int] = []

    def code_index(code: int) -> int:
        if code not in codes:
            codes.append(code)
        return codes.index(code)

    def tensor(name, shape, ttype="float32", data=None, scales=None, axis=0):
        buf = 0
        if data is not None:
            buffers.append(data)
            buf = len(buffers) - 1
        tensors.append(dict(name=name, shape=list(shape), type=TYPES[ttype], buffer=buf, scales=scales, axis=axis))
        return len(tensors) - 1

    pending_options = []
    for i, op in enumerate(ops):
        x = tensor(f"input_{i}", op.input)
        w = op.filter
        if op.stored == "float32":
            f = tensor(f"filter_{i}", w.shape, "float32", w.astype("<f4").tobytes())
        elif op.stored == "float16":
            half = tensor(f"filter_{i}_fp16", w.shape, "float16", w.astype("<f2").tobytes())
            f = tensor(f"filter_{i}", w.shape)
            operators.append((code_index(DEQUANTIZE), [half], [f], None))
            pending_options.append(None)
        elif op.stored in ("int8", "int8-deq"):
            q, scales = quantise(w, op.axis)
            qt = tensor(f"filter_{i}_q", w.shape, "int8", q.tobytes(), scales=scales, axis=op.axis)
            if op.stored == "int8":
                f = qt
            else:
                f = tensor(f"filter_{i}", w.shape)
                operators.append((code_index(DEQUANTIZE), [qt], [f], None))
                pending_options.append(None)
        else:
            raise ValueError(op.stored)
        out = tensor(op.name or f"model/conv_{i}/Conv2D;model/relu_{i}", output_shape(op))
        if op.code in (TRANSPOSE_CONV,):
            shape_t = tensor(f"output_shape_{i}", (4,), "int32", np.zeros(4, "<i4").tobytes())
            inputs = [shape_t, f, x]
        else:
            inputs = [x, f]
        operators.append((code_index(op.code), inputs, [out], i))
        pending_options.append(op)

    # --- serialise, leaves first ---
    def ivec(values, width=4, kind="Int32"):
        b.StartVector(width, len(values), width)
        for v in reversed(list(values)):
            getattr(b, f"Prepend{kind}")(v)
        return b.EndVector()

    def ovec(offsets):
        b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    buf_offsets = []
    for data in buffers:
        vec = b.CreateByteVector(data) if data else None
        b.StartObject(3)
        if vec is not None:
            b.PrependUOffsetTRelativeSlot(0, vec, 0)
        buf_offsets.append(b.EndObject())
    tensor_offsets = []
    for t in tensors:
        name = b.CreateString(t["name"])
        shape = ivec(t["shape"])
        quant = None
        if t["scales"] is not None:
            scale = ivec([float(s) for s in t["scales"]], 4, "Float32")
            zero = ivec([0] * len(t["scales"]), 8, "Int64")
            b.StartObject(7)
            b.PrependUOffsetTRelativeSlot(2, scale, 0)
            b.PrependUOffsetTRelativeSlot(3, zero, 0)
            b.PrependInt32Slot(6, t["axis"], 0)
            quant = b.EndObject()
        b.StartObject(8)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependInt8Slot(1, t["type"], 0)
        b.PrependUint32Slot(2, t["buffer"], 0)
        b.PrependUOffsetTRelativeSlot(3, name, 0)
        if quant is not None:
            b.PrependUOffsetTRelativeSlot(4, quant, 0)
        tensor_offsets.append(b.EndObject())
    op_offsets = []
    for (index, inputs, outputs, _), op in zip(operators, pending_options):
        options, otype = None, 0
        if op is not None:
            sh, sw = op.stride[-2:] if op.code != CONV_3D else op.stride[1:]
            if op.code == CONV_2D:
                b.StartObject(6)
                b.PrependInt8Slot(0, op.padding, 0)
                b.PrependInt32Slot(1, sw, 0)
                b.PrependInt32Slot(2, sh, 0)
                b.PrependInt32Slot(4, op.dilation[1], 1)
                b.PrependInt32Slot(5, op.dilation[0], 1)
                otype = 1
            elif op.code == DEPTHWISE_CONV_2D:
                b.StartObject(7)
                b.PrependInt8Slot(0, op.padding, 0)
                b.PrependInt32Slot(1, sw, 0)
                b.PrependInt32Slot(2, sh, 0)
                b.PrependInt32Slot(3, op.multiplier, 0)
                b.PrependInt32Slot(5, op.dilation[1], 1)
                b.PrependInt32Slot(6, op.dilation[0], 1)
                otype = 2
            elif op.code == TRANSPOSE_CONV:
                b.StartObject(4)
                b.PrependInt8Slot(0, op.padding, 0)
                b.PrependInt32Slot(1, sw, 0)
                b.PrependInt32Slot(2, sh, 0)
                otype = 49
            else:  # CONV_3D
                b.StartObject(8)
                b.PrependInt8Slot(0, op.padding, 0)
                b.PrependInt32Slot(1, op.stride[0], 0)
                b.PrependInt32Slot(2, op.stride[2], 0)
                b.PrependInt32Slot(3, op.stride[1], 0)
                b.PrependInt32Slot(5, op.dilation[0], 1)
                b.PrependInt32Slot(6, op.dilation[2], 1)
                b.PrependInt32Slot(7, op.dilation[1], 1)
                otype = 113
            options = b.EndObject()
        ins, outs = ivec(inputs), ivec(outputs)
        b.StartObject(5)
        b.PrependUint32Slot(0, index, 0)
        b.PrependUOffsetTRelativeSlot(1, ins, 0)
        b.PrependUOffsetTRelativeSlot(2, outs, 0)
        if options is not None:
            b.PrependUint8Slot(3, otype, 0)
            b.PrependUOffsetTRelativeSlot(4, options, 0)
        op_offsets.append(b.EndObject())
    graph_offsets = []
    for _ in range(subgraphs):
        tv, ov = ovec(tensor_offsets), ovec(op_offsets)
        gin, gout = ivec([0]), ivec([len(tensors) - 1])
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, tv, 0)
        b.PrependUOffsetTRelativeSlot(1, gin, 0)
        b.PrependUOffsetTRelativeSlot(2, gout, 0)
        b.PrependUOffsetTRelativeSlot(3, ov, 0)
        graph_offsets.append(b.EndObject())
    code_offsets = []
    for code in codes:
        b.StartObject(4)
        b.PrependInt8Slot(0, min(code, 127), 0)
        b.PrependInt32Slot(3, code, 0)
        code_offsets.append(b.EndObject())
    cv, gv, bv = ovec(code_offsets), ovec(graph_offsets), ovec(buf_offsets)
    desc = b.CreateString(description)
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, cv, 0)
    b.PrependUOffsetTRelativeSlot(2, gv, 0)
    b.PrependUOffsetTRelativeSlot(3, desc, 0)
    b.PrependUOffsetTRelativeSlot(4, bv, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


# --- Keras ---------------------------------------------------------------------------------------------------

def keras_layer(cls: str, name: str, inbound: list[str] | None, **config) -> dict:
    """A Keras 2 functional layer entry (``inbound`` names the layers feeding its first call)."""
    entry = {"class_name": cls, "name": name, "config": {"name": name, **config}}
    entry["inbound_nodes"] = [[[n, 0, 0, {}] for n in inbound]] if inbound else []
    return entry


def write_keras_h5(path: Path, layers: list[dict], weights: dict[str, dict[str, np.ndarray]], *,
                   config: bool = True, lambda_code: str | None = None) -> Path:
    """A legacy whole-model ``.h5`` (``model_config`` + ``model_weights``) or, with ``config=False``, a
    ``save_weights`` file (root ``layer_names``)."""
    import h5py

    with h5py.File(path, "w") as f:
        root = f
        if config:
            model = {"class_name": "Model", "config": {"name": "model", "layers": layers,
                                                       "input_layers": [], "output_layers": []}}
            f.attrs["model_config"] = json.dumps(model).encode()
            f.attrs["keras_version"] = b"2.15.0"
            f.attrs["backend"] = b"tensorflow"
            root = f.create_group("model_weights")
        names = [entry["config"]["name"] for entry in layers]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            group = root.create_group(name)
            wnames = []
            for var, array in weights.get(name, {}).items():
                wname = f"{name}/{var}:0"
                group.create_dataset(wname, data=array)
                wnames.append(wname.encode())
            group.attrs["weight_names"] = np.array(wnames, dtype="S") if wnames else np.array([], dtype="S1")
    return path


def write_keras_archive(path: Path, config: dict, weights: dict[tuple[str, ...], list[np.ndarray]]) -> Path:
    """A Keras 3 ``.keras`` zip: ``config.json``, ``metadata.json`` and ``model.weights.h5`` (``layers/NAME/vars/i``)."""
    import h5py

    blob = io.BytesIO()
    with h5py.File(blob, "w") as f:
        for layer_path, arrays in weights.items():
            group = f
            for part in layer_path:
                group = group.require_group("layers").require_group(part)
            vars_ = group.create_group("vars")
            for i, array in enumerate(arrays):
                vars_.create_dataset(str(i), data=array)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0", "date_saved": "2026-01-01"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", blob.getvalue())
    return path


# --- dense references (independent of the records' layout) ----------------------------------------------------

def nhwc_operator(kernel, grid, stride, dilation, conv):
    """The circular conv ``out[p, o] = sum conv(kernel)[o, c, x] * in[s*p + r*x mod N, c]`` as a matrix, where
    ``conv(kernel, o, c, x)`` reads the kernel in its own layout (``None`` for no connection)."""
    d = len(grid)
    out_grid = tuple(n // s for n, s in zip(grid, stride))
    c_out, c_in, ksize = conv["c_out"], conv["c_in"], conv["ksize"]
    n_in, n_out = int(np.prod(grid)), int(np.prod(out_grid))
    a = np.zeros((n_out * c_out, n_in * c_in))
    for p in itertools.product(*(range(n) for n in out_grid)):
        row0 = np.ravel_multi_index(p, out_grid) * c_out
        for x in itertools.product(*(range(k) for k in ksize)):
            q = tuple((s * pp + r * xx) % n for pp, xx, s, r, n in zip(p, x, stride, dilation, grid))
            col0 = np.ravel_multi_index(q, grid) * c_in
            for o in range(c_out):
                for c in range(c_in):
                    v = conv["at"](kernel, o, c, x)
                    if v:
                        a[row0 + o, col0 + c] += v
    return a


def singular_values(a: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.svd(a, compute_uv=False))[::-1]
