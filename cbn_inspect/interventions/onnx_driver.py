"""Replacing a probed feature map inside an ONNX model: the graph split at the probed tensors.

For a set of probed tensors the graph is rewired (every consumer of a probed tensor ``t`` reads a new input
``t__cbn_override`` instead) and cut into segments run by their own onnxruntime sessions:

- the **prefix**: everything computable from the model's input without any override (the probed tensors
  that do not depend on another probe, the graph outputs no probe reaches, and the boundary tensors later
  segments read). It does not depend on the interventions, so its values are cached per batch (within the
  memory bound) and each intervention runs only what follows;
- one segment per probed tensor that depends on an earlier override, and the **suffix**: the nodes between
  the overrides (plus the cached boundary tensors) and the graph outputs.

Every consumer of a probed tensor sees the filtered copy, as with the torch runners. The model's static batch
axis, if any, is respected: shorter batches are padded and the padding dropped from the outputs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np
import torch

from ..errors import AnalysisError
from ..activations._onnx import _import_ort

Edit = Callable[[torch.Tensor], torch.Tensor]
SUFFIX = "__cbn_override"


def _subgraphs(node: Any) -> list[Any]:
    out = []
    for attr in node.attribute:
        if attr.HasField("g"):
            out.append(attr.g)
        out.extend(attr.graphs)
    return out


def _outer_refs(graph: Any) -> set[str]:
    """Names a subgraph reads from the enclosing scope."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(n for n in node.input if n)
        for sub in _subgraphs(node):
            used |= _outer_refs(sub)
        defined.update(node.output)
    return used - defined


def consumed(node: Any) -> set[str]:
    names = {n for n in node.input if n}
    for sub in _subgraphs(node):
        names |= _outer_refs(sub)
    return names


