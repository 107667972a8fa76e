"""Keras weights: ``.keras`` archives (a zip of ``config.json`` and ``model.weights.h5``) and legacy ``.h5``
files (a whole model with ``model_config``, or ``save_weights`` output), through ``h5py`` (the ``keras`` extra).

Conv layers are ``Conv1D/2D/3D``, ``DepthwiseConv1D/2D``, ``SeparableConv1D/2D`` (a depthwise and a pointwise
layer) and ``Conv2DTranspose``/``Conv3DTranspose``, named by the config's class names. Keras stores kernels
spatial-first, and the layout is declared by the class, never guessed from the shape:

=============================  ============================  ====================================
class                          Keras kernel                  records (PyTorch) layout
=============================  ============================  ====================================
ConvND                         (k..., in/groups, out)        (out, in/groups, k...)
ConvNDTranspose                (k..., out, in)               (in, out, k...), transposed
DepthwiseConvND                (k..., in, multiplier)        (in*multiplier, 1, k...), groups = in
SeparableConvND pointwise      (1..., in*multiplier, out)    (out, in*multiplier, 1...)
=============================  ============================  ====================================

Keras 3 (and tf.keras 2.13+) stores a layer's variables under its class name in snake case, numbered per
class in its model's layer order (``layers/conv2d_1/vars/0``), not under the layer's name; older ``.keras``
files used the name; both are looked up. Order is the config's layer order (Keras lists a functional model's layers in topological order); strides,
dilations, padding and groups come from each layer's config; grids from the input shapes the config states
or implies (:mod:`._keras_graph`). A ``BatchNormalization`` that reads a conv's output over its channel axis is
folded in. Without a config (a weights-only ``.h5``), a rank-3 to 5 ``kernel`` is read as a ConvND kernel
(its class is not stored; a layer named ``*transpose*`` is skipped) with geometry assumed. Nothing from the
file executes: the config is JSON, and ``Lambda`` or custom layers in it are names only.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import MissingExtraError, ResourceLimitError, UnreadableInputError
from ...records import BatchNormParams, ConvLayer, InMemoryWeight, LoadedModel, SourceInfo
from .._statedict import MAX_DECLARED
from ._hdf5 import Weights, read_contents
from ._keras_graph import KerasLayer, conv_output, flatten, propagate, rank_of

MAX_CONFIG_BYTES = 64 * 2**20
V3_VARS = {  # Keras 3 stores variables by number; their meaning per class
    "Conv": ("kernel", "bias"), "ConvTranspose": ("kernel", "bias"), "DepthwiseConv": ("depthwise_kernel", "bias"),
    "SeparableConv": ("depthwise_kernel", "pointwise_kernel", "bias"),
}


def _import_h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise MissingExtraError("reading Keras .keras/.h5 files needs the h5py package",
                                hint="pip install 'cbn-inspect[keras]'") from exc
    return h5py


def _limit(max_memory_mb: int | None) -> int:
    from .._policy import default_max_memory_mb

    return (max_memory_mb or default_max_memory_mb()) * 2**20


def read_keras_archive(path: Path, *, fold_batchnorm: bool, input_size: tuple[int, ...] | None = None,
                       max_memory_mb: int | None = None) -> LoadedModel:
    """A ``.keras`` zip: the config's layers with the weights of ``model.weights.h5``."""
    _import_h5py()
    limit = _limit(max_memory_mb)
    try:
        with zipfile.ZipFile(path) as archive:
            sizes = {i.filename: i.file_size for i in archive.infolist()}
            if sizes["config.json"] > MAX_CONFIG_BYTES:
                raise ResourceLimitError(f"{path}: config.json of {sizes['config.json']} bytes is too large")
            if sizes["model.weights.h5"] > limit:
                raise ResourceLimitError(f"{path}: model.weights.h5 of {sizes['model.weights.h5'] // 2**20} MB "
                                         f"is more than --max-memory {limit // 2**20} MB")
            config = json.loads(archive.read("config.json"))
            blob = archive.read("model.weights.h5")
            metadata = _zip_metadata(archive)
    except (zipfile.BadZipFile, zlib.error, OSError, KeyError, ValueError, UnicodeDecodeError, RuntimeError,
            EOFError, NotImplementedError) as exc:
        raise UnreadableInputError(f"{path}: a damaged .keras archive ({type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())[:120]})") from exc
    _, _, weights = read_contents(io.BytesIO(blob), limit, f"{path}: model.weights.h5", len(blob))
    return _build(path, "keras", config, weights, metadata, fold_batchnorm, input_size)


