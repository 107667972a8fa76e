"""ONNX models (the optional ``onnx`` extra): Conv and ConvTranspose nodes, subgraphs included.

Weights come from initializers or ``Constant`` nodes (in the node's graph or any enclosing one); strides,
pads, dilations and groups from the node's attributes (declared by the file: ``geometry_source`` is
``metadata``); grids from ONNX shape inference where the model declares its input shapes. ONNX pads with
zeros. Order is the graph's node order (topologically sorted by the ONNX spec; subgraph nodes where their
parent node stands). A ``BatchNormalization`` whose input is a conv's output is folded in. Quantised convs
(``ConvInteger``, ``QLinearConv``) and convs whose weight is computed at run time are listed as skipped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import UnreadableInputError, UsageError
from ..records import BatchNormParams, ConvLayer, LoadedModel, SourceInfo

QUANTISED = {"ConvInteger": "integer conv", "QLinearConv": "quantised (QLinearConv) conv"}


@dataclass(frozen=True)
class OnnxWeight:
    """An initializer or Constant tensor, converted to torch only when its layer is analysed."""

    proto: Any = dataclasses.field(repr=False)

    def load(self) -> Any:
        import torch
        from onnx import numpy_helper

        return torch.from_numpy(numpy_helper.to_array(self.proto).copy())


def looks_like_onnx(head: bytes) -> bool:
    """A ModelProto starts with field 1 (ir_version, varint) then another known field (producer, graph, opset)."""
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in (0x12, 0x1A, 0x22, 0x3A, 0x42)


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise UsageError("reading ONNX needs the onnx package", hint="pip install 'cbn-inspect[onnx]'") from exc
    return onnx


def _walk(graph: Any, scope: dict[str, Any], path: str) -> Iterator[tuple[Any, dict[str, Any], str]]:
    """Every node with the constants visible to it, descending into subgraph attributes in place."""
    from onnx import AttributeProto

    scope = dict(scope)
    for init in graph.initializer:
        scope[init.name] = init
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == AttributeProto.TENSOR:
                    scope[node.output[0]] = attr.t
        yield node, scope, path
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for i, sub in enumerate(subgraphs):
                label = f"{path}{_text(node.name or node.op_type)}.{_text(attr.name)}{i if len(subgraphs) > 1 else ''}/"
                yield from _walk(sub, scope, label)


def _shapes(model: Any) -> dict[str, tuple[int | None, ...]]:
    """Shapes of every value ONNX shape inference could determine (all graphs); None for a symbolic axis."""
    onnx = _import_onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is best effort: no grids then, and the report says so
        inferred = model
    out: dict[str, tuple[int, ...]] = {}

    def visit(graph):
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = value.type.tensor_type.shape.dim
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                out[value.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in dims)
        for node in graph.node:
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub)

    visit(inferred.graph)
    return out


def _text(value: Any) -> str:
    """A protobuf string field as text: the Python protobuf hands back bytes where the file's are not UTF-8."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        try:
            out[a.name] = helper.get_attribute_value(a)
        except Exception:  # an attribute whose declared type has no value: treated as malformed below
            out[a.name] = None
    return out


def _ints(attrs: dict[str, Any], key: str, count: int, default: int, where: str) -> tuple[int, ...]:
    """An INTS attribute of ``count`` values (or its default), refused unless it holds that many integers."""
    value = attrs.get(key)
    if value is None and key not in attrs:
        return (default,) * count
    if isinstance(value, int) and not isinstance(value, bool):  # an INT where INTS belong
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) != count or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UnreadableInputError(f"{where}: attribute {key} is not {count} integers ({value!r:.60})")
    return tuple(value)


def _int(attrs: dict[str, Any], key: str, default: int, where: str) -> int:
    value = attrs.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnreadableInputError(f"{where}: attribute {key} is not an integer ({value!r:.60})")
    return value


