"""Name the globals a pickle would import, by reading its opcodes without executing any of them.

Used when torch's weights-only unpickler gives up without naming the reason (an unsupported opcode, say):
the scan tells a harmless-but-unusual pickle from one that would import ``os.system``. ``pickletools``
only decodes opcodes; nothing is imported, constructed or called.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

# Globals a checkpoint of tensors legitimately names (module prefixes).
SAFE_PREFIXES = (
    "torch.", "collections.OrderedDict", "collections.defaultdict", "builtins.set", "builtins.frozenset",
    "builtins.slice", "builtins.complex", "builtins.bytearray", "_codecs.encode", "numpy.core.multiarray._reconstruct",
    "numpy.ndarray", "numpy.dtype", "numpy._core.multiarray._reconstruct", "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
)
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def pickle_globals(data: bytes) -> list[str]:
    """Every ``module.name`` the pickles in ``data`` reference (a legacy torch file holds several in a row).

    ``?`` stands for a name built in a way the scan cannot follow. Raises if ``data`` does not start with
    a pickle; bytes after the last complete pickle (raw tensor storage) are ignored.
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    first = True
    while stream.tell() < len(data):
        strings: list[str] = []
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in _STRING_OPS and isinstance(arg, str):
                    strings.append(arg)
                elif opcode.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL":
                    found.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
        except Exception:
            if first:
                raise
            break
        first = False
    return found


def _pickle_bytes(path: Path) -> list[bytes]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    return [path.read_bytes()]


def unsafe_globals(path: Path) -> list[str] | None:
    """Globals outside :data:`SAFE_PREFIXES`, or None when the file cannot be decoded as a pickle at all."""
    try:
        names = [name for blob in _pickle_bytes(path) for name in pickle_globals(blob)]
    except Exception:  # not a pickle, or a truncated one: the caller reports the file as unreadable
        return None
    return sorted({n for n in names if not n.startswith(SAFE_PREFIXES)})


# Modules whose globals mean running code (or reaching the system), whatever the name: a pickle naming one is
# refused, never stood in for. torch and numpy globals that torch's own allowlist does not take are refused too.
CODE_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "importlib", "runpy", "shutil", "socket",
    "pickle", "_pickle", "marshal", "ctypes", "code", "codeop", "pty", "webbrowser", "multiprocessing", "signal",
    "functools", "operator", "types", "inspect", "io", "_io", "timeit", "pdb", "platform", "threading", "asyncio",
    "torch", "numpy", "copyreg", "_codecs", "codecs", "gc", "weakref", "tempfile", "glob", "urllib", "http",
    "requests", "dill", "cloudpickle", "joblib", "yaml", "json", "zipimport", "pkgutil", "site", "sysconfig",
})


# Plain data types a pickle may name as values (omegaconf stores ``object_type: builtins.dict``) or build data
# with: the real types are used, since calling them only makes containers and numbers.
DATA_TYPES = {f"{module}.{t.__name__}": t for module in ("builtins", "__builtin__")
              for t in (dict, list, tuple, set, frozenset, int, float, str, bytes, bool, complex, bytearray, slice,
                        range)}
DATA_TYPES.update({"__builtin__.long": int, "__builtin__.unicode": str})  # protocol-2 pickles' Python 2 names


def _collections() -> dict[str, type]:
    import collections

    return {f"collections.{t.__name__}": t for t in (collections.OrderedDict, collections.defaultdict,
                                                       collections.deque, collections.Counter)}


def refusal(name: str) -> str | None:
    """Why a global the pickle names may not become an inert placeholder, or None when it may.

    A placeholder is allowed for a class-like name (``Upper`` first letter) of a module that is not a code
    module: ``omegaconf.dictconfig.DictConfig``, ``argparse.Namespace``, ``typing.Any``. Functions
    (lower-case names: ``os.system``, ``builtins.eval``, ``pkg.make_model``) are what REDUCE would call, and are
    refused, as is anything the scan could not resolve.
    """
    module, _, attr = name.rpartition(".")
    if name in DATA_TYPES or name in _collections():
        return None
    if not module or not attr or name == "?":
        return "a global the scan cannot name"
    if module.split(".")[0] in CODE_MODULES:
        return f"{name} belongs to {module.split('.')[0]}, a module that runs code"
    if not attr[:1].isupper():
        return f"{name} is a function, which the pickle would call"
    return None


class InertPlaceholder:
    """Stands in for a class a checkpoint names (hyper-parameters of other libraries) without importing it.

    Construction and state are recorded, nothing else: the real class is never imported, none of its code
    runs. ``global_name`` is the ``module.Class`` it replaces.
    """

    global_name = "?"

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert placeholder for {self.global_name}>"


def placeholders(names: list[str]) -> list[tuple[type, str]]:
    """One fresh placeholder class per global name, as ``(class, "module.Name")`` for torch's safe_globals
    (the real type for :data:`DATA_TYPES` and the ``collections`` containers)."""
    out: list[tuple[type, str]] = []
    real = {**DATA_TYPES, **_collections()}
    for name in names:
        if name in real:
            out.append((real[name], name))
            if name.startswith("__builtin__."):  # torch maps a protocol-2 pickle's Python 2 names to these
                out.append((real[name], f"builtins.{real[name].__name__}"))
            continue
        cls = type(name.rpartition(".")[2], (InertPlaceholder,), {"global_name": name, "__module__": __name__})
        out.append((cls, name))
    return out