def read_h5(path: Path, *, fold_batchnorm: bool, input_size: tuple[int, ...] | None = None,
            max_memory_mb: int | None = None) -> LoadedModel:
    """A legacy Keras ``.h5``/``.hdf5`` (a whole model or ``save_weights`` output) or a Keras 3 ``.weights.h5``."""
    _import_h5py()
    limit = _limit(max_memory_mb)
    text, metadata, weights = read_contents(path, limit, str(path), path.stat().st_size)
    try:
        config = json.loads(text) if text is not None else None
    except ValueError as exc:
        raise UnreadableInputError(f"{path}: its model_config is not JSON ({' '.join(str(exc).split())[:80]})") from exc
    return _build(path, "keras-h5", config, weights, metadata, fold_batchnorm, input_size)


def _zip_metadata(archive: zipfile.ZipFile) -> dict[str, str]:
    try:
        if archive.getinfo("metadata.json").file_size > 2**20:
            return {}
        meta = json.loads(archive.read("metadata.json"))
    except (KeyError, ValueError, zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError,
            NotImplementedError):  # metadata is optional: a damaged member only loses it
        return {}
    return {k: str(meta[k])[:80] for k in ("keras_version", "date_saved") if isinstance(meta, dict) and k in meta}


def _base(cls: str) -> str | None:
    d = rank_of(cls)
    if d is None:
        return None
    base = cls.replace(f"{d}DTranspose", "Transpose").replace(f"{d}D", "")
    return {"Conv": "Conv", "Convolution": "Conv", "ConvTranspose": "ConvTranspose",
            "ConvolutionTranspose": "ConvTranspose", "DepthwiseConv": "DepthwiseConv",
            "SeparableConv": "SeparableConv", "SeparableConvolution": "SeparableConv"}.get(base)


def _vars_of(layer: KerasLayer, weights: Weights, base: str) -> dict[str, np.ndarray]:
    if layer.name in weights.by_name:
        return weights.by_name[layer.name]
    arrays = weights.by_path.get(layer.store)  # Keras 3: by class name; tf.keras 2.11/2.12: by layer name
    if arrays is None:
        arrays = weights.by_path.get(layer.path)
    if arrays is None:
        return {}
    if base == "BatchNormalization":
        names = [n for n, on in (("gamma", layer.config.get("scale", True)), ("beta", layer.config.get("center", True)))
                 if on] + ["moving_mean", "moving_variance"]
    else:
        names = list(V3_VARS.get(base, ()))
    return {n: a for n, a in zip(names, arrays) if a is not None}


def _grid(layer: KerasLayer, d: int) -> tuple[int, ...] | None:
    shape = layer.input_shape
    if shape is None or len(shape) != d + 2:
        return None
    spatial = shape[2:] if layer.config.get("data_format") == "channels_first" else shape[1:-1]
    return tuple(spatial) if all(isinstance(v, int) and 0 < v <= MAX_DECLARED for v in spatial) else None


def _ints(config: dict, key: str, d: int) -> tuple[int, ...] | None:
    value = config.get(key, 1)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * d
    if isinstance(value, list) and len(value) == d and all(isinstance(v, int) and 1 <= v <= 2**16 for v in value):
        return tuple(value)
    return None


