"""ONNX models (the optional ``onnx`` extra): Conv and ConvTranspose nodes, subgraphs included.

Weights come from initializers or ``Constant`` nodes (in the node's graph or any enclosing one), directly or
through constant-foldable nodes (:mod:`._onnx_fold`; convs sharing one constant are each analysed and noted
``shares_weight_with``); strides,
pads, dilations and groups from the node's attributes (declared by the file: ``geometry_source`` is
``metadata``); grids from ONNX shape inference, after ``--input-size`` has fixed any dynamic input axes (:mod:`._onnx_inputs`). A
conv pads with zeros, unless explicit padding in front of it says otherwise (a ``Pad`` node, or the
``Slice`` + ``Concat`` pattern of circular padding: :mod:`._onnx_graph`), in which case it is analysed on
the unpadded grid with that padding mode. Order is execution order (the graph's topological order; subgraph
nodes where their parent node stands); of an ``If`` node's two bodies only the one ``branch`` names is
analysed, since they are alternatives, and the other is named in a note. A ``BatchNormalization`` whose
input is a conv's output is folded in. Quantised convs (``ConvInteger``, ``QLinearConv``, ``DequantizeLinear``
in front of a ``Conv``) are dequantised and flagged ``quantised``; convs whose weight is computed at run time
are listed as skipped.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import MissingExtraError, ResourceLimitError, UnreadableInputError, UsageError
from ..records import BatchNormParams, ConvLayer, LoadedModel, SourceInfo
from ._onnx_fold import FoldedWeight, fold_weight
from ._onnx_inputs import fix_inputs
from ._onnx_external import load_onnx_model
from ._onnx_graph import quantised_weight, unpad

QUANTISED = {"ConvInteger": "integer conv", "QLinearConv": "quantised (QLinearConv) conv"}
CONV_OPS = ("Conv", "ConvTranspose", *QUANTISED)


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
        raise MissingExtraError("reading ONNX needs the onnx package", hint="pip install 'cbn-inspect[onnx]'") from exc
    return onnx


def _topological(graph: Any, outer: set[str]) -> list[Any]:
    """The graph's nodes in execution order: the file's order where it is already topological (the spec asks
    for it), otherwise a stable topological sort (a node runs once all the values it reads exist)."""
    nodes = list(graph.node)
    known = set(outer) | {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ready, out, pending = set(known), [], list(nodes)
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                out.append(node)
                ready.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:  # inputs from an enclosing scope we do not track, or a cycle: keep the file's order
            out.extend(rest)
            break
        pending = rest
    return out


@dataclass
class _Walk:
    """What the walk over (sub)graphs collects: constants seen, producers and consumers of every value, and the
    ``If`` branches it chose and left out."""

    branch: str = "then"
    producers: dict[str, Any] = dataclasses.field(default_factory=dict)
    consumers: dict[str, list] = dataclasses.field(default_factory=dict)
    left_out: list[str] = dataclasses.field(default_factory=list)


def _index(graph: Any, walk: _Walk) -> None:
    """Producers and consumers of every value, over every graph (both branches of each If too)."""
    for node in graph.node:
        for name in node.output:
            walk.producers.setdefault(name, node)
        for name in node.input:
            walk.consumers.setdefault(name, []).append(node)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _index(sub, walk)


def _count_convs(graph: Any) -> int:
    total = 0
    for node in graph.node:
        total += node.op_type in CONV_OPS
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                total += _count_convs(sub)
    return total


def _walk(graph: Any, scope: dict[str, Any], path: str, walk: _Walk, branch: str | None,
          outer: set[str]) -> Iterator[tuple[Any, dict[str, Any], str, str | None]]:
    """Every node in execution order with the constants visible to it and the If branch it lies in.

    Subgraphs are visited where their parent node stands. An ``If`` has two alternative bodies: only the one
    ``walk.branch`` names is visited (the other is recorded in ``walk.left_out``), never both in a row.
    """
    from onnx import AttributeProto

    scope = dict(scope)
    for init in graph.initializer:
        scope[init.name] = init
    visible = set(outer) | set(scope)
    for node in _topological(graph, visible):
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == AttributeProto.TENSOR:
                    scope[node.output[0]] = attr.t
        yield node, scope, path, branch
        visible.update(node.output)
        label = _text(node.name or node.op_type)
        if node.op_type == "If":
            bodies = {a.name: a.g for a in node.attribute if a.type == AttributeProto.GRAPH}
            chosen = f"{walk.branch}_branch"
            other = "else_branch" if chosen == "then_branch" else "then_branch"
            if other in bodies and _count_convs(bodies[other]):
                walk.left_out.append(
                    f"If node {path}{label}: analysed its {chosen} ({_count_convs(bodies.get(chosen)) if chosen in bodies else 0} "
                    f"conv layers); its {other} ({_count_convs(bodies[other])} conv layers) is an alternative, "
                    f"not a continuation (--onnx-branch {other.split('_')[0]} analyses it instead)")
            if chosen in bodies:
                where = f"{path}{label}.{chosen}"
                yield from _walk(bodies[chosen], scope, where + "/", walk, where, visible)
            continue
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            for i, sub in enumerate(subgraphs):
                where = f"{path}{label}.{_text(attr.name)}{i if len(subgraphs) > 1 else ''}"
                yield from _walk(sub, scope, where + "/", walk, branch, visible)


def _shapes(model: Any) -> dict[str, tuple[int | None, ...]]:
    """Shapes of every value ONNX shape inference could determine (all graphs); None for a symbolic axis."""
    onnx = _import_onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is best effort: no grids then, and the report says so
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:
            inferred = model
    out: dict[str, tuple[int, ...]] = {}

    def visit(graph):
        for value in list(graph.input) + list(graph.value_info) + list(graph.output):
            dims = value.type.tensor_type.shape.dim
            if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
                out[value.name] = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                                        for d in dims)
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


def _spatial(shape: tuple | None, d: int) -> tuple[int, ...] | None:
    return tuple(shape[2:]) if shape and len(shape) == d + 2 and None not in shape[2:] else None


def _padding(node, attrs, dims, walk, scope, shapes) -> tuple[str, tuple[int, ...] | None, str | None, list[str]]:
    """(padding mode, grid, value whose shape is the grid, notes) of a conv, explicit padding in front folded in."""
    d = len(dims) - 2
    own = list(attrs.get("pads", [0] * 2 * d))
    auto = _text(attrs.get("auto_pad", "NOTSET"))
    notes = []
    if auto != "NOTSET":
        notes.append(f"auto_pad {auto}")
    elif any(own):
        notes.append(f"pads {own}")
    found = None if node.op_type == "ConvTranspose" else unpad(node.input[0], walk.producers, scope, shapes, d + 2)
    if found is None:
        return "zeros", _spatial(shapes.get(node.input[0]), d), node.input[0], notes
    if any(own) or auto not in ("NOTSET", "VALID"):
        notes.append(f"{found.how} in front, and padding of its own: analysed on the padded grid")
        return "zeros", _spatial(shapes.get(node.input[0]), d), node.input[0], notes
    dilation = list(attrs.get("dilations", [1] * d))
    full = all(a + b == r * (k - 1) for (a, b), r, k in zip(found.pads, dilation, dims[2:]))
    pads = " ".join(f"{a}+{b}" for a, b in found.pads)
    if found.mode == "circular" and not full:
        notes.append(f"{found.how} of {pads} in front, not the kernel's extent - 1: analysed on the padded grid")
        return "zeros", _spatial(shapes.get(node.input[0]), d), node.input[0], notes
    notes.append(f"{found.how} ({pads} per axis) folded in: analysed on the unpadded grid")
    return found.mode, _spatial(shapes.get(found.source), d), found.source, notes


def read_onnx(path: Path, *, fold_batchnorm: bool, input_size: tuple[int, ...] | None = None,
              branch: str = "then") -> LoadedModel:
    """Conv layers of an ONNX model in execution order; ``input_size`` fixes dynamic input axes for shape
    inference; ``branch`` (``then``/``else``) names the body of every ``If`` node that is analysed."""
    onnx = _import_onnx()
    try:
        model = load_onnx_model(path)
    except (UnreadableInputError, ResourceLimitError):
        raise
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise UnreadableInputError(f"{path}: not a readable ONNX model ({' '.join(str(exc).split())[:160]})") from exc
    if branch not in ("then", "else"):
        raise UsageError(f"--onnx-branch {branch!r}: use then or else")
    size_notes = fix_inputs(model, input_size)
    shapes = _shapes(model)
    metadata = {_text(p.key): _text(p.value) for p in model.metadata_props}
    layers: list[ConvLayer] = []
    skipped: list[tuple[str, str]] = []
    by_output: dict[str, int] = {}
    missing_grid = 0
    shared_by: dict[int, list[tuple[str, str]]] = {}  # constant -> the convs whose weight it is
    walk = _Walk(branch=branch)
    _index(model.graph, walk)
    for node, scope, where, in_branch in _walk(model.graph, {}, "", walk, None, set()):
        name = where + _text(node.name or f"{_text(node.op_type)}_{len(layers) + len(skipped)}")
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
        if node.op_type not in CONV_OPS:
            continue
        flags: tuple[str, ...] = ()
        notes: list[str] = []
        quant = quantised_weight(node, walk.producers, walk.consumers, scope)
        if quant is not None:
            weight, dtype, qnote = quant
            dims = tuple(int(v) for v in weight.weight.dims)
            flags, notes = ("quantised",), [qnote]
        elif node.op_type in QUANTISED:
            skipped.append((name, f"{QUANTISED[node.op_type]}: quantised weight is computed at run time "
                                  "(not an initializer or Constant): not analysed"))
            continue
        else:
            proto = scope.get(node.input[1]) if len(node.input) > 1 else None
            if not node.input:
                skipped.append((name, "a conv node without inputs: not analysed"))
                continue
            if proto is None:
                folded = fold_weight(node.input[1], walk.producers, scope) if len(node.input) > 1 else None
                if not isinstance(folded, FoldedWeight):
                    skipped.append((name, "weight is computed at run time (not an initializer or Constant)"
                                    if folded is None else f"weight cannot be folded from its constant: {folded}"))
                    continue
                dims = folded.shape
                if len(dims) in (3, 4, 5) and folded.data_type not in (1, 10, 11):
                    skipped.append((name, f"weight of shape {dims} folded to ONNX dtype {folded.data_type} "
                                          "is not analysed"))
                    continue
                weight, dtype, notes = folded, _dtype(folded.data_type), [_fold_note(folded)]
                if any(step.op == "DequantizeLinear" for step in folded.steps):
                    flags, dtype = ("quantised",), _stored_dtype(folded.source.data_type)
                shared_by.setdefault(id(folded.source), []).append((name, _text(folded.source.name)))
            else:
                dims = tuple(int(v) for v in proto.dims)
                if len(dims) in (3, 4, 5) and proto.data_type not in (1, 10, 11, 16):  # float, f16, f64, bf16
                    skipped.append((name, f"weight of shape {dims} and ONNX dtype {proto.data_type} is not analysed"))
                    continue
                weight, dtype = OnnxWeight(proto), _dtype(proto.data_type)
                shared_by.setdefault(id(proto), []).append((name, _text(proto.name)))
        if len(dims) not in (3, 4, 5) or min(dims) < 1:
            skipped.append((name, f"weight of shape {dims} is not a 1-3 d conv kernel"))
            continue
        attrs, d = _attrs(node), len(dims) - 2
        at = f"{path}: node {name}"
        for key, count, default in (("pads", 2 * d, 0), ("strides", d, 1), ("dilations", d, 1)):
            _ints(attrs, key, count, default, at)  # refused (exit 3) unless integers of the right count
        mode, grid, _, pad_notes = _padding(node, attrs, dims, walk, scope, shapes)
        notes = pad_notes + notes
        missing_grid += grid is None
        layers.append(ConvLayer(
            name=name, shape=dims, dtype=dtype, weight=weight, order=len(layers),
            groups=_int(attrs, "group", 1, at), stride=_ints(attrs, "strides", d, 1, at),
            dilation=_ints(attrs, "dilations", d, 1, at), transposed=node.op_type == "ConvTranspose",
            padding_mode=mode, grid=grid, grid_source="metadata" if grid else "default",
            geometry_source="metadata", notes=tuple(notes), flags=flags, branch=in_branch,
        ))
        if node.output:
            by_output[node.output[0]] = len(layers) - 1
    layers = _note_shared(layers, shared_by)
    notes = ["an ONNX graph: geometry from node attributes, order from the graph's execution order"]
    notes += size_notes + walk.left_out
    if missing_grid:
        hint = ("" if input_size else "; pass --input-size to fix the input's dynamic axes")
        notes.append(f"{missing_grid} layer(s) without an inferred input shape (the model does not declare "
                     f"static spatial input shapes): default grid{hint}")
    info = SourceInfo(path=str(path), format="onnx", metadata=metadata, notes=tuple(notes))
    return LoadedModel(source=info, layers=tuple(layers), skipped=tuple(skipped), order_source="graph",
                       order_confidence="high")


def _fold_note(folded: FoldedWeight) -> str:
    chain = " -> ".join(f"{step.op}" + (f" {step.node}" if step.node != step.op else "") for step in folded.steps)
    return (f"weight folded from constant {_text(folded.source.name) or '(unnamed)'} through {chain}, "
            "with onnxruntime's numerics")


def _note_shared(layers: list[ConvLayer], shared_by: dict[int, list[tuple[str, str]]]) -> list[ConvLayer]:
    """A note on every conv whose weight comes from the same constant as another conv's (tied weights)."""
    notes: dict[str, str] = {}
    for users in shared_by.values():
        if len(users) > 1:
            for name, const in users:
                others = ", ".join(other for other, _ in users if other != name)
                notes[name] = f"shares_weight_with: {others} (constant {const or '(unnamed)'})"
    return [dataclasses.replace(layer, notes=layer.notes + (notes[layer.name],)) if layer.name in notes else layer
            for layer in layers]


def _stored_dtype(code: int) -> str:
    return {2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32"}.get(code, _dtype(code))


def _dtype(code: int) -> str:
    return {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}.get(code, str(code))
