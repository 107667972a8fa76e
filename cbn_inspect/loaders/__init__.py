"""Loaders: turn a source into a :class:`LoadedModel` through one front door, :func:`load`.

Sources: a checkpoint file (safetensors, sharded safetensors, PyTorch zip or legacy pickle, TorchScript,
ONNX, TFLite, Keras ``.keras``/``.h5``), a folder (a ``config.json`` naming a timm architecture next to ``model.safetensors`` or
``pytorch_model.bin``), or ``timm:NAME``. The format is recognised from the file's first bytes, not its
name, by the one table of formats in :mod:`._formats` (sniff -> reader -> architecture binding). A
TensorFlow SavedModel or Core ML source is recognised and refused with the conversion route
(:mod:`.tensorflow`). Where an architecture is available (timm, a whole trusted module, a TorchScript program) grids,
geometry and order come from a trace; a bare state dict is matched against timm's registry
(:mod:`._identify`); otherwise layers get the documented default grid, and the report says so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UnreadableInputError, UsageError
from ..records import LoadedModel
from . import tensorflow
from ._formats import FORMATS, Options, format_of
from ._statedict import META_LAYERS, TensorEntry, build_model, natural_key, parse_grid
from .pytorch._trace import parse_input_size

__all__ = ["FORMATS", "TensorEntry", "build_model", "detect_format", "load", "natural_key", "parse_grid",
           "parse_input_size"]

# Files looked for, in this order, when the source is a folder.
FOLDER_CHECKPOINTS = (
    "model.safetensors.index.json", "model.safetensors", "pytorch_model.bin",
)
TIMM_PREFIX = "timm:"


def detect_format(path: Path) -> str:
    """The name of the file's format in :data:`._formats.FORMATS` (``safetensors``, ``pytorch-zip``, ``onnx``,
    ``tflite``, ...), from its first bytes (and, for the protobufs that look alike, its name)."""
    return format_of(path).name


def _resolve_path(source: str | Path) -> Path:
    path = Path(source)
    if not path.exists():
        raise UnreadableInputError(f"{path}: no such file")
    if path.is_dir():
        foreign = tensorflow.foreign_folder_kind(path)
        if foreign:
            tensorflow.refuse(path, foreign)
        for name in FOLDER_CHECKPOINTS:
            if (path / name).is_file():
                return path / name
        raise UnreadableInputError(
            f"{path}: is a folder without a checkpoint ({', '.join(FOLDER_CHECKPOINTS)}); point at a file"
        )
    if not path.is_file():
        raise UnreadableInputError(f"{path}: not a regular file")
    return path


def load(
    source: str | Path,
    *,
    trust_code: bool = False,
    trust_pickle: bool = False,
    key: str | None = None,
    fold_batchnorm: bool = True,
    arch: str | None = None,
    input_size: str | tuple[int, ...] | None = None,
    identify: bool = True,
    max_memory_mb: int | None = None,
    onnx_branch: str = "then",
) -> LoadedModel:
    """Read a source's conv layers without computing spectra. Weights stay lazy where the format allows.

    ``arch`` (``timm:NAME``) analyses a file's weights in that architecture's geometry; ``input_size``
    (``N``, ``HxW`` or ``CxHxW``) overrides the input size traced; ``identify=False`` skips matching a bare
    state dict against timm's registry; ``onnx_branch`` (``then``/``else``) picks the body of every ONNX
    ``If`` node that is analysed (the two are alternatives). ``max_memory_mb`` bounds what a file may declare (storages,
    tensor views) before anything is allocated (default: :func:`._policy.default_max_memory_mb`).
    What may execute is decided in :mod:`._policy`: nothing from the file without ``trust_code``.
    """
    trust_code = trust_code or trust_pickle  # the older name, kept as an alias
    size = parse_input_size(input_size)
    text = str(source)
    if text.startswith(TIMM_PREFIX) and not Path(text).exists():
        if arch:
            raise UsageError("--arch applies to a checkpoint file; the source already names the architecture")
        from ._timm import load_timm

        return load_timm(text, size=size, fold_batchnorm=fold_batchnorm)
    path = _resolve_path(source)
    config = None
    if Path(source).is_dir():
        from ._timm import read_config

        config = read_config(Path(source))
    try:
        fmt = format_of(path)
    except OSError as exc:
        raise UnreadableInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if fmt.binding == "own" and arch:
        raise UsageError(f"--arch does not apply to {fmt.name}: the file holds its own architecture")
    options = Options(trust_code=trust_code, key=key, fold_batchnorm=fold_batchnorm, arch=arch, size=size,
                      max_memory_mb=max_memory_mb, onnx_branch=onnx_branch)
    result = fmt.read(path, options)
    if isinstance(result, LoadedModel):
        return result
    entries, info = result
    return _with_architecture(entries, info, arch, config, size, fold_batchnorm, identify, source)


def _with_architecture(entries, info, arch, config, size, fold_batchnorm, identify, source) -> LoadedModel:
    """A state dict's layers: in a given, configured or identified timm architecture, else as stored."""
    from ._timm import load_with_arch

    if arch:
        return load_with_arch(entries, info, arch, size=size, fold_batchnorm=fold_batchnorm)
    if config is not None:
        name, kwargs, cfg_size = config
        return load_with_arch(entries, info, name, size=size or cfg_size, fold_batchnorm=fold_batchnorm,
                              how="named by config.json", model_kwargs=kwargs, architecture_source="config")
    if identify and META_LAYERS not in info.metadata and any(len(e.shape) in (3, 4, 5) for e in entries.values()):
        from ._identify import identify as identify_arch

        shapes = {k: tuple(e.shape) for k, e in entries.items()}
        found = identify_arch(shapes, hints=[str(source), Path(str(source)).resolve().parent.name])
        if found.arch:
            note = f"identified as timm:{found.arch}: {found.reason}"
            if found.others:
                note += f"; also matches {', '.join(found.others[:3])} (same geometry)"
            loaded = load_with_arch(entries, info, found.arch, size=size, fold_batchnorm=fold_batchnorm,
                                    how="identified from the state dict's keys and shapes",
                                    architecture_source="identified")
            return _note(loaded, note)
        if size is not None:
            raise UsageError("--input-size needs an architecture (--arch timm:NAME) for a bare state dict",
                             hint=f"no timm architecture identified: {found.reason}")
        info = dataclasses.replace(info, notes=info.notes + (f"architecture not identified: {found.reason}",))
    elif size is not None:
        raise UsageError("--input-size needs an architecture: pass --arch timm:NAME for a bare state dict")
    order = "file" if info.format == "pytorch" else "shapes" if info.format.startswith("safetensors") else "natural"
    return build_model(entries, info, fold_batchnorm=fold_batchnorm, order=order)


def _note(loaded: LoadedModel, note: str) -> LoadedModel:
    source = dataclasses.replace(loaded.source, notes=(note, *loaded.source.notes))
    return dataclasses.replace(loaded, source=source)
