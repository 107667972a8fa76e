"""Turn the audit's arguments into items, and give each item its row key.

An argument is one of:

- ``timm:PATTERN`` -- every model ``timm.list_models(PATTERN)`` names (``timm:resnet*``); a name without a
  wildcard must exist. No weights are downloaded here: the item is ``timm:NAME``, for the loaders.
- ``@FILE`` or a file ending in ``.txt``/``.lst``/``.list``/``.manifest`` -- a manifest: one source per line,
  blank lines and ``#`` comments ignored, relative paths taken from the manifest's folder.
- a folder -- searched recursively for checkpoint names (:data:`CHECKPOINT_SUFFIXES`) and, whatever the
  name, for files a reader takes (an HDF5 file only with Keras weights in it), a TensorFlow SavedModel or
  Core ML package folder found on the way being one item (not one per inner file), recognised by content as ``report`` does (so a TorchScript ``.jit`` or an
  ONNX file of any name is found; a README is not); hidden entries are ignored,
  the rest are listed as skipped with the reason, and the shards a ``*.safetensors.index.json`` lists become
  one item, the index.
- any other path -- one item, whatever its name (the loaders recognise formats by their first bytes).

Paths become absolute (so Dask workers with another working folder find them), duplicates are dropped and
the order is stable. The row key is the item's content hash plus a hash of everything that changes its report.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .._version import __version__
from ..errors import UsageError
from .records import AuditItem

CHECKPOINT_SUFFIXES = (
    ".safetensors", ".safetensors.index.json", ".pt", ".pth", ".pth.tar", ".bin", ".ckpt", ".onnx", ".tflite",
    ".keras", ".mlmodel",
)
MANIFEST_SUFFIXES = (".txt", ".lst", ".list", ".manifest")
WILDCARDS = set("*?[")
CHUNK = 1 << 20


def is_checkpoint_name(name: str) -> bool:
    lower = name.lower()
    return any(lower.endswith(s) for s in CHECKPOINT_SUFFIXES)


def _is_manifest(arg: str) -> bool:
    return arg.startswith("@") or (arg.lower().endswith(MANIFEST_SUFFIXES) and not Path(arg).is_dir())


def expand_timm(pattern: str) -> list[str]:
    """Model names for ``timm:PATTERN`` (a usage error when nothing matches)."""
    import timm

    names = list(timm.list_models(pattern))
    if not names:
        if WILDCARDS & set(pattern):
            raise UsageError(f"timm:{pattern}: no timm model matches", hint="see timm.list_models()")
        raise UsageError(f"timm:{pattern}: not a timm model name", hint="wildcards work: timm:resnet*")
    return names


MAX_INDEX_BYTES = 64 * 2**20


def _shards(index: Path) -> set[Path]:
    try:
        info = os.stat(index)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_INDEX_BYTES:  # a FIFO would block the read
            return set()
        weight_map = json.loads(index.read_text()).get("weight_map", {})
    except (OSError, ValueError, AttributeError):
        return set()
    return {(index.parent / name).absolute() for name in set(weight_map.values()) if isinstance(name, str)}


def sniff(path: Path) -> str | None:
    """Why no reader takes ``path`` (None when one does), from its first bytes, as ``report`` decides."""
    from ..errors import CbnError
    from ..loaders import detect_format

    try:
        fmt = detect_format(path)
    except CbnError as error:
        return error.message.removeprefix(f"{path}: ")
    except OSError as exc:
        return f"cannot read ({exc.strerror or exc})"
    if fmt == "pytorch-zip":
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                if not any(n.endswith("data.pkl") for n in archive.namelist()):
                    return "a zip archive without a PyTorch data.pkl"
        except (zipfile.BadZipFile, OSError) as exc:
            return f"a damaged zip archive ({exc})"
    if fmt == "keras-h5":
        return _keras_h5_why_not(path)
    return None


def _keras_h5_why_not(path: Path) -> str | None:
    """Why an HDF5 file is not Keras weights (a data set, say), or None; None too without h5py (an item then,
    whose row says the extra is missing)."""
    try:
        import h5py
    except ImportError:
        return None
    try:
        with h5py.File(path, "r") as h5:
            if "layer_names" in h5.attrs or "model_weights" in h5 or "layers" in h5 \
                    or "_layer_checkpoint_dependencies" in h5:
                return None
    except Exception:  # a damaged HDF5 file is an item: its row says why
        return None
    return "an HDF5 file without Keras weights"


def walk_folder(folder: Path, skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """Files under ``folder`` with a checkpoint's name (:data:`CHECKPOINT_SUFFIXES`; a corrupt one becomes an
    error row) or, whatever their name, content a reader takes (a TorchScript ``.jit``, an ONNX file), sorted; shards listed by an index are replaced by the index. Files no reader takes are
    appended to ``skipped`` as (path, reason)."""
    from ..loaders.tensorflow import foreign_folder_kind

    if foreign_folder_kind(folder):  # a SavedModel or Core ML package is one item (its row names the conversion)
        return [folder.absolute()]
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in list(dirs):
            if foreign_folder_kind(Path(root) / name):
                found.append(Path(root) / name)
                dirs.remove(name)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            if is_checkpoint_name(name):  # a checkpoint by name is an item even when corrupt: an error row
                found.append(path)
                continue
            why = sniff(path) if path.is_file() else "not a regular file"
            if why is None:
                found.append(path)
            elif skipped is not None:
                skipped.append((str(path.absolute()), why))
    found = [p.absolute() for p in found]
    shards: set[Path] = set()
    for path in found:
        if path.name.endswith(".index.json"):
            shards |= _shards(path)
    return [p for p in found if p not in shards]


def _manifest_lines(path: Path) -> Iterator[str]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"manifest {path}: cannot read ({exc})") from exc
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("timm:"):
            if line and not line.startswith("#"):
                yield line
            continue
        at, target = ("@", line[1:]) if line.startswith("@") else ("", line)
        yield at + (target if os.path.isabs(target) else str(path.parent / target))


def _expand_one(arg: str, seen_manifests: set[Path], from_manifest: bool,
                skipped: list | None = None) -> Iterator[AuditItem]:
    if arg.startswith("timm:"):
        for name in expand_timm(arg[len("timm:"):]):
            yield AuditItem(f"timm:{name}", "timm", arg)
        return
    if _is_manifest(arg):
        path = Path(arg[1:] if arg.startswith("@") else arg).absolute()
        if not path.is_file():
            raise UsageError(f"manifest {path}: no such file")
        if path in seen_manifests:
            return
        seen_manifests.add(path)
        for line in _manifest_lines(path):
            yield from _expand_one(line, seen_manifests, True, skipped)
        return
    path = Path(arg)
    if path.is_dir():
        for file in walk_folder(path, skipped):
            yield AuditItem(str(file), "file", arg)
    elif path.exists() or from_manifest:
        # a manifest may name a missing file: that item becomes an error row, not the end of the batch
        yield AuditItem(str(path.absolute()), "file", arg)
    else:
        raise UsageError(f"{arg}: no such file or folder")


def expand_sources(args: Iterable[str], skipped: list[tuple[str, str]] | None = None) -> list[AuditItem]:
    """Every item the arguments name, in order, each once. Raises :class:`UsageError` before any work.
    Files of a folder that no reader takes go to ``skipped`` as (path, reason)."""
    items: dict[str, AuditItem] = {}
    seen_manifests: set[Path] = set()
    for arg in args:
        for item in _expand_one(arg, seen_manifests, False, skipped):
            items.setdefault(item.source, item)
    return list(items.values())


class HashTimeout(Exception):
    """Hashing an item took longer than its time limit."""


def _hash_file(path: Path, digest, deadline: float | None) -> None:
    """Feed ``path``'s bytes to ``digest``: a regular file only, at most its size, within ``deadline``.

    A FIFO, socket or device (say a ``/dev/zero`` link named ``*.safetensors``) is refused before it is
    opened for reading (``O_NONBLOCK``, so even a FIFO swapped in after the check cannot block the open).
    A sparse file's holes are skipped (``SEEK_DATA``), hashed as their offsets: a 20 GB sparse file costs
    nothing, and the same bytes always give the same key.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"not a regular file: {path}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file: {path}")
        size = info.st_size
        sparse = hasattr(os, "SEEK_DATA") and info.st_blocks * 512 < size // 2
        offset = 0
        while offset < size:
            if sparse:
                try:
                    start = os.lseek(fd, offset, os.SEEK_DATA)
                except OSError:  # no data after offset: the rest is a hole
                    break
                end = os.lseek(fd, start, os.SEEK_HOLE)
                digest.update(f"@{start}:{end}".encode())
                os.lseek(fd, start, os.SEEK_SET)
            else:
                start, end = offset, size
            position = start
            while position < min(end, size):
                chunk = os.read(fd, min(CHUNK, min(end, size) - position))
                if not chunk:
                    break
                digest.update(chunk)
                position += len(chunk)
                if deadline is not None and time.monotonic() > deadline:
                    raise HashTimeout(path)
            offset = max(end, position) if sparse else size
    finally:
        os.close(fd)


def _hash_files(paths: Iterable[Path], deadline: float | None = None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        _hash_file(path, digest, deadline)
    return digest.hexdigest()


def content_hash(item: AuditItem, timeout: float | None = None) -> str:
    """sha256 of the item's bytes (an index with its shards); ``timm:NAME`` hashes the name and timm version.

    A file that cannot be read, or is not a regular file, gets a hash of its path, so that it still has a
    key (its row is an error). Past ``timeout`` seconds of hashing, :class:`HashTimeout` is raised.
    """
    if item.kind == "timm":
        import timm

        return hashlib.sha256(f"{item.source}@timm-{timm.__version__}".encode()).hexdigest()
    path = Path(item.source)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        files = [path]
        if path.name.endswith(".index.json"):
            files += sorted(p for p in _shards(path) if p.is_file())
        return _hash_files(files, deadline)
    except OSError:
        return "unreadable-" + hashlib.sha256(item.source.encode()).hexdigest()


def settings_hash(settings: Mapping[str, Any], **options: Any) -> str:
    """A short, canonical hash of the report's settings dict plus the options that change a report."""
    payload = {"settings": settings, "options": options, "tool": __version__}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def row_key(content: str, settings_digest: str) -> str:
    return f"{content}:{settings_digest}"
