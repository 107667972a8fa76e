"""From named tensors (any format) to conv layer records: recognition, BatchNorm pairing, order, metadata.

Rules for what counts as a conv weight (documented in the README, "What is analysed"):

1. the tensor's name ends in ``weight`` (its last dotted component), so optimiser moments, embeddings and
   buffers are never mistaken for kernels;
2. it has 3, 4 or 5 axes (Conv1d, Conv2d, Conv3d layouts) and no empty axis;
3. it is a floating-point tensor (integer and quantised weights are listed as skipped).

Rank-3 to rank-5 tensors that fail a rule are listed as skipped with the reason. Without metadata or an
architecture, a layer is read as a plain conv: ``groups=1``, stride 1, padding unknown, and the report says
these were assumed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .._parse import MAX_DECLARED, parse_grid  # noqa: F401  (re-exported)
from ..records import BatchNormParams, ConvLayer, LoadedModel, SourceInfo, WeightSource

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64", "float8_e4m3fn", "float8_e5m2"}
META_LAYERS = "cbn_inspect.layers"
META_ORDER = "cbn_inspect.order"
META_GRID = "cbn_inspect.grid"
PADDING_MODES = ("circular", "zeros", "reflect", "replicate", "unknown")


@dataclass(frozen=True)
class TensorEntry:
    """A named tensor known by its shape and dtype; its data is read only through ``source``."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    source: WeightSource