def _rename(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for sub in _subgraphs(node):
            _rename(sub, old, new)


def needed_nodes(nodes: list[Any], known: set[str], outputs: Iterable[str]) -> tuple[list[Any], set[str]]:
    """The nodes (in graph order) computing ``outputs`` from ``known`` names and initializers, and the known
    names they read."""
    need = {o for o in outputs if o not in known}
    chosen = []
    for node in reversed(nodes):
        if any(o in need for o in node.output):
            chosen.append(node)
            need |= {n for n in consumed(node) if n not in known}
    chosen.reverse()
    produced = {o for n in chosen for o in n.output}
    reads = {n for node in chosen for n in consumed(node)} - produced
    return chosen, reads


class _Plan:
    """The segments of one set of probed tensors."""

    def __init__(self, driver: "OnnxDriver", tensors: list[str]) -> None:
        onnx = driver.onnx
        model = onnx.ModelProto()
        model.CopyFrom(driver.model)
        graph = model.graph
        for t in tensors:
            _rename(graph, t, t + SUFFIX)
        inits = {i.name for i in graph.initializer}
        nodes = list(graph.node)
        prefix_known = set(driver.inputs)
        for node in nodes:  # closure from the input without any override
            if all(n in prefix_known or n in inits for n in consumed(node)):
                prefix_known.update(node.output)
        position = {o: i for i, node in enumerate(nodes) for o in node.output}
        ordered = sorted(tensors, key=lambda t: position.get(t, -1))
        overrides = set()
        self.steps: list[tuple[str, Any, list[str]]] = []  # (tensor, session or None, feeds)
        later_reads: set[str] = set()
        for t in ordered:
            if t in prefix_known:
                self.steps.append((t, None, []))
            else:
                chosen, reads = needed_nodes(nodes, prefix_known | overrides, [t])
                if any(r not in prefix_known and r not in overrides and r not in inits for r in reads):
                    raise AnalysisError(f"ONNX tensor {t}: cannot be computed from the cut graph")
                self.steps.append((t, driver.segment(model, chosen, reads - inits, [t]), sorted(reads - inits)))
                later_reads |= reads - inits - overrides
            overrides.add(t + SUFFIX)
        reached = [o for o in driver.outputs if o not in prefix_known]
        chosen, reads = needed_nodes(nodes, prefix_known | overrides, reached)
        self.final = driver.segment(model, chosen, reads - inits, reached) if reached else None
        self.final_feeds = sorted(reads - inits)
        self.reached = reached
        later_reads |= reads - inits - overrides
        self.prefix = sorted(({t for t in ordered if t in prefix_known} | later_reads
                              | {o for o in driver.outputs if o in prefix_known}) - set(driver.inputs))


class OnnxDriver:
    """Interventions on the feature maps of an :class:`~cbn_inspect.activations._onnx.OnnxRunner`."""

    def __init__(self, runner: Any, cache_bytes: int = 1 << 30) -> None:
        onnx, ort = _import_ort()
        self.onnx, self.ort = onnx, ort
        self.runner = runner
        self.kind = runner.kind
        self.model = onnx.load(str(runner.path))
        graph = self.model.graph
        inits = {i.name for i in graph.initializer}
        self.inputs = [v.name for v in graph.input if v.name not in inits]
        self.outputs = [o.name for o in graph.output]
        self.fixed = runner.model_input.fixed_batch
        self.sites: dict[str, str] = {}  # layer -> tensor
        self.order: list[str] = []
        self.aliases: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        by_tensor: dict[str, str] = {}
        for name, tensor in runner.layers:
            if tensor in by_tensor:
                self.aliases[name] = by_tensor[tensor]
            else:
                by_tensor[tensor] = name
                self.sites[name] = tensor
                self.order.append(name)
        self.plans: dict[frozenset, _Plan] = {}
        self.cache: dict[tuple[frozenset, int], dict[str, np.ndarray]] = {}
        self.cache_bytes = cache_bytes
        self.cached = 0
        self.providers = runner.session.get_providers()

    # -- sessions -------------------------------------------------------------------------------------------

    def segment(self, model: Any, nodes: list[Any], feeds: set[str], outputs: list[str]) -> Any:
        onnx = self.onnx
        helper = onnx.helper
        types = self.types
        graph = helper.make_graph(
            nodes, "cbn_segment",
            [helper.make_tensor_value_info(n, types.get(n, onnx.TensorProto.FLOAT), None) for n in sorted(feeds)],
            [helper.make_empty_tensor_value_info(o) for o in outputs],
            [i for i in model.graph.initializer if i.name in {n for node in nodes for n in consumed(node)}])
        part = helper.make_model(graph, opset_imports=list(model.opset_import))
        part.ir_version = model.ir_version
        part.functions.extend(model.functions)
        options = self._options()
        try:
            return self.ort.InferenceSession(part.SerializeToString(), options, providers=self.providers)
        except Exception as exc:
            raise AnalysisError(f"onnxruntime cannot run the model cut at the probed tensors "
                                f"({' '.join(str(exc).split())[:160]})") from exc

    def _options(self) -> Any:
        """Every session of the driver without graph optimisations: fusions differ between the whole graph and
        its segments, and on a fragile model (hard-swish, BatchNorm, sigmoid) they alone move the outputs by
        several per cent; unoptimised, the cut graph reproduces the reference to float32 round-off."""
        options = self.ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return options

    def record(self, batch: torch.Tensor) -> None:
        """Shapes of the probed tensors and the element types of every tensor (for the segments' inputs)."""
        names = [o.name for o in self.runner.session.get_outputs()]
        values = self._run(self.runner.session, names, {self.inputs[0]: self._feed(batch)})
        self.types = {n: self.onnx.helper.np_dtype_to_tensor_dtype(v.dtype) for n, v in zip(names, values)}
        self.types[self.inputs[0]] = self.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(self.runner.input_dtype))
        value_of = dict(zip(names, values))
        for name in self.order:
            self.shapes[name] = tuple(value_of[self.sites[name]].shape[1:])
        # every other tensor's type, for boundary inputs of segments: one run with all intermediate outputs
        model = self.onnx.ModelProto()
        model.CopyFrom(self.model)
        existing = {o.name for o in model.graph.output}
        extra = [o for node in model.graph.node for o in node.output if o and o not in existing]
        for o in extra:
            model.graph.output.append(self.onnx.helper.make_empty_tensor_value_info(o))
        options = self._options()
        # the prefix of every cut and the reference outputs are read from this session (all intermediate
        # tensors exposed), optimised like the segments: see _options
        self.full = session = self.ort.InferenceSession(model.SerializeToString(), options, providers=self.providers)
        for n, v in zip(extra, self._run(session, extra, {self.inputs[0]: self._feed(batch)})):
            self.types[n] = self.onnx.helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype)

    @property
    def sites_shape(self) -> dict[str, tuple[int, ...]]:
        return self.shapes

    def _feed(self, batch: torch.Tensor) -> np.ndarray:
        data = batch.detach().cpu().numpy().astype(self.runner.input_dtype)
        if self.fixed and len(data) < self.fixed:
            data = np.concatenate([data, np.zeros((self.fixed - len(data),) + data.shape[1:], data.dtype)])
        return data

    def _run(self, session: Any, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        wanted = {i.name for i in session.get_inputs()}
        return session.run(names, {k: v for k, v in feeds.items() if k in wanted})

    # -- running --------------------------------------------------------------------------------------------

    def reference(self, batch: torch.Tensor, sink: Callable[[str, Any], None]) -> list[torch.Tensor]:
        n = len(batch)
        names = self.outputs + [t for t in self.runner.outputs if t not in self.outputs and t not in self.inputs]
        feed = {self.inputs[0]: self._feed(batch)}
        values = dict(zip(names, self._run(self.full, names, feed)))
        values.update(feed)  # a conv reading the model's input directly
        maps: dict[str, torch.Tensor] = {}  # one tensor object per ONNX tensor: layers reading it are aliases
        for layer, tensor in self.runner.layers:
            if tensor not in maps:
                maps[tensor] = torch.from_numpy(np.ascontiguousarray(values[tensor][:n])).float()
            sink(layer, maps[tensor])
        return [torch.from_numpy(np.ascontiguousarray(values[o][:n])).float() for o in self.outputs
                if np.issubdtype(values[o].dtype, np.floating)]

    def run(self, batch: torch.Tensor, edits: dict[str, Edit], key: int | None = None) -> list[torch.Tensor]:
        """The outputs with the feature maps of ``edits`` replaced; ``key`` names the batch for the prefix cache."""
        n = len(batch)
        tensors = {self.sites[name]: edit for name, edit in edits.items()}
        probe = frozenset(tensors)
        plan = self.plans.get(probe)
        if plan is None:
            plan = self.plans[probe] = _Plan(self, list(tensors))
        x = self._feed(batch)
        values: dict[str, np.ndarray] = {self.inputs[0]: x}
        cached = self.cache.get((probe, key)) if key is not None else None
        if cached is None:
            cached = dict(zip(plan.prefix, self._run(self.full, plan.prefix, values))) if plan.prefix else {}
            size = sum(v.nbytes for v in cached.values())
            if key is not None and self.cached + size <= self.cache_bytes:
                self.cache[(probe, key)] = cached
                self.cached += size
        values.update(cached)
        for tensor, session, _feeds in plan.steps:
            value = values[tensor] if session is None else self._run(session, [tensor], values)[0]
            edited = tensors[tensor](torch.from_numpy(np.ascontiguousarray(value)))
            values[tensor + SUFFIX] = edited.numpy().astype(value.dtype, copy=False)
        out = dict(zip(plan.reached, self._run(plan.final, plan.reached, values))) if plan.final else {}
        result = []
        for o in self.outputs:
            v = out[o] if o in out else values[o]
            if np.issubdtype(v.dtype, np.floating):
                result.append(torch.from_numpy(np.ascontiguousarray(v[:n])).float())
        return result

    def forget(self) -> None:
        """Drop the cached prefixes and the cut graphs' sessions (between probes: memory stays that of one)."""
        self.cache.clear()
        self.cached = 0
        self.plans.clear()
