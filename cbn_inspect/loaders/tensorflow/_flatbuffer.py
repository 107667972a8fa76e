"""A bounds-checked view of a TFLite flatbuffer over the ``flatbuffers`` runtime (the ``tflite`` extra).

Only what :mod:`._tflite` needs of the schema (``tensorflow/lite/schema/schema.fbs``): tables, scalars,
strings, vectors of scalars and of tables. Every offset the file gives is checked against the buffer before it
is followed, and every vector's declared length against the bytes left, so that a damaged or hostile file
fails with :class:`~cbn_inspect.errors.UnreadableInputError` (exit 3), never a traceback or a huge allocation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import MissingExtraError, UnreadableInputError

SCALARS = {"bool": ("BoolFlags", 1), "int8": ("Int8Flags", 1), "uint8": ("Uint8Flags", 1),
           "int32": ("Int32Flags", 4), "uint32": ("Uint32Flags", 4), "int64": ("Int64Flags", 8),
           "uint64": ("Uint64Flags", 8)}


def import_flatbuffers() -> Any:
    try:
        import flatbuffers.number_types
        import flatbuffers.table
    except ImportError as exc:
        raise MissingExtraError("reading TensorFlow Lite needs the flatbuffers package",
                                hint="pip install 'cbn-inspect[tflite]'") from exc
    return flatbuffers


class Damaged(Exception):
    """An offset or length that points outside the file (turned into UnreadableInputError by the caller)."""


class Table:
    """One flatbuffer table at ``pos`` in ``buf``: fields by their schema index (0, 1, ...)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        fb = import_flatbuffers()
        self.buf, self.size = buf, len(buf)
        if not 0 <= pos <= self.size - 4:
            raise Damaged(f"table at {pos} outside the file")
        self._tab = fb.table.Table(buf, pos)
        self._n = fb.number_types
        vtable = pos - self._get("SOffsetTFlags", pos, 4)
        if not 0 <= vtable <= self.size - 4:
            raise Damaged(f"vtable at {vtable} outside the file")

    def _get(self, kind: str, pos: int, width: int) -> int:
        if not 0 <= pos <= self.size - width:
            raise Damaged(f"read at {pos} outside the file")
        return self._tab.Get(getattr(self._n, kind), pos)

    def _offset(self, index: int) -> int:
        tab = self._tab
        vtable = tab.Pos - self._get("SOffsetTFlags", tab.Pos, 4)
        end = self._get("VOffsetTFlags", vtable, 2)
        slot = 4 + 2 * index
        return self._get("VOffsetTFlags", vtable + slot, 2) if slot < end else 0

    def scalar(self, index: int, kind: str, default: int = 0) -> int:
        off = self._offset(index)
        if not off:
            return default
        name, width = SCALARS[kind]
        return int(self._get(name, self._tab.Pos + off, width))

    def has(self, index: int) -> bool:
        return bool(self._offset(index))

    def _indirect(self, index: int) -> int | None:
        off = self._offset(index)
        if not off:
            return None
        pos = self._tab.Pos + off
        return pos + self._get("UOffsetTFlags", pos, 4)

    def table(self, index: int) -> "Table | None":
        pos = self._indirect(index)
        return None if pos is None else Table(self.buf, pos)

    def _vector(self, index: int, width: int) -> tuple[int, int]:
        """(start, length) of a vector field, its length checked against the bytes left."""
        pos = self._indirect(index)
        if pos is None:
            return 0, 0
        length = self._get("UOffsetTFlags", pos, 4)
        start = pos + 4
        if length * width > self.size - start:
            raise Damaged(f"vector of {length} elements runs past the end of the file")
        return start, length

    def array(self, index: int, dtype: str) -> np.ndarray:
        """A vector of scalars as a numpy array (a view of the file's bytes; empty when absent)."""
        dt = np.dtype(dtype)
        start, length = self._vector(index, dt.itemsize)
        return np.frombuffer(self.buf, dtype=dt, count=length, offset=start) if length else np.zeros(0, dt)

    def byte_span(self, index: int) -> tuple[int, int]:
        """(start, length) of a ``[ubyte]`` field (tensor data, options)."""
        return self._vector(index, 1)

    def tables(self, index: int) -> list["Table"]:
        start, length = self._vector(index, 4)
        out = []
        for i in range(length):
            pos = start + 4 * i
            out.append(Table(self.buf, pos + self._get("UOffsetTFlags", pos, 4)))
        return out

    def string(self, index: int) -> str:
        start, length = self._vector(index, 1)
        return bytes(self.buf[start:start + length]).decode("utf-8", "backslashreplace") if length else ""


def root(buf: bytes) -> Table:
    """The root table (a ``Model``) of a flatbuffer."""
    if len(buf) < 8:
        raise Damaged("shorter than a flatbuffer header")
    return Table(buf, int.from_bytes(buf[:4], "little"))


def checked(path: Any, what: str):
    """A context manager turning a damaged flatbuffer's errors into one UnreadableInputError line."""
    import contextlib
    import struct

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except (Damaged, struct.error, IndexError, ValueError, OverflowError) as exc:
            raise UnreadableInputError(f"{path}: a damaged {what} ({' '.join(str(exc).split())[:120]})") from exc

    return guard()