def _batchnorm(node: Any, scope: dict[str, Any], name: str) -> tuple[BatchNormParams | None, str | None]:
    """A BatchNormalization node's scale and variance (constants), or why it cannot be folded."""
    if len(node.input) < 5:
        return None, f"BatchNorm {name} not folded: it has {len(node.input)} of its 5 inputs"
    gamma, var = scope.get(node.input[1]), scope.get(node.input[4])
    if var is None:
        return None, None
    eps = _attrs(node).get("epsilon", 1e-5)
    try:
        weight = OnnxWeight(gamma).load() if gamma is not None else None
        running_var = OnnxWeight(var).load()
        return BatchNormParams(name=_text(node.name or (node.output[0] if node.output else name)), weight=weight,
                               running_var=running_var, eps=float(eps)), None
    except Exception as exc:  # dims that do not match the data, a non-numeric dtype, a string epsilon
        return None, f"BatchNorm {name} not folded: its constants cannot be read ({' '.join(str(exc).split())[:80]})"


def read_onnx(path: Path, *, fold_batchnorm: bool) -> LoadedModel:
    onnx = _import_onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise UnreadableInputError(f"{path}: not a readable ONNX model ({' '.join(str(exc).split())[:160]})") from exc
    shapes = _shapes(model)
    metadata = {_text(p.key): _text(p.value) for p in model.metadata_props}
    layers: list[ConvLayer] = []
    skipped: list[tuple[str, str]] = []
    by_output: dict[str, int] = {}
    missing_grid = 0
    for node, scope, where in _walk(model.graph, {}, ""):
        name = where + _text(node.name or f"{_text(node.op_type)}_{len(layers) + len(skipped)}")
        if node.op_type in QUANTISED:
            skipped.append((name, f"{QUANTISED[node.op_type]}: quantised weights are not analysed"))
            continue
        if (node.op_type == "BatchNormalization" and fold_batchnorm and node.input
                and node.input[0] in by_output):
            index = by_output.pop(node.input[0])
            if layers[index].batchnorm is None:
                bn, why = _batchnorm(node, scope, name)
                if bn is not None:
                    layers[index] = dataclasses.replace(layers[index], batchnorm=bn)
                elif why:
                    layers[index] = dataclasses.replace(layers[index], notes=layers[index].notes + (why,))
            continue
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        proto = scope.get(node.input[1]) if len(node.input) > 1 else None
        if proto is None:
            skipped.append((name, "weight is computed at run time (not an initializer or Constant)"))
            continue
        dims = tuple(int(v) for v in proto.dims)
        if (len(dims) not in (3, 4, 5) or min(dims) < 1
                or proto.data_type not in (1, 10, 11, 16)):  # float, f16, f64, bf16
            skipped.append((name, f"weight of shape {dims} and ONNX dtype {proto.data_type} is not analysed"))
            continue
        attrs, d = _attrs(node), len(dims) - 2
        at = f"{path}: node {name}"
        pads = list(_ints(attrs, "pads", 2 * d, 0, at))
        notes = []
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode("utf-8", "replace") if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad != "NOTSET":
            notes.append(f"auto_pad {auto_pad}")
        elif any(pads):
            notes.append(f"pads {pads}")
        grid = shapes.get(node.input[0])
        grid = tuple(grid[2:]) if grid and len(grid) == d + 2 and None not in grid[2:] and min(grid[2:]) > 0 else None
        missing_grid += grid is None
        layers.append(ConvLayer(
            name=name, shape=dims, dtype=_dtype(proto.data_type), weight=OnnxWeight(proto), order=len(layers),
            groups=_int(attrs, "group", 1, at), stride=_ints(attrs, "strides", d, 1, at),
            dilation=_ints(attrs, "dilations", d, 1, at), transposed=node.op_type == "ConvTranspose",
            padding_mode="zeros", grid=grid, grid_source="metadata" if grid else "default",
            geometry_source="metadata", notes=tuple(notes),
        ))
        if node.output:
            by_output[node.output[0]] = len(layers) - 1
    notes = ["an ONNX graph: geometry from node attributes, order from the graph"]
    if missing_grid:
        notes.append(f"{missing_grid} layer(s) without an inferred input shape (the model does not declare "
                     "static spatial input shapes): default grid")
    info = SourceInfo(path=str(path), format="onnx", metadata=metadata, notes=tuple(notes))
    return LoadedModel(source=info, layers=tuple(layers), skipped=tuple(skipped), order_source="metadata")


def _dtype(code: int) -> str:
    return {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}.get(code, str(code))
