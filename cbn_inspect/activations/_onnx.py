"""Running an ONNX model through onnxruntime (the ``onnx`` extra), every conv's feature map exposed.

The graph is copied and the tensor feeding (``side="input"``) or leaving (``side="output"``) each
``Conv``/``ConvTranspose`` node of the main graph is added as a graph output; one session run then returns
them all. On the input side, explicit padding in front of a conv is looked through, so that the feature
map is the one on the layer's own grid: a ``Pad`` node, and circular padding as exporters write it
(``Concat`` of a tensor with ``Slice``s of itself). Layer names are the ONNX loader's (node name, else
``OpType_k``), so the activation profile lines up with the weight profile.

Running a standard ONNX graph executes no code from the file, so no flag is needed; a node from a custom
operator domain would need a custom-op library, and is refused unless ``trust_code`` is given.
The input shape comes from the model's first input; ``--input-size`` fills axes the model leaves dynamic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ResourceLimitError, UnreadableInputError, UnsafeContentError, UsageError
from ..loaders._onnx_external import load_onnx_model
from ..loaders._onnx import QUANTISED, _index, _text, _walk, _Walk
from .inputs import ModelInput
from .runners import Sink

# Operator domains onnxruntime implements itself (the standard ones and its own contrib ops).
BUILTIN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft", "com.microsoft.nchwc"}
CONV_TYPES = ("Conv", "ConvTranspose")


def _import_ort():
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        from ..errors import MissingExtraError

        raise MissingExtraError(f"running ONNX models needs onnx and onnxruntime ({exc.name or 'one'} is not installed)",
                                hint="pip install 'cbn-inspect[onnx]'") from exc
    return onnx, onnxruntime


def conv_nodes(graph: Any) -> tuple[list[tuple[str, Any]], int]:
    """(loader name, node) of every Conv/ConvTranspose of the main graph, and how many sit in subgraphs.

    Names follow :func:`cbn_inspect.loaders._onnx.read_onnx`: the node's name, else ``OpType_k`` with k the
    number of conv-like nodes before it (every one becomes a layer or a skipped entry there).
    """
    out, nested, k = [], 0, 0
    walk = _Walk(branch="then")
    _index(graph, walk)
    for node, _scope, where, _branch in _walk(graph, {}, "", walk, None, set()):
        if node.op_type not in CONV_TYPES and node.op_type not in QUANTISED:
            continue
        name = where + _text(node.name or f"{_text(node.op_type)}_{k}")  # as the loader spells it (bytes too)
        k += 1
        if node.op_type not in CONV_TYPES:
            continue
        if where:
            nested += 1
        else:
            out.append((name, node))
    return out, nested


def feature_map(name: str, producers: dict[str, Any]) -> str:
    """The tensor before explicit padding: through ``Pad`` and circular ``Concat(x, Slice(x), ...)``."""
    node = producers.get(name)
    if node is None:
        return name
    if node.op_type == "Pad" and node.input:
        return feature_map(node.input[0], producers)
    if node.op_type == "Concat" and len(node.input) > 1:
        sliced = {i for i in node.input if producers.get(i) is not None and producers[i].op_type == "Slice"}
        bases = set(node.input) - sliced
        sources = {producers[i].input[0] for i in sliced}
        if len(bases) == 1 and sources <= bases:
            return feature_map(next(iter(bases)), producers)
    return name


def _custom_domains(model: Any) -> set[str]:
    domains = {_text(op.domain) for op in model.opset_import if _text(op.domain) not in BUILTIN_DOMAINS}
    domains |= {_text(node.domain) for node in _all_nodes(model.graph) if _text(node.domain) not in BUILTIN_DOMAINS}
    return domains


def _not_utf8(graph: Any) -> bool:
    """Whether a tensor name the run refers to is not UTF-8 (protobuf hands those back as bytes)."""
    names = [v.name for v in graph.input] + [v.name for v in graph.output]
    names += [n for node in graph.node for n in (*node.input, *node.output)]
    return any(isinstance(n, bytes) for n in names)


def _all_nodes(graph: Any) -> Iterator[Any]:
    """Every node of the graph and of its subgraphs (both bodies of an ``If``: either may run)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)


