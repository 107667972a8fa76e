"""A TorchScript archive read as data: its pickles through a restricted unpickler, its tensors from records.

``torch.jit.load`` runs the archive's TorchScript (a class's ``__setstate__`` runs while loading, and it can
write files, loop or allocate), so an untrusted archive is never handed to it. Here ``data.pkl`` is read by
a :class:`pickle.Unpickler` whose ``find_class`` answers only:

- ``__torch__.*`` classes: an inert placeholder type per class name (:class:`ScriptObject`); building one
  records its state (the attribute dict, or whatever its ``__getstate__`` produced) and calls nothing;
- ``torch._utils._rebuild_tensor_v2`` (and the quantised variant): a :class:`TensorRef` (storage record,
  dtype, offset, sizes, strides), checked against the storage it points into; no tensor is made;
- ``torch.jit._pickle`` list builders and ``restore_type_tag``, ``collections.OrderedDict``, torch's own
  ``*Storage`` type names (for their dtype only).

Anything else is refused. Storages are named by persistent ids; each is checked against its record in the
zip (``numel x itemsize`` must fit the record, the record must fit the file) before any byte is read, and a
tensor must fit its storage (which refuses stride-0 tensors that claim more elements than they hold).
Weights are read lazily, one record at a time, into torch's own ``UntypedStorage``.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ResourceLimitError, UnreadableInputError

MAX_PICKLE_BYTES = 64 * 2**20  # a data.pkl holds structure, not weights (ResNet-50's: about 100 kB)
MAX_CODE_FILE_BYTES = 2 * 2**20  # code files parsed (as text) for geometry; larger ones are skipped, with a note
MAX_CODE_TOTAL_BYTES = 16 * 2**20
MAX_TREE_NODES = 1_000_000
MAX_DEPTH = 200
INFLATION_ALLOWED_BYTES = 2**20  # a view may repeat storage elements (stride 0) up to this size
# What reading a damaged zip member raises (zipfile's RuntimeError: "is encrypted, password required").
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error, RuntimeError)

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "QInt8Storage": "qint8", "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}
_ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
             "int8": 1, "uint8": 1, "bool": 1, "complex64": 8, "complex128": 16, "qint8": 1, "quint8": 1,
             "qint32": 4, "quint4x2": 1, "quint2x4": 1}


class ScriptObject:
    """An inert stand-in for an instance of a ``__torch__`` class: its class name and recorded state.

    Subclassed once per class name (pickle's NEWOBJ needs a type); nothing from the file is ever called.
    """

    qualname = "?"

    def __init__(self, *args: Any) -> None:  # REDUCE on a placeholder type: keep the arguments as state
        self.__dict__["_state"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    @property
    def state(self) -> Any:
        return self.__dict__.get("_state")

    @property
    def attributes(self) -> dict[str, Any]:
        """The attribute dict, where the state is one (a module's), else empty."""
        state = self.state
        return state if isinstance(state, dict) else {}


@dataclass(frozen=True)
class StorageRef:
    """A storage as a persistent id declares it: its record key, dtype and element count."""

    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle declares it, checked to fit its storage; no data read."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    quantized: bool = False

    @property
    def dtype(self) -> str:
        return self.storage.dtype


@dataclass(frozen=True)
class _StorageType:
    dtype: str


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UnreadableInputError(f"a tensor's {what} is not a list of integers")
    return tuple(value)


def check_fits(storage: StorageRef, offset: Any, shape: Any, stride: Any) -> TensorRef:
    """A tensor view that lies inside its storage and claims no more elements than the storage holds."""
    shape, stride = _ints(shape, "size"), _ints(stride, "stride")
    if not isinstance(offset, int) or offset < 0 or len(shape) != len(stride) or len(shape) > 16:
        raise UnreadableInputError("a tensor with a malformed offset, size or stride")
    if min(shape, default=1) < 0 or min(stride, default=0) < 0:
        raise UnreadableInputError(f"a tensor with negative size or stride {list(shape)} / {list(stride)}")
    numel = 1
    for n in shape:
        numel *= n
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
        if last >= storage.numel:
            raise UnreadableInputError(f"a tensor of size {list(shape)}, stride {list(stride)} reaches element "
                                       f"{last} of a storage of {storage.numel}")
        if numel > storage.numel and numel * _ITEMSIZE[storage.dtype] > INFLATION_ALLOWED_BYTES:
            raise ResourceLimitError(f"a tensor of size {list(shape)} claims {numel} elements from a storage of "
                                     f"{storage.numel} (stride {list(stride)}): refused")
    return TensorRef(storage, offset, shape, stride)


class _Unpickler(pickle._Unpickler):
    """The pure-Python unpickler, whose memo is a dict: in the C one a ``LONG_BINPUT`` of 4e9 in a 4 kB file
    makes the memo array that long (measured: 17 s and gigabytes of page faults before an error).

    ``lenient``: every other global becomes an inert placeholder too (the pre-scan of torch.save files,
    which only checks the tensors' declared sizes; the file is then read by torch's weights-only loader)."""

    def __init__(self, data: Any, storages: dict[str, zipfile.ZipInfo] | None, budget_bytes: int,
                 lenient: bool = False, file_size: int | None = None) -> None:
        super().__init__(io.BytesIO(data) if isinstance(data, bytes) else data)
        self._records = storages
        self._budget = budget_bytes
        self._file_size = file_size
        self._lenient = lenient
        self._seen: dict[str, StorageRef] = {}
        self._declared = 0
        self._types: dict[str, type] = {}

    def _placeholder(self, qualname: str) -> type:
        if qualname not in self._types:
            if len(self._types) > 100_000:
                raise UnreadableInputError("the pickle names too many classes")
            self._types[qualname] = type(qualname.rsplit(".", 1)[-1], (ScriptObject,), {"qualname": qualname})
        return self._types[qualname]

    def find_class(self, module: str, name: str) -> Any:
        if self._lenient and module == "torch" and name.endswith("Storage") and name not in _STORAGE_DTYPES:
            return self._placeholder(f"{module}.{name}")
        if module == "__torch__" or module.startswith("__torch__."):
            return self._placeholder(f"{module}.{name}")
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_qtensor":
            return _rebuild_qtensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *rest: data
        if module == "torch.jit._pickle":
            if name.startswith("build_"):
                return _build_list
            if name == "restore_type_tag":
                return lambda value, *rest: value
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if self._lenient:
            return self._placeholder(f"{module}.{name}")
        raise UnreadableInputError(f"data.pkl names {module}.{name}, which a TorchScript archive does not hold")

    def persistent_load(self, pid: Any) -> StorageRef:
        legacy = self._records is None  # torch's legacy format: (storage, type, key, location, numel, view)
        if not (isinstance(pid, tuple) and len(pid) == (6 if legacy else 5) and pid[0] == "storage"):
            raise UnreadableInputError("a malformed storage reference in the pickle")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise UnreadableInputError("a malformed storage reference in the pickle")
        key = str(key)
        if key in self._seen:
            return self._seen[key]
        nbytes = numel * _ITEMSIZE[kind.dtype]
        if nbytes > self._budget:
            raise ResourceLimitError(f"the file's storages exceed --max-memory (storage {key!r}: {nbytes} bytes)")
        if legacy:
            self._declared += nbytes
            if self._file_size is not None and self._declared > self._file_size:
                raise ResourceLimitError(f"storage {key!r} claims {nbytes} bytes, more than the file holds "
                                         f"({self._file_size} bytes)")
        else:
            record = self._records.get(key)
            if record is None:
                raise UnreadableInputError(f"the pickle refers to storage {key!r}, which the archive does not hold")
            if nbytes > record.file_size:
                raise UnreadableInputError(f"truncated or corrupt: storage {key!r} claims {nbytes} bytes; its "
                                           f"record holds {record.file_size}")
        self._budget -= nbytes
        if self._budget < 0:
            raise ResourceLimitError(f"the file's storages exceed --max-memory (storage {key!r}: {nbytes} bytes)")
        ref = StorageRef(key, kind.dtype, numel)
        self._seen[key] = ref
        return ref


def _rebuild_tensor(storage: Any, offset: Any, shape: Any, stride: Any, *rest: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise UnreadableInputError("a tensor without a storage in data.pkl")
    return check_fits(storage, offset, shape, stride)


def _rebuild_qtensor(storage: Any, offset: Any, shape: Any, stride: Any, *rest: Any) -> TensorRef:
    ref = _rebuild_tensor(storage, offset, shape, stride)
    return TensorRef(ref.storage, ref.offset, ref.shape, ref.stride, quantized=True)


def _build_list(items: Any, *rest: Any) -> list:
    return list(items) if isinstance(items, (list, tuple)) else []


@dataclass(frozen=True)
class ScriptArchive:
    """What the archive holds, read without running it."""

    path: Path
    prefix: str  # the archive's top folder, e.g. "model/"
    root: Any  # a ScriptObject (the top module) or plain data
    code: dict[str, str]  # code file name (under code/) -> text, for files up to a bounded size
    byteorder: str
    code_skipped: int = 0  # code files over the size bounds, not read


def _members(archive: zipfile.ZipFile) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    infos = {info.filename: info for info in archive.infolist()}
    pkl = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
    if not pkl:
        raise UnreadableInputError("a TorchScript archive without data.pkl")
    return pkl[0][: -len("data.pkl")], infos


def read_archive(path: Path, budget_bytes: int) -> ScriptArchive:
    """Open ``path``, unpickle its ``data.pkl`` into placeholders and tensor references, collect its code."""
    file_size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            prefix, infos = _members(archive)
            pkl = infos[prefix + "data.pkl"]
            if pkl.file_size > min(MAX_PICKLE_BYTES, budget_bytes):
                raise ResourceLimitError(f"data.pkl declares {pkl.file_size} bytes: refused")
            records = {}
            for name, info in infos.items():
                if name.startswith(prefix + "data/"):
                    if info.compress_type == zipfile.ZIP_STORED and info.file_size > file_size:
                        raise UnreadableInputError(f"record {name} claims {info.file_size} bytes in a file of "
                                                   f"{file_size}")
                    records[name[len(prefix) + 5:]] = info
            data = archive.read(pkl)
            try:
                root = _Unpickler(data, records, budget_bytes).load()
            except (UnreadableInputError, ResourceLimitError):
                raise
            except Exception as exc:  # a malformed pickle: any of pickle's many error types
                raise UnreadableInputError(f"data.pkl cannot be read ({type(exc).__name__})") from exc
            code, skipped, total = {}, 0, 0
            for name, info in infos.items():
                if name.startswith(prefix + "code/") and name.endswith(".py"):
                    if info.file_size > MAX_CODE_FILE_BYTES or total + info.file_size > MAX_CODE_TOTAL_BYTES:
                        skipped += 1
                        continue
                    total += info.file_size
                    try:
                        code[name[len(prefix) + 5:]] = archive.read(info).decode("utf-8", "replace")
                    except _ZIP_ERRORS:
                        continue
            order = infos.get(prefix + "byteorder")
            byteorder = archive.read(order).decode("ascii", "replace").strip() if order and order.file_size < 16 else "little"
    except (UnreadableInputError, ResourceLimitError) as exc:
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint) from exc
    except _ZIP_ERRORS + (KeyError,) as exc:
        raise UnreadableInputError(f"{path}: a damaged TorchScript archive ({type(exc).__name__}: {exc})") from exc
    return ScriptArchive(path=path, prefix=prefix, root=root, code=code, byteorder=byteorder, code_skipped=skipped)


@dataclass(frozen=True)
class ArchiveWeight:
    """A tensor of a TorchScript archive, read from its record on demand (WeightSource)."""

    path: str
    member: str
    ref: TensorRef
    byteorder: str = "little"

    def load(self) -> Any:
        import sys

        import torch

        nbytes = self.ref.storage.numel * _ITEMSIZE[self.ref.dtype]
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as handle:
                data = bytearray(handle.read(nbytes))
        except _ZIP_ERRORS + (KeyError,) as exc:
            raise UnreadableInputError(f"{self.path}: record {self.member} cannot be read ({exc})") from exc
        if len(data) < nbytes:
            raise UnreadableInputError(f"{self.path}: record {self.member} is truncated")
        dtype = getattr(torch, self.ref.dtype)
        if self.byteorder != sys.byteorder and _ITEMSIZE[self.ref.dtype] > 1:
            raise UnreadableInputError(f"{self.path}: a {self.byteorder}-endian archive is not supported")
        storage = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if nbytes else torch.UntypedStorage(0)
        tensor = torch.empty(0, dtype=dtype).set_(storage, self.ref.offset, self.ref.shape, self.ref.stride)
        return tensor


def tensors_of(archive: ScriptArchive) -> tuple[dict[str, tuple[TensorRef, Any]], list[tuple[str, Any]]]:
    """Every tensor reachable from the root, by dotted attribute path, and every module (path, object).

    Attribute dicts are walked (module attributes, lists of tensors as ``name.i``); a state that is not a
    dict (a class with its own ``__getstate__``) is walked as ``name.__state__.i``. Bounded in depth and size.
    """
    tensors: dict[str, tuple[TensorRef, Any]] = {}
    modules: list[tuple[str, Any]] = []
    count = 0

    def walk(value: Any, name: str, owner: Any, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_TREE_NODES or depth > MAX_DEPTH:
            raise UnreadableInputError(f"{archive.path}: the module tree is too deep or too large to read")
        if isinstance(value, TensorRef):
            tensors[name] = (value, owner)
        elif isinstance(value, ScriptObject):
            modules.append((name, value))
            state = value.state
            if isinstance(state, dict):
                for key, item in state.items():
                    walk(item, f"{name}.{key}" if name else str(key), value, depth + 1)
            else:
                walk(state, f"{name}.__state__" if name else "__state__", value, depth + 1)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{name}.{i}" if name else str(i), owner, depth + 1)

    walk(archive.root, "", None, 0)
    return tensors, modules


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def prescan_torch_file(path: Path, budget_bytes: int) -> None:
    """Check a torch.save file's declared storages and tensor views before torch allocates them.

    Zip files: every storage against its record and the budget; legacy files: the storages declared in the
    main pickle against the file's size. Tensors must fit their storages. Raises only
    :class:`ResourceLimitError` (or :class:`UnreadableInputError` for a view outside its storage); any
    other oddity is left to torch's own loader, which reads the file next.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                prefix, infos = _members(archive)
                pkl = infos[prefix + "data.pkl"]
                if pkl.file_size > min(MAX_PICKLE_BYTES, budget_bytes):
                    raise ResourceLimitError(f"data.pkl declares {pkl.file_size} bytes: refused")
                records = {n[len(prefix) + 5:]: i for n, i in infos.items() if n.startswith(prefix + "data/")}
                _Unpickler(archive.read(pkl), records, budget_bytes, lenient=True).load()
        else:
            size = path.stat().st_size
            with path.open("rb") as handle:
                reader = _Unpickler(handle, None, budget_bytes, lenient=True, file_size=size)
                if reader.load() != LEGACY_MAGIC:
                    return
                reader.load()  # protocol version
                reader.load()  # system info
                reader.load()
    except (ResourceLimitError, UnreadableInputError) as exc:
        if "malformed" in exc.message or "does not hold" in exc.message:
            return  # torch's loader gives its own error for these
        raise type(exc)(f"{path}: {exc.message}", hint=exc.hint) from exc
    except Exception:  # anything else: not ours to judge; torch's loader reads (or refuses) it next
        return