def natural_key(name: str) -> list[Any]:
    """Sort key that puts ``layer10`` after ``layer9``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _is_float(dtype: str) -> bool:
    return dtype.replace("torch.", "") in FLOAT_DTYPES


def _skip_reason(entry: TensorEntry) -> str | None:
    if entry.name.split(".")[-1] != "weight":
        return "name does not end in 'weight'"
    if not _is_float(entry.dtype):
        return f"dtype {entry.dtype} is not floating point (quantised or integer weights are not analysed)"
    if min(entry.shape) < 1:
        return "empty tensor"
    return None


def _batchnorm_candidates(prefix: str) -> list[str]:
    head, _, last = prefix.rpartition(".")
    join = (head + ".") if head else ""
    out = []
    if last in ("conv", "conv_layer"):
        out += [join + "bn", join + "norm", join + "batchnorm"]
    match = re.fullmatch(r"conv(_?)(\w*)", last)
    if match:
        out += [f"{join}bn{match.group(1)}{match.group(2)}", f"{join}norm{match.group(1)}{match.group(2)}"]
    if last.isdigit():
        out.append(f"{join}{int(last) + 1}")
    out += [f"{prefix}_bn", f"{prefix}_BN", f"{prefix}_norm"]  # conv1 -> conv1_BN (torchcrepe, many ports)
    return out


def _pair_batchnorm(prefix: str, out_channels: int, entries: Mapping[str, TensorEntry], used: set[str]):
    for cand in _batchnorm_candidates(prefix):
        var = entries.get(f"{cand}.running_var")
        if cand in used or var is None or var.shape != (out_channels,):
            continue
        gamma = entries.get(f"{cand}.weight")
        if gamma is not None and gamma.shape != (out_channels,):
            continue
        used.add(cand)
        return BatchNormParams(
            name=cand, weight=gamma.source.load() if gamma else None, running_var=var.source.load()
        )
    return None


def _layer_metadata(metadata: Mapping[str, str], warnings: list[str]) -> tuple[dict, list | None, tuple | None]:
    layers, order, grid = {}, None, None
    try:
        if META_LAYERS in metadata:
            layers = json.loads(metadata[META_LAYERS])
            if not isinstance(layers, dict):
                raise ValueError("not an object")
        if META_ORDER in metadata:
            order = json.loads(metadata[META_ORDER])
            if not isinstance(order, list):
                raise ValueError("not a list")
        if META_GRID in metadata:
            grid = parse_grid(metadata[META_GRID])
    except (ValueError, TypeError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        warnings.append(f"ignored malformed cbn_inspect metadata: {str(exc)[:120]}")
        return {}, None, None
    return layers, order, grid


def _geometry_from_metadata(spec: Mapping[str, Any], ndim: int) -> dict[str, Any]:
    def count(key: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) <= 9:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DECLARED:
            raise ValueError(f"{key} must hold integers from 1 to {MAX_DECLARED}, got {value!r}")
        return value

    def axes(key: str) -> tuple[int, ...] | None:
        value = spec.get(key)
        if value is None:
            return None
        value = [value] if not isinstance(value, (list, tuple)) else list(value)
        if len(value) not in (1, ndim):
            raise ValueError(f"{key} needs 1 or {ndim} values, got {len(value)}")
        return tuple(count(key, v) for v in (value * ndim if len(value) == 1 else value))

    padding = spec.get("padding_mode", "unknown")
    transposed = spec.get("transposed", False)
    if not isinstance(transposed, bool):
        raise ValueError(f"transposed must be true or false, got {transposed!r}")
    return {
        "grid": axes("grid"),
        "stride": axes("stride"),
        "dilation": axes("dilation"),
        "groups": count("groups", spec.get("groups", 1)),
        "transposed": transposed,
        "padding_mode": padding if padding in PADDING_MODES else "unknown",
    }


def build_model(
    entries: Mapping[str, TensorEntry],
    source: SourceInfo,
    *,
    fold_batchnorm: bool = True,
    order: str = "natural",
) -> LoadedModel:
    """Recognise conv weights among ``entries`` and make the layer records, in data-flow order if known.

    ``order`` says what the entries' own order is worth: ``file`` (a PyTorch state dict keeps the order in
    which modules were registered, nearly always the data flow), ``shapes`` (safetensors sorts its keys: the
    order is recovered as a chain of matching channel counts, see :mod:`._order`) or ``natural`` (a natural
    sort of names). Declared metadata order wins over all three.
    """
    from ._order import chain_from_shapes, file_order_confidence

    warnings = list(source.notes)
    meta_layers, meta_order, meta_grid = _layer_metadata(source.metadata, warnings)
    skipped: list[tuple[str, str]] = []
    used_bn: set[str] = set()
    layers: list[ConvLayer] = []
    names = list(entries) if order == "file" else sorted(entries, key=natural_key)
    for name in names:
        entry = entries[name]
        if len(entry.shape) not in (3, 4, 5):
            continue
        reason = _skip_reason(entry)
        if reason:
            skipped.append((name, reason))
            continue
        prefix = name[: -len(".weight")] if name.endswith(".weight") else name
        ndim = len(entry.shape) - 2
        fields: dict[str, Any] = {}
        spec = meta_layers.get(prefix)
        if isinstance(spec, Mapping):
            try:
                fields = _geometry_from_metadata(spec, ndim)
            except (TypeError, ValueError, OverflowError) as exc:
                warnings.append(f"ignored malformed metadata for layer {prefix}: {exc}")
        grid = fields.pop("grid", None) or (meta_grid if meta_grid and len(meta_grid) in (1, ndim) else None)
        if grid is not None and len(grid) == 1 and ndim > 1:
            grid = grid * ndim
        layer = ConvLayer(
            name=prefix,
            shape=tuple(entry.shape),
            dtype=entry.dtype.replace("torch.", ""),
            weight=entry.source,
            grid=grid,
            grid_source="metadata" if grid else "default",
            geometry_source="metadata" if fields else "assumed",
            **fields,
        )
        out_channels = layer.out_channels
        if fold_batchnorm:
            layer = _with_batchnorm(layer, entries, used_bn, out_channels)
        layers.append(layer)

    order_source, confidence = "natural-sort", "low"
    if order == "file":
        order_source, confidence = "file", file_order_confidence(layers)
    declared = False
    if meta_order:
        rank = {str(n): i for i, n in enumerate(meta_order)}
        if all(layer.name in rank for layer in layers):
            layers.sort(key=lambda layer: rank[layer.name])
            order_source, confidence, declared = "metadata", "high", True
        else:
            warnings.append("metadata order does not name every conv layer: using the "
                            + ("file's own order" if order == "file" else "order recovered below"))
    if order == "shapes" and not declared:
        layers, confidence, how = chain_from_shapes(layers)
        order_source = "shapes"
        warnings.append(f"layer order recovered from channel counts ({confidence} confidence): {how}")
    layers = [dataclasses.replace(layer, order=i) for i, layer in enumerate(layers)]
    source = dataclasses.replace(source, notes=tuple(warnings))
    return LoadedModel(source=source, layers=tuple(layers), skipped=tuple(skipped), order_source=order_source,
                       order_confidence=confidence)


def _with_batchnorm(layer: ConvLayer, entries, used: set[str], out_channels: int) -> ConvLayer:
    try:
        bn = _pair_batchnorm(layer.name, out_channels, entries, used)
    except Exception:  # a BN tensor that cannot be read: analyse the conv alone, and say so
        return dataclasses.replace(layer, notes=layer.notes + ("BatchNorm next to it could not be read",))
    return dataclasses.replace(layer, batchnorm=bn) if bn else layer