def _records(layer: KerasLayer, base: str, kernels: dict[str, np.ndarray], order: int,
             assumed: bool) -> tuple[list[ConvLayer], str | None]:
    """The conv records of one Keras layer (two for a separable conv), or why it is skipped."""
    import torch

    kernel = kernels.get("depthwise_kernel" if base in ("DepthwiseConv", "SeparableConv") else "kernel")
    if kernel is None and base == "DepthwiseConv":
        kernel = kernels.get("kernel")
    if kernel is None:
        return [], "no kernel stored for this layer"
    d = kernel.ndim - 2
    if d not in (1, 2, 3) or min(kernel.shape) < 1:
        return [], f"kernel of shape {tuple(kernel.shape)} is not a 1-3 d conv kernel"
    config = layer.config
    stride, dilation = _ints(config, "strides", d), _ints(config, "dilation_rate", d)
    if stride is None or dilation is None:
        return [], f"strides {config.get('strides')!r:.40} or dilation_rate {config.get('dilation_rate')!r:.40} unreadable"
    padding = str(config.get("padding", "valid")).lower()
    grid = _grid(layer, d)
    notes = [f"Keras {layer.cls}, padding {padding}"]
    common = dict(dtype=str(kernel.dtype), padding_mode="zeros", grid=grid,
                  grid_source="metadata" if grid else "default",
                  geometry_source="assumed" if assumed else "metadata")
    perm = (d + 1, d, *range(d))
    name = "/".join(layer.path)
    if base in ("Conv", "ConvTranspose"):
        groups = config.get("groups", 1)
        if not isinstance(groups, int) or groups < 1:
            return [], f"groups {groups!r:.20} unreadable"
        w = torch.from_numpy(np.ascontiguousarray(kernel.transpose(perm)).astype(np.float32, copy=False))
        notes[0] += f", kernel layout {'(k..., out, in)' if base == 'ConvTranspose' else '(k..., in, out)'}"
        return [ConvLayer(name=name, shape=tuple(w.shape), weight=InMemoryWeight(w), order=order, groups=groups,
                          stride=stride, dilation=dilation, transposed=base == "ConvTranspose",
                          notes=tuple(notes), **common)], None
    c_in, mult = kernel.shape[d], kernel.shape[d + 1]
    dw = np.ascontiguousarray(kernel.transpose(d, d + 1, *range(d))).reshape(c_in * mult, 1, *kernel.shape[:d])
    dw_t = torch.from_numpy(dw.astype(np.float32, copy=False))
    out = [ConvLayer(name=name + ("/depthwise" if base == "SeparableConv" else ""), shape=tuple(dw_t.shape),
                     weight=InMemoryWeight(dw_t), order=order, groups=c_in, stride=stride, dilation=dilation,
                     notes=(notes[0] + ", depthwise kernel layout (k..., in, multiplier)",), **common)]
    if base == "SeparableConv":
        pw = kernels.get("pointwise_kernel")
        if pw is None or pw.ndim != d + 2 or pw.shape[d] != c_in * mult:
            return out, None
        pw_t = torch.from_numpy(np.ascontiguousarray(pw.transpose(perm)).astype(np.float32, copy=False))
        pgrid = None
        if grid is not None:
            k = kernel.shape[:d]
            pgrid = tuple(conv_output(n, k[i], stride[i], dilation[i], padding) for i, n in enumerate(grid))
            pgrid = pgrid if min(pgrid) > 0 else None
        common.update(grid=pgrid, grid_source="metadata" if pgrid else "default")
        out.append(ConvLayer(name=name + "/pointwise", shape=tuple(pw_t.shape), weight=InMemoryWeight(pw_t),
                             order=order + 1, stride=(1,) * d, dilation=(1,) * d,
                             notes=(f"Keras {layer.cls} pointwise kernel, layout (1..., in, out)",), **common))
    return out, None


def _batchnorm(layer: KerasLayer, weights: Weights, conv: ConvLayer) -> BatchNormParams | None:
    import torch

    arrays = _vars_of(layer, weights, "BatchNormalization")
    var = arrays.get("moving_variance")
    axis = layer.config.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    channel_axis = {-1, conv.ndim + 1} if layer.config.get("data_format") != "channels_first" else {1}
    if var is None or var.shape != (conv.out_channels,) or axis not in channel_axis | {-1}:
        return None
    gamma = arrays.get("gamma")
    eps = layer.config.get("epsilon", 1e-3)
    return BatchNormParams(name="/".join(layer.path), weight=None if gamma is None else torch.from_numpy(gamma.astype(np.float32)),
                           running_var=torch.from_numpy(var.astype(np.float32)),
                           eps=float(eps) if isinstance(eps, (int, float)) else 1e-3)


