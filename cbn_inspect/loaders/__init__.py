"""Loaders: turn a source (a path today; model names and folders later) into a :class:`LoadedModel`.

The format is recognised from the file's first bytes, not its name: a safetensors header, a zip archive
(PyTorch's default format), or a raw pickle (PyTorch's legacy format). Each reader yields named tensors
(:class:`TensorEntry`), and :func:`build_model` turns them into conv layer records.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import UnreadableInputError
from ..records import LoadedModel
from ._safetensors import read_safetensors, read_sharded
from ._statedict import TensorEntry, build_model, natural_key, parse_grid
from ._torchfile import read_torch_file

__all__ = ["TensorEntry", "build_model", "detect_format", "load", "natural_key", "parse_grid"]

# Files looked for, in this order, when the source is a folder.
FOLDER_CHECKPOINTS = (
    "model.safetensors.index.json", "model.safetensors", "pytorch_model.bin",
)


def detect_format(path: Path) -> str:
    """``safetensors``, ``safetensors-index``, ``pytorch-zip`` or ``pytorch-pickle``, from the first bytes."""
    size = path.stat().st_size
    if size == 0:
        raise UnreadableInputError(f"{path}: empty file")
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "pytorch-zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and header_len <= size - 8:
            return "safetensors"
        if head[8:9] == b"{":
            raise UnreadableInputError(f"{path}: truncated safetensors file (header runs past the end)")
    if head.lstrip()[:1] == b"{" and path.name.endswith(".index.json"):
        return "safetensors-index"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
        return "pytorch-pickle"
    raise UnreadableInputError(
        f"{path}: not a recognised checkpoint (expected safetensors, or a PyTorch .pt/.pth/.bin/.ckpt file)"
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
    trust_pickle: bool = False,
    key: str | None = None,
    fold_batchnorm: bool = True,
) -> LoadedModel:
    """Read a checkpoint's conv layers without computing anything. Weights stay lazy where the format allows."""
    path = _resolve_path(source)
    try:
        fmt = detect_format(path)
    except OSError as exc:
        raise UnreadableInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if fmt == "safetensors":
        entries, info = read_safetensors(path)
    elif fmt == "safetensors-index":
        entries, info = read_sharded(path)
    else:
        entries, info = read_torch_file(path, trust=trust_pickle, key=key)
    return build_model(entries, info, fold_batchnorm=fold_batchnorm)
