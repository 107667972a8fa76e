"""The one table of formats the loaders read: how each is recognised, which reader takes it, and whether
the file holds its own architecture or is a state dict to bind to one.

:data:`FORMATS` is tried in order against a :class:`Probe` of the file (its first bytes, its size, its name,
the member names when it is a zip); the first whose ``sniff`` says yes names the format. Its ``read`` returns
either a finished :class:`~cbn_inspect.records.LoadedModel` or, for a state dict, ``(entries, info)`` that
:func:`cbn_inspect.loaders.load` binds to an architecture (``--arch``, a folder's ``config.json``, or one
identified from timm's registry). ``binding`` is ``own`` where the file holds its architecture (``--arch``
does not apply) and ``state-dict`` where it may be bound. A new format is one row here and one reader.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from ..errors import UnreadableInputError
from . import pytorch, tensorflow


@dataclass(frozen=True)
class Options:
    """What a reader may need of :func:`~cbn_inspect.loaders.load`'s arguments."""

    trust_code: bool = False
    key: str | None = None
    fold_batchnorm: bool = True
    arch: str | None = None
    size: tuple[int, ...] | None = None
    max_memory_mb: int | None = None
    onnx_branch: str = "then"


class Probe:
    """What the sniffs look at: the first bytes, the size, the name, and (computed once) a zip's member names."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        if self.size == 0:
            raise UnreadableInputError(f"{path}: empty file")
        with path.open("rb") as handle:
            self.head = handle.read(16)

    @property
    def is_zip(self) -> bool:
        return self.head.startswith(b"PK\x03\x04") or self.head.startswith(b"PK\x05\x06")

    @cached_property
    def zip_names(self) -> list[str]:
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError, NotImplementedError, ValueError, EOFError,
                RuntimeError) as exc:  # zipfile's errors for corrupt archives (non-UTF-8 names included)
            raise UnreadableInputError(f"{self.path}: a damaged zip archive ({type(exc).__name__}: {exc})") from exc
        if len(set(names)) != len(names):  # ambiguous; torch.jit.load crashes (SIGSEGV) on some of them
            twice = sorted({n for n in names if names.count(n) > 1})
            raise UnreadableInputError(f"{self.path}: a malformed zip archive (member {twice[0]} appears twice)")
        return names

    def safetensors_header(self) -> bool:
        if len(self.head) < 9 or self.head[8:9] != b"{":
            return False
        (header_len,) = struct.unpack("<Q", self.head[:8])
        if header_len > self.size - 8:
            raise UnreadableInputError(f"{self.path}: truncated safetensors file (header runs past the end)")
        return True


@dataclass(frozen=True)
class Format:
    name: str
    sniff: Callable[[Probe], bool]
    read: Callable[[Path, Options], Any]
    binding: str  # "own" (the file holds its architecture) or "state-dict"
    label: str  # how the format is named to a user


# --- readers: each takes (path, options) -------------------------------------------------------------------

def _read_safetensors(path: Path, o: Options):
    from ._safetensors import read_safetensors

    return read_safetensors(path)


def _read_sharded(path: Path, o: Options):
    from ._safetensors import read_sharded

    return read_sharded(path)


def _pytorch(fmt: str) -> Callable[[Path, Options], Any]:
    def read(path: Path, o: Options):
        return pytorch.read(path, fmt, trust_code=o.trust_code, key=o.key, fold_batchnorm=o.fold_batchnorm,
                            arch=o.arch, size=o.size, max_memory_mb=o.max_memory_mb)

    return read


def _read_onnx(path: Path, o: Options):
    from ._onnx import read_onnx

    return read_onnx(path, fold_batchnorm=o.fold_batchnorm, input_size=o.size, branch=o.onnx_branch)


def _tensorflow(fmt: str) -> Callable[[Path, Options], Any]:
    def read(path: Path, o: Options):
        return tensorflow.read(path, fmt, fold_batchnorm=o.fold_batchnorm, input_size=o.size,
                               max_memory_mb=o.max_memory_mb)

    return read


# --- sniffs: each takes a Probe ----------------------------------------------------------------------------

def _is_torchscript(p: Probe) -> bool:
    from .pytorch._torchscript import looks_like_torchscript

    return p.is_zip and looks_like_torchscript(p.zip_names)


def _is_onnx(p: Probe) -> bool:
    from ._onnx import looks_like_onnx

    return looks_like_onnx(p.head)


def _is_pickle(p: Probe) -> bool:
    return p.head[:1] == b"\x80" or p.head[:1] in (b"(", b"}", b"]")


def _foreign(kind: str) -> Callable[[Probe], bool]:
    return lambda p: tensorflow.foreign_file_kind(p.path) == kind


FORMATS: tuple[Format, ...] = (
    Format("keras", lambda p: p.is_zip and tensorflow.is_keras_archive(p.zip_names), _tensorflow("keras"), "own",
           "Keras .keras"),
    Format("torchscript", _is_torchscript, _pytorch("torchscript"), "own", "TorchScript"),
    Format("pytorch-zip", lambda p: p.is_zip, _pytorch("pytorch-zip"), "state-dict", "PyTorch .pt/.pth/.bin/.ckpt"),
    Format("safetensors", Probe.safetensors_header, _read_safetensors, "state-dict", "safetensors"),
    Format("safetensors-index", lambda p: p.head.lstrip()[:1] == b"{" and p.path.name.endswith(".index.json"),
           _read_sharded, "state-dict", "sharded safetensors"),
    Format("tflite", lambda p: tensorflow.looks_like_tflite(p.head), _tensorflow("tflite"), "own", "TFLite"),
    Format("keras-h5", lambda p: tensorflow.looks_like_hdf5(p.head), _tensorflow("keras-h5"), "own", "Keras .h5"),
    # protobufs whose first bytes look like ONNX's: recognised by name, before ONNX
    Format("savedmodel", _foreign("savedmodel"), _tensorflow("savedmodel"), "own", "TensorFlow SavedModel"),
    Format("coreml", _foreign("coreml"), _tensorflow("coreml"), "own", "Core ML"),
    Format("onnx", _is_onnx, _read_onnx, "own", "ONNX"),
    Format("pytorch-pickle", _is_pickle, _pytorch("pytorch-pickle"), "state-dict", "PyTorch legacy pickle"),
)
BY_NAME = {f.name: f for f in FORMATS}
READ_LABELS = ("safetensors", "a PyTorch .pt/.pth/.bin/.ckpt file", "TorchScript", "ONNX", "TFLite", "Keras .keras/.h5")


def format_of(path: Path) -> Format:
    """The first format in :data:`FORMATS` whose sniff takes the file (UnreadableInputError when none does)."""
    probe = Probe(path)
    for fmt in FORMATS:
        if fmt.sniff(probe):
            return fmt
    raise UnreadableInputError(f"{path}: not a recognised checkpoint (expected {', '.join(READ_LABELS[:-1])} "
                               f"or {READ_LABELS[-1]})")