def _without_config(weights: Weights) -> list[KerasLayer]:
    """Layers of a weights-only file: legacy groups in order, each with the vars it stores."""
    layers = []
    for name in weights.order:
        kernels = weights.by_name.get(name, {})
        if "depthwise_kernel" in kernels:
            cls = "SeparableConv" if "pointwise_kernel" in kernels else "DepthwiseConv"
        elif "kernel" in kernels and kernels["kernel"].ndim in (3, 4, 5):
            cls = "Conv"
        else:
            continue
        d = next(iter(kernels.values())).ndim - 2
        layers.append(KerasLayer(cls=f"{cls}{d}D", name=name, config={}, path=(name,)))
    return layers


def _build(path: Path, fmt: str, config: Any, weights: Weights, metadata: dict[str, str], fold_batchnorm: bool,
           input_size: tuple[int, ...] | None) -> LoadedModel:
    notes: list[str] = []
    assumed = not isinstance(config, dict)
    if assumed:
        layers = _without_config(weights)
        notes.append("no model config in the file: layer classes from the weight names (a rank-3 to 5 kernel "
                     "read as a ConvND kernel), geometry assumed (stride 1), default grids")
        if not weights.order and weights.by_path:
            notes.append("a Keras 3 weights file without its config: the layers' classes are not stored")
    else:
        layers = flatten(config)
        if input_size is not None:
            _apply_input_size(layers, input_size)
            notes.append(f"model input's spatial size set to {'x'.join(map(str, input_size))} (--input-size)")
        propagate(layers)
        notes.append("a Keras model: geometry from the layer configs, order from the config's layer order")
    records: list[ConvLayer] = []
    skipped: list[tuple[str, str]] = []
    last: dict[str, int] = {}  # Keras layer name -> index of its last record (for BatchNorm folding)
    for layer in layers:
        base = _base(layer.cls)
        if layer.cls == "BatchNormalization" and fold_batchnorm and layer.inbound and layer.inbound[0] in last:
            index = last.pop(layer.inbound[0])
            bn = _batchnorm(layer, weights, records[index])
            if bn is not None and records[index].batchnorm is None:
                records[index] = dataclasses.replace(records[index], batchnorm=bn)
            continue
        if base is None:
            continue
        name = "/".join(layer.path)
        if assumed and "transpose" in layer.name.lower():
            skipped.append((name, "no model config: Conv or ConvTranspose cannot be told apart"))
            continue
        made, why = _records(layer, base, _vars_of(layer, weights, base), len(records), assumed)
        if why:
            skipped.append((name, why))
            continue
        if made and made[0].grid is None and not assumed:
            made = [_note_grid(m) for m in made]
        records += made
        if made:
            last[layer.name] = len(records) - 1
    missing = sum(r.grid is None for r in records)
    if missing and not assumed:
        notes.append(f"{missing} layer(s) without an input shape in or implied by the config: default grid"
                     + ("" if input_size else "; pass --input-size for a model with dynamic spatial input axes"))
    if assumed and layers:
        order_source = "file"
    else:
        order_source = "graph"
    info = SourceInfo(path=str(path), format=fmt, metadata=metadata, notes=tuple(notes))
    return LoadedModel(source=info, layers=tuple(records), skipped=tuple(skipped), order_source=order_source,
                       order_confidence="medium" if assumed else "high")


def _note_grid(layer: ConvLayer) -> ConvLayer:
    return dataclasses.replace(layer, notes=layer.notes + ("input shape not stated or implied by the config",))


def _apply_input_size(layers: list[KerasLayer], size: tuple[int, ...]) -> None:
    """Give every model input (and first layer) of dynamic spatial size the ``--input-size`` spatial size."""
    for layer in layers:
        if layer.cls != "InputLayer" and layer.inbound:
            continue
        key = "batch_input_shape" if "batch_input_shape" in layer.config else "batch_shape"
        shape = layer.config.get(key)
        if not isinstance(shape, list) or len(shape) < 3:
            continue
        spatial = size[-(len(shape) - 2):] if len(size) >= len(shape) - 2 else size * (len(shape) - 2)
        if len(spatial) != len(shape) - 2:
            continue
        first = layer.config.get("data_format") == "channels_first"
        new = [shape[0], shape[1], *spatial] if first else [shape[0], *spatial, shape[-1]]
        layer.config = {**layer.config, key: new}
        if layer.cls != "InputLayer":
            layer.input_shape, layer.shape_source = tuple(new), "flag"