class OnnxRunner:
    kind = "onnxruntime"

    def __init__(self, path: Path, *, side: str, device: str, trust_code: bool) -> None:
        onnx, ort = _import_ort()
        try:
            model = load_onnx_model(path)
        except (UnreadableInputError, ResourceLimitError):
            raise
        except Exception as exc:  # protobuf DecodeError, missing external data, ...
            raise UnreadableInputError(f"{path}: not a readable ONNX model ({' '.join(str(exc).split())[:160]})") from exc
        custom = _custom_domains(model)
        if custom and not trust_code:
            raise UnsafeContentError(
                f"{path}: uses custom operator domain(s) {', '.join(sorted(custom))}, which need code outside the model",
                hint="if you trust this model and its custom-op library, re-run with --trust-code",
            )
        self.path = path
        self.notes: list[str] = ["an ONNX model run by onnxruntime; conv feature maps exposed as graph outputs"]
        graph = model.graph
        if _not_utf8(graph):
            raise UnreadableInputError(f"{path}: tensor names that are not UTF-8: the graph cannot be run")
        initializers = {i.name for i in graph.initializer}
        inputs = [v for v in graph.input if v.name not in initializers]
        if not inputs:
            raise UsageError(f"{path}: the graph has no input to feed")
        if len(inputs) > 1:
            raise UsageError(f"{path}: the graph takes {len(inputs)} inputs ({', '.join(v.name for v in inputs[:4])}); "
                             "activations are profiled for single-input models")
        self.input_name = inputs[0].name
        ttype = inputs[0].type.tensor_type
        self.input_dtype = np.float16 if ttype.elem_type == 10 else np.float64 if ttype.elem_type == 11 else np.float32
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in ttype.shape.dim]
        if len(dims) not in (3, 4, 5):
            raise UsageError(f"{path}: input {self.input_name!r} has {len(dims)} axes; expected (N, C, *spatial)")
        spatial = tuple(dims[2:]) if None not in dims[2:] else None
        channels = dims[1]
        if channels is None:
            from ..loaders._onnx_inputs import input_channels

            channels = input_channels(model, inputs[0].name)  # a conv reading the input, its weight folded
            if channels is None:  # else the first conv's stored weight, as before
                first = next((n for _, n in conv_nodes(graph)[0]), None)
                weight = next((i for i in graph.initializer if first is not None and i.name == first.input[1]), None)
                channels = int(weight.dims[1]) if weight is not None else 3
        self.model_input = ModelInput(channels=int(channels), spatial=spatial, ndim=len(dims) - 2,
                                      source="onnx input", fixed_batch=dims[0])
        convs, nested = conv_nodes(graph)
        if not convs:
            from ..errors import NothingToAnalyseError

            raise NothingToAnalyseError(f"{path}: no Conv or ConvTranspose node in the main graph")
        if nested:
            self.notes.append(f"{nested} conv(s) inside subgraphs (If/Loop bodies) not profiled")
        broken = next((name for name, node in convs if not node.input or not node.input[0] or not node.output
                       or not node.output[0]), None)
        if broken is not None:
            raise UnreadableInputError(f"{path}: conv node {broken!r} has no data input or no output: the graph "
                                       "cannot run")
        producers = {out: node for node in graph.node for out in node.output}
        self.layers = [(name, feature_map(node.input[0], producers) if side == "input" else node.output[0])
                       for name, node in convs]
        existing = {o.name for o in graph.output}
        wanted = list(dict.fromkeys(t for _, t in self.layers))
        try:
            for tensor in wanted:
                if tensor not in existing:
                    graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
        except Exception as exc:  # a tensor name protobuf will not take as an output
            raise UnreadableInputError(f"{path}: its conv feature maps cannot be exposed "
                                       f"({' '.join(str(exc).split())[:160]})") from exc
        self.outputs = wanted
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # no arena: buffers go back after every run, so the memory plan's per-batch estimate is what stays
        # resident (an arena keeps its high-water mark, and grows again when a pass fetches other outputs)
        options.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented kinds
            raise UnreadableInputError(f"{path}: onnxruntime cannot run this model "
                                       f"({' '.join(str(exc).split())[:200]})") from exc

    def select(self, layers: set[str] | None) -> None:
        """Fetch only these layers' feature maps (None: every layer's): one group of the memory plan."""
        self._fetch = None if layers is None else [(n, t) for n, t in self.layers if n in layers]

    def run(self, batch: torch.Tensor, sink: Sink) -> None:
        layers = getattr(self, "_fetch", None) or self.layers
        outputs = list(dict.fromkeys(t for _, t in layers))
        data = batch.cpu().numpy().astype(self.input_dtype)
        step = self.model_input.fixed_batch or len(data)
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(data), step):
            chunk = data[start:start + step]
            if len(chunk) < step:  # a static batch axis: pad the last chunk, drop the padding afterwards
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], chunk.dtype)])
            outs = self.session.run(outputs, {self.input_name: chunk})
            parts.append([o[: len(data) - start] for o in outs])
            del outs
        tensors = {}
        for i, name in enumerate(outputs):  # one output at a time, its parts released as it is joined
            pieces = [p[i] for p in parts]
            for p in parts:
                p[i] = None
            joined = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
            tensors[name] = torch.from_numpy(joined.astype(np.float32, copy=False))
        for layer, tensor_name in layers:
            sink(layer, tensors[tensor_name])
