"""A Keras model config (``config.json`` of a ``.keras`` file, ``model_config`` of an ``.h5``) as data:
its layers in order, flattened through nested models, with each layer's input shape.

Only JSON is read: a ``Lambda`` layer's code, a custom object's module, a ``TFOpLambda``'s function are names
in the config, never imported or run. Input shapes come, in order of preference, from what the file states for
the layer (Keras 3: ``build_config.input_shape``, or the shapes of the tensors in its ``inbound_nodes``), else
from the model's input shape carried through the layers by :func:`output_shape` (Keras' own shape rules for
convolutions, pooling, up-sampling, padding, cropping and shape-preserving layers). Where a layer of another
kind stands in the way, the shapes after it are unknown (None) and those convs get the default grid.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .._statedict import MAX_DECLARED

CONTAINERS = {"Functional", "Model", "Sequential"}
SAME_SHAPE = {
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU", "BatchNormalization",
    "LayerNormalization", "GroupNormalization", "UnitNormalization", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Rescaling",
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "ActivityRegularization", "Identity",
    "Masking",
}


@dataclass
class KerasLayer:
    """One layer of the config: class, name, its own config, where its weights live, its input shape."""

    cls: str
    name: str
    config: dict
    path: tuple[str, ...]  # names of the enclosing models, outermost first, and the layer's own
    store: tuple[str, ...] = ()  # where Keras 3 keeps its variables: class names in snake case, numbered
    inbound: list[str] = field(default_factory=list)  # names of the layers feeding its first call
    input_shape: tuple | None = None
    shape_source: str = ""


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _shape(value: Any) -> tuple | None:
    if isinstance(value, list) and value and all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in value):
        return tuple(value)
    return None


def _static(shape: tuple | None) -> bool:
    """A stated shape whose axes (the batch aside) are all known, from 1 to 2^20."""
    return shape is not None and len(shape) >= 3 and all(_count(v) for v in shape[1:])


def _history_shapes(node: Any) -> tuple[list[str], list[tuple | None]]:
    """Names and shapes of the tensors a call reads (Keras 2 lists or Keras 3 ``__keras_tensor__`` dicts)."""
    names, shapes = [], []

    def visit(obj: Any) -> None:
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                cfg = _dict(obj.get("config"))
                history = cfg.get("keras_history")
                if isinstance(history, list) and history and isinstance(history[0], str):
                    names.append(history[0])
                    shapes.append(_shape(cfg.get("shape")))
                return
            for v in obj.values():
                visit(v)
        elif isinstance(obj, list):
            if len(obj) >= 3 and isinstance(obj[0], str) and all(isinstance(v, int) for v in obj[1:3]):
                names.append(obj[0])
                shapes.append(None)
                return
            for v in obj:
                visit(v)

    visit(node)
    return names, shapes


def snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: ``Conv2DTranspose`` -> ``conv2d_transpose``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def flatten(model: Any, path: tuple[str, ...] = (), depth: int = 0, store: tuple[str, ...] = ()) -> list[KerasLayer]:
    """Every layer of a model config in order, nested models replaced by their layers.

    Besides its name path, each layer gets the path under which Keras 3 (and tf.keras 2.13+) stores its
    variables: not the layer's name but its class in snake case, numbered per class within its model
    (``conv2d``, ``conv2d_1``, ...), in the model's layer order."""
    if depth > 16 or not isinstance(model, dict):
        return []
    used: dict[str, int] = {}
    cfg = model.get("config")
    layers = cfg if isinstance(cfg, list) else _dict(cfg).get("layers", [])
    out: list[KerasLayer] = []
    sequential = model.get("class_name") == "Sequential"
    seq_shape = _shape(_dict(cfg).get("build_input_shape")) if sequential else None
    for item in layers if isinstance(layers, list) else []:
        if not isinstance(item, dict):
            continue
        cls, conf = str(item.get("class_name", "")), _dict(item.get("config"))
        name = str(conf.get("name") or item.get("name") or f"layer_{len(out)}")
        key = snake_case(cls)
        used[key] = used.get(key, -1) + 1
        key = f"{key}_{used[key]}" if used[key] else key
        if cls in CONTAINERS:
            out += flatten(item, path + (name,), depth + 1, store + (key,))
            continue
        layer = KerasLayer(cls=cls, name=name, config=conf, path=path + (name,), store=store + (key,))
        nodes = item.get("inbound_nodes")
        if isinstance(nodes, list) and nodes:
            layer.inbound, shapes = _history_shapes(nodes[0])
            if len(shapes) == 1 and _static(shapes[0]):
                layer.input_shape, layer.shape_source = shapes[0], "config"
        build = _shape(_dict(item.get("build_config")).get("input_shape"))
        if _static(build):
            layer.input_shape, layer.shape_source = build, "config"
        if sequential and out and not layer.inbound:
            layer.inbound = [out[-1].name]
        if sequential and not out and layer.input_shape is None:
            first = _shape(conf.get("batch_input_shape") or conf.get("batch_shape")) or seq_shape
            if first is not None and cls != "InputLayer":
                layer.input_shape, layer.shape_source = first, "config"
        out.append(layer)
    return out


def propagate(layers: list[KerasLayer]) -> None:
    """Fill each layer's missing input shape from its inbound layers' output shapes (in place)."""
    outputs: dict[str, tuple | None] = {}
    for layer in layers:
        ins = [outputs.get(n) for n in layer.inbound]
        if layer.input_shape is None and ins and ins[0] is not None:
            layer.input_shape, layer.shape_source = ins[0], "propagated"
        if not ins or any(s is None for s in ins):
            ins = [layer.input_shape]
        if layer.cls == "InputLayer":
            outputs[layer.name] = _shape(layer.config.get("batch_input_shape") or layer.config.get("batch_shape"))
        else:
            outputs[layer.name] = output_shape(layer.cls, layer.config, ins)


