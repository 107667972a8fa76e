"""safetensors files and sharded checkpoints (``*.safetensors.index.json``), read header-first.

Shapes and dtypes come from the header alone; a tensor's bytes are read only when its layer is analysed
(:class:`SafetensorsWeight`), so an audit that needs shapes never reads the weights. ``__metadata__`` is
kept verbatim (strings to strings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnreadableInputError
from ..records import SourceInfo
from ._statedict import TensorEntry


# safetensors dtype codes -> the names torch (and the rest of cbn-inspect) uses
DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16",
    "I8": "int8", "U8": "uint8", "BOOL": "bool",
}


@dataclass(frozen=True)
class SafetensorsWeight:
    """One tensor of a safetensors file, read on demand."""

    path: str
    name: str

    def load(self):
        from safetensors import safe_open

        try:
            with safe_open(self.path, framework="pt") as handle:
                return handle.get_tensor(self.name)
        except Exception as exc:  # the library raises its own SafetensorError and OSError variants
            raise UnreadableInputError(f"{self.path}: cannot read tensor {self.name}: {exc}") from exc


def _read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            entries = {}
            for name in handle.keys():
                piece = handle.get_slice(name)
                entries[name] = TensorEntry(
                    name=name,
                    shape=tuple(int(v) for v in piece.get_shape()),
                    dtype=DTYPE_NAMES.get(str(piece.get_dtype()), str(piece.get_dtype()).lower()),
                    source=SafetensorsWeight(str(path), name),
                )
    except Exception as exc:
        raise UnreadableInputError(f"{path}: not a valid safetensors file ({_short(exc)})") from exc
    return entries, metadata


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def read_safetensors(path: Path) -> tuple[dict[str, TensorEntry], SourceInfo]:
    entries, metadata = _read_header(path)
    return entries, SourceInfo(path=str(path), format="safetensors", metadata=metadata)


def _shard_path(index_path: Path, shard: object) -> Path:
    """The file a ``weight_map`` value names, refused unless it is a plain relative path inside the folder."""
    where = f"{index_path}: weight_map names shard {shard!r}"
    if not isinstance(shard, str) or not shard or "\x00" in shard:
        raise UnreadableInputError(f"{where}, not a file name")
    if Path(shard).is_absolute() or ".." in Path(shard).parts:
        raise UnreadableInputError(f"{where}: refused, a shard must not lie outside the checkpoint's folder")
    try:
        folder = index_path.parent.resolve()
        path = (folder / shard).resolve()
        inside = folder in path.parents
        regular = path.is_file()
    except (OSError, ValueError) as exc:  # a name too long, an undecodable name, a symlink loop
        raise UnreadableInputError(f"{where}, which cannot be opened ({exc})") from exc
    if not inside:
        raise UnreadableInputError(f"{where}: refused, it lies outside the checkpoint's folder")
    if not regular:
        raise UnreadableInputError(f"{where}, which is missing (or not a regular file)")
    return path


def read_sharded(index_path: Path) -> tuple[dict[str, TensorEntry], SourceInfo]:
    """A sharded checkpoint: the index's ``weight_map`` names the shard of every tensor.

    Every shard must be a relative path inside the index's folder (``../`` and absolute paths are refused:
    an index must not make the tool read other files).
    """
    try:
        index = json.loads(index_path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UnreadableInputError(f"{index_path}: not a valid safetensors index ({_short(exc)})") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise UnreadableInputError(f"{index_path}: not a valid safetensors index (no weight_map object)")
    for value in weight_map.values():
        if not isinstance(value, str):
            _shard_path(index_path, value)  # refuses it
    paths = {shard: _shard_path(index_path, shard) for shard in set(weight_map.values())}
    entries: dict[str, TensorEntry] = {}
    metadata: dict[str, str] = {}
    for shard in sorted(paths):
        shard_entries, shard_meta = _read_header(paths[shard])
        entries.update(shard_entries)
        for key, value in shard_meta.items():
            metadata.setdefault(key, value)
    extra = index.get("metadata")
    if isinstance(extra, dict):
        for key, value in extra.items():
            if isinstance(value, (str, int, float, bool)):
                metadata.setdefault(str(key), str(value))
    return entries, SourceInfo(path=str(index_path), format="safetensors-sharded", metadata=metadata)
