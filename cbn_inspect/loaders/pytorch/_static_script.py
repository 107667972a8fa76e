"""A TorchScript archive's conv layers without running it: tensors, names, geometry and order, as data.

Tensors come from :mod:`._script_archive` (restricted unpickler, bounded records), named by their attribute
path (``layer1.0.conv1.weight``, as ``state_dict()`` names them); the layers are made by the shared
:func:`build_model` (recognition rules, BatchNorm pairing by name), then given the geometry the code files
declare (:mod:`._script_code`) and the static order of ``forward``'s calls. What the code does not state
stays assumed and the notes say so; grids are never known without running the program.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ...records import LoadedModel, SourceInfo
from .._policy import default_max_memory_mb
from ._script_archive import ArchiveWeight, ScriptObject, read_archive, tensors_of
from ._script_code import parse_classes, call_order
from .._statedict import PADDING_MODES, TensorEntry, build_model, natural_key


def _class_of(obj: Any) -> str:
    return getattr(type(obj), "qualname", "?")


def _declared(owner: Any, attr: str, classes) -> bool:
    """Whether a tensor attribute is a parameter or buffer (what ``state_dict()`` holds), where code says."""
    info = classes.get(_class_of(owner)) if isinstance(owner, ScriptObject) else None
    if not isinstance(owner, ScriptObject) or not isinstance(owner.state, dict):
        return True  # a tensor inside a custom __getstate__'s state, or in plain data: listed, by position
    if info is None or (info.parameters is None and info.buffers is None):
        return True
    return attr in (info.parameters or []) or attr in (info.buffers or [])


def _geometry(module: Any, attr: str, classes, ndim: int) -> dict[str, Any] | None:
    """Stride, dilation, groups, transposed, padding mode of the conv using ``module.attr``, from its code."""
    info = classes.get(_class_of(module))
    if info is None:
        return None
    found = dict(info.convs.get(attr, {}))
    finals = info.finals
    if attr == "weight":  # a torch.nn conv module: its constants are the truth where present
        for key in ("stride", "dilation"):
            value = finals.get(key)
            if isinstance(value, (tuple, list)) and len(value) == ndim and all(isinstance(v, int) and v >= 1 for v in value):
                found[key] = tuple(value)
        if isinstance(finals.get("groups"), int) and finals["groups"] >= 1:
            found["groups"] = finals["groups"]
        if finals.get("padding_mode") in PADDING_MODES:
            found["padding_mode"] = finals["padding_mode"]
        transposed = module.attributes.get("transposed")
        if isinstance(transposed, bool):
            found["transposed"] = transposed
    if not found:
        return None
    for key in ("stride", "dilation"):
        if key in found and len(found[key]) != ndim:
            found[key] = found[key] * ndim if len(found[key]) == 1 else None
            if found[key] is None:
                del found[key]
    return found


def read_static(path: Path, *, fold_batchnorm: bool, max_memory_mb: int | None = None) -> LoadedModel:
    """Read a TorchScript archive's conv layers without executing any of it."""
    budget = (max_memory_mb or default_max_memory_mb()) * 2**20
    archive = read_archive(path, budget)
    classes = parse_classes(archive.code)
    tensors, modules = tensors_of(archive)
    entries: dict[str, TensorEntry] = {}
    owners: dict[str, Any] = {}
    for name, (ref, owner) in tensors.items():
        if not _declared(owner, name.rsplit(".", 1)[-1], classes):
            continue
        member = f"{archive.prefix}data/{ref.storage.key}"
        dtype = f"q{ref.dtype}" if ref.quantized and not ref.dtype.startswith("q") else ref.dtype
        entries[name] = TensorEntry(name, ref.shape, dtype,
                                    ArchiveWeight(str(path), member, ref, archive.byteorder))
        owners[name] = owner
    notes = ["a TorchScript program, read as data (its code was not run): weights and names from data.pkl, "
             "geometry from its code's constants; grids unknown (run it with --trust-code --input-size to trace)"]
    info = SourceInfo(path=str(path), format="torchscript", notes=tuple(notes))
    loaded = build_model(entries, info, fold_batchnorm=fold_batchnorm)

    layers, declared = [], 0
    for layer in loaded.layers:
        weight_name = next((n for n in (f"{layer.name}.weight", layer.name) if n in entries), None)
        owner = owners.get(weight_name)
        attr = weight_name.rsplit(".", 1)[-1] if weight_name else ""
        geometry = _geometry(owner, attr, classes, layer.ndim) if isinstance(owner, ScriptObject) else None
        if geometry:
            declared += 1
            fields = {k: v for k, v in geometry.items()
                      if k in ("stride", "dilation", "groups", "transposed", "padding_mode")}
            layer = dataclasses.replace(layer, geometry_source="metadata", **fields)
        layers.append(layer)
    module_rank = _static_rank(archive.root, classes, modules)
    order_source = loaded.order_source
    rank = {}
    for layer in layers:
        prefix = layer.name.rsplit(".", 1)[0] if "." in layer.name else ""
        if prefix in module_rank:
            rank[layer.name] = module_rank[prefix]
    extra = []
    if layers and len(rank) == len(layers):
        layers.sort(key=lambda layer: (rank[layer.name], natural_key(layer.name)))
        order_source = "metadata"
        extra.append("order: the static order of forward's calls in the code (branches as written)")
    elif layers:
        extra.append(f"order: natural sort of names ({len(layers) - len(rank)} conv(s) not reached by "
                     "reading forward's calls)")
    if archive.code_skipped:
        extra.append(f"{archive.code_skipped} code file(s) over the size bound were not parsed")
    if declared < len(layers):
        extra.append(f"{len(layers) - declared} conv(s) without geometry in the code: stride 1, groups 1 assumed")
    layers = [dataclasses.replace(layer, order=i) for i, layer in enumerate(layers)]
    source = dataclasses.replace(loaded.source, notes=loaded.source.notes + tuple(extra))
    return dataclasses.replace(loaded, source=source, layers=tuple(layers), order_source=order_source)


def _static_rank(root: Any, classes, modules: list[tuple[str, Any]]) -> dict[str, int]:
    """Module path -> position in forward's static call order (first visit)."""
    if not isinstance(root, ScriptObject):
        return {}
    path_of = {id(obj): name for name, obj in modules}
    try:
        visited = call_order(root, classes, _class_of)
    except RecursionError:
        return {}
    rank: dict[str, int] = {}
    for obj, prefix in visited:
        name = path_of.get(id(obj), prefix)
        rank.setdefault(name, len(rank))
    return rank