def _count(v: Any, low: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= MAX_DECLARED


def _tuple(value: Any, d: int, default: int) -> tuple[int, ...] | None:
    """A kernel size, stride, dilation, pool or up-sampling factor: ``d`` integers from 1 to 2^20."""
    if value is None:
        return (default,) * d
    if _count(value):
        return (value,) * d
    if isinstance(value, list) and len(value) == d and all(_count(v) for v in value):
        return tuple(value)
    return None


def rank_of(cls: str) -> int | None:
    for d in (1, 2, 3):
        if cls.endswith(f"{d}D") or cls.endswith(f"{d}DTranspose"):
            return d
    return None


def _spatial_axes(shape: tuple, config: dict) -> list[int]:
    first = config.get("data_format") == "channels_first"
    return list(range(2, len(shape))) if first else list(range(1, len(shape) - 1))


def _channel_axis(shape: tuple, config: dict) -> int:
    return 1 if config.get("data_format") == "channels_first" else len(shape) - 1


def conv_output(n: int, k: int, s: int, r: int, padding: str) -> int:
    extent = r * (k - 1) + 1
    if padding in ("same", "causal"):
        return math.ceil(n / s)
    return (n - extent) // s + 1


def output_shape(cls: str, config: dict, ins: list) -> tuple | None:
    """A layer's output shape from its input shapes, for the kinds whose rule is known; else None."""
    shape = ins[0]
    if shape is None:
        return None
    if cls in SAME_SHAPE:
        return shape
    if cls == "Concatenate":
        axis = config.get("axis", -1)
        if not isinstance(axis, int) or any(s is None or len(s) != len(shape) for s in ins):
            return None
        axis %= len(shape)
        total = sum(s[axis] for s in ins) if all(s[axis] is not None for s in ins) else None
        return tuple(total if i == axis else v for i, v in enumerate(shape))
    d = rank_of(cls)
    if d is None or len(shape) != d + 2:
        return None
    axes, ch = _spatial_axes(shape, config), _channel_axis(shape, config)
    out = list(shape)
    sizes = [shape[a] for a in axes]
    padding = str(config.get("padding", "valid")).lower()
    base = cls.replace(f"{d}DTranspose", "").replace(f"{d}D", "")
    if base in ("Conv", "SeparableConv", "DepthwiseConv", "Convolution") and not cls.endswith("Transpose"):
        k, s, r = (_tuple(config.get(key), d, 1) for key in ("kernel_size", "strides", "dilation_rate"))
        if None in (k, s, r) or None in sizes:
            return None
        for i, a in enumerate(axes):
            out[a] = conv_output(sizes[i], k[i], s[i], r[i], padding)
        if base == "DepthwiseConv":
            mult = config.get("depth_multiplier", 1)
            out[ch] = shape[ch] * mult if isinstance(shape[ch], int) and isinstance(mult, int) else None
        else:
            out[ch] = config.get("filters")
        return tuple(out)
    if cls.endswith("Transpose"):
        k, s, r = (_tuple(config.get(key), d, 1) for key in ("kernel_size", "strides", "dilation_rate"))
        extra = config.get("output_padding")
        if None in (k, s, r) or None in sizes or extra is not None:
            return None
        for i, a in enumerate(axes):
            extent = r[i] * (k[i] - 1) + 1
            out[a] = sizes[i] * s[i] if padding == "same" else sizes[i] * s[i] + max(extent - s[i], 0)
        out[ch] = config.get("filters")
        return tuple(out)
    if base in ("MaxPooling", "AveragePooling", "MaxPool", "AvgPool", "AveragePool"):
        p = _tuple(config.get("pool_size"), d, 2)
        s = _tuple(config.get("strides") if config.get("strides") is not None else config.get("pool_size"), d, 2)
        if None in (p, s) or None in sizes:
            return None
        for i, a in enumerate(axes):
            out[a] = conv_output(sizes[i], p[i], s[i], 1, padding)
        return tuple(out)
    if base == "UpSampling":
        f = _tuple(config.get("size"), d, 2)
        if f is None or None in sizes:
            return None
        for i, a in enumerate(axes):
            out[a] = sizes[i] * f[i]
        return tuple(out)
    if base in ("ZeroPadding", "Cropping"):
        amount = config.get("padding" if base == "ZeroPadding" else "cropping")
        pairs = _pairs(amount, d)
        if pairs is None or None in sizes:
            return None
        sign = 1 if base == "ZeroPadding" else -1
        for i, a in enumerate(axes):
            out[a] = sizes[i] + sign * sum(pairs[i])
        return tuple(out)
    return None


def _pairs(value: Any, d: int) -> list[tuple[int, int]] | None:
    """Padding or cropping amounts: (before, after) per spatial axis, integers from 0 to 2^20."""
    if _count(value, 0):
        return [(value, value)] * d
    if isinstance(value, list) and len(value) == d:
        out = []
        for v in value:
            if _count(v, 0):
                out.append((v, v))
            elif isinstance(v, list) and len(v) == 2 and all(_count(x, 0) for x in v):
                out.append((v[0], v[1]))
            else:
                return None
        return out
    if d == 1 and isinstance(value, list) and len(value) == 2 and all(_count(x, 0) for x in value):
        return [(value[0], value[1])]
    return None
