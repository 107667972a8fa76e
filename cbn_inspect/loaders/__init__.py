"""Loaders: turn a source into a :class:`LoadedModel` through one front door, :func:`load`.

Sources: a checkpoint file (safetensors, sharded safetensors, PyTorch zip or legacy pickle, TorchScript,
ONNX), a folder (a ``config.json`` naming a timm architecture next to ``model.safetensors`` or
``pytorch_model.bin``), or ``timm:NAME``. The format is recognised from the file's first bytes, not its
name. Where an architecture is available (timm, a whole trusted module, a TorchScript program) grids,
geometry and order come from a trace; a bare state dict is matched against timm's registry
(:mod:`._identify`); otherwise layers get the documented default grid, and the report says so.
"""

from __future__ import annotations

import dataclasses
import struct
import zipfile
from pathlib import Path

from ..errors import UnreadableInputError, UsageError
from ..records import LoadedModel
from ._safetensors import read_safetensors, read_sharded
from ._statedict import META_LAYERS, TensorEntry, build_model, natural_key, parse_grid
from ._torchfile import entries_of, read_torch_object
from ._trace import parse_input_size

__all__ = ["TensorEntry", "build_model", "detect_format", "load", "natural_key", "parse_grid",
           "parse_input_size"]

# Files looked for, in this order, when the source is a folder.
FOLDER_CHECKPOINTS = (
    "model.safetensors.index.json", "model.safetensors", "pytorch_model.bin",
)
TIMM_PREFIX = "timm:"


def detect_format(path: Path) -> str:
    """``safetensors``, ``safetensors-index``, ``pytorch-zip`` or ``pytorch-pickle``, from the first bytes."""
    size = path.stat().st_size
    if size == 0:
        raise UnreadableInputError(f"{path}: empty file")
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        from ._torchscript import looks_like_torchscript

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, NotImplementedError, ValueError, EOFError,
                RuntimeError) as exc:  # zipfile's errors for corrupt archives (non-UTF-8 names included)
            raise UnreadableInputError(f"{path}: a damaged zip archive ({type(exc).__name__}: {exc})") from exc
        if len(set(names)) != len(names):  # ambiguous; torch.jit.load crashes (SIGSEGV) on some of them
            twice = sorted({n for n in names if names.count(n) > 1})
            raise UnreadableInputError(f"{path}: a malformed zip archive (member {twice[0]} appears twice)")
        return "torchscript" if looks_like_torchscript(names) else "pytorch-zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and header_len <= size - 8:
            return "safetensors"
        if head[8:9] == b"{":
            raise UnreadableInputError(f"{path}: truncated safetensors file (header runs past the end)")
    if head.lstrip()[:1] == b"{" and path.name.endswith(".index.json"):
        return "safetensors-index"
    from ._onnx import looks_like_onnx

    if looks_like_onnx(head):
        return "onnx"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
        return "pytorch-pickle"
    raise UnreadableInputError(
        f"{path}: not a recognised checkpoint (expected safetensors, a PyTorch .pt/.pth/.bin/.ckpt file, TorchScript or ONNX)"
    )


def _resolve_path(source: str | Path) -> Path:
    path = Path(source)
    if not path.exists():
        raise UnreadableInputError(f"{path}: no such file")
    if path.is_dir():
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
        fmt = detect_format(path)
    except OSError as exc:
        raise UnreadableInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if fmt in ("torchscript", "onnx"):
        if arch:
            raise UsageError(f"--arch does not apply to {fmt}: the file holds its own architecture")
        if fmt == "onnx":
            from ._onnx import read_onnx

            return read_onnx(path, fold_batchnorm=fold_batchnorm, input_size=size, branch=onnx_branch)
        from ._torchscript import read_torchscript

        return read_torchscript(path, size=size, fold_batchnorm=fold_batchnorm, trust_code=trust_code,
                                max_memory_mb=max_memory_mb)
    if fmt == "safetensors":
        entries, info = read_safetensors(path)
    elif fmt == "safetensors-index":
        entries, info = read_sharded(path)
    else:
        from ._policy import default_max_memory_mb
        from ._script_archive import prescan_torch_file

        prescan_torch_file(path, (max_memory_mb or default_max_memory_mb()) * 2**20)
        chosen, notes, metadata = read_torch_object(path, trust=trust_code, key=key)
        from ..records import SourceInfo

        info = SourceInfo(path=str(path), format="pytorch", metadata=metadata, notes=tuple(notes))
        import torch

        if isinstance(chosen, torch.nn.Module) and not arch:
            from ._trace import load_module

            return load_module(chosen, info, size=size, fold_batchnorm=fold_batchnorm, max_memory_mb=max_memory_mb)
        entries = entries_of(chosen)
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
