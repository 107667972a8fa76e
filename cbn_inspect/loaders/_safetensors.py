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


def read_sharded(index_path: Path) -> tuple[dict[str, TensorEntry], SourceInfo]:
    """A sharded checkpoint: the index's ``weight_map`` names the shard of every tensor."""
    try:
        index = json.loads(index_path.read_text())
        weight_map = index["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableInputError(f"{index_path}: not a valid safetensors index ({_short(exc)})") from exc
    entries: dict[str, TensorEntry] = {}
    metadata: dict[str, str] = {}
    for shard in shards:
        shard_path = (index_path.parent / shard).resolve()
        if index_path.parent.resolve() not in shard_path.parents:
            raise UnreadableInputError(f"{index_path}: shard {shard!r} lies outside the checkpoint's folder")
        if not shard_path.is_file():
            raise UnreadableInputError(f"{index_path}: shard {shard} is missing")
        shard_entries, shard_meta = _read_header(shard_path)
        entries.update(shard_entries)
        for key, value in shard_meta.items():
            metadata.setdefault(key, value)
    for key, value in (index.get("metadata") or {}).items():
        metadata.setdefault(str(key), str(value))
    return entries, SourceInfo(path=str(index_path), format="safetensors-sharded", metadata=metadata)
