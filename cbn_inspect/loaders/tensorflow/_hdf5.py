"""Reading a Keras HDF5 file's weights (``h5py``), in a forked child process.

HDF5 files are parsed by the HDF5 C library, which a damaged or hostile file can crash (a segmentation fault)
or send into an endless loop: in-process, either would end or stall the whole command (or an audit worker)
without a documented error. So the file is read in a child (``fork``, where the platform has it): the child
returns the config text, a little metadata and the numeric arrays; a child that dies is reported as a
damaged file (:class:`UnreadableInputError`, exit 3), one that does not finish within :func:`time_allowed`
as a resource limit (exit 7). Only numeric datasets are read, counted against ``--max-memory`` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import errors
from ...errors import CbnError, ResourceLimitError, UnreadableInputError

READ_BASE_S = 5.0  # a small file's allowance (the HDF5 library reads one in milliseconds)
READ_RATE = 32 * 2**20  # bytes per second allowed beyond it


def time_allowed(size: int) -> float:
    return READ_BASE_S + size / READ_RATE


@dataclass
class Weights:
    """Arrays by layer: ``by_name`` (legacy files: var name -> array) or ``by_path`` (Keras 3: numbered)."""

    by_name: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    by_path: dict[tuple[str, ...], list[np.ndarray]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # legacy layer_names


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _read(dataset: Any, budget: list[int]) -> np.ndarray | None:
    """A dataset's array, counted against the memory budget (None for non-numeric data)."""
    if dataset.dtype.kind not in "fiu" or dataset.ndim > 6:
        return None
    need = int(np.prod(dataset.shape, dtype=np.int64)) * dataset.dtype.itemsize
    budget[0] -= need
    if budget[0] < 0:
        raise ResourceLimitError("the Keras weights need more than --max-memory")
    return np.asarray(dataset[()])


def _collect(h5: Any, limit: int) -> Weights:
    """Every layer's arrays, from either layout, without reading anything but numeric datasets."""
    import h5py

    out, budget = Weights(), [limit]
    root = h5["model_weights"] if "model_weights" in h5 and isinstance(h5["model_weights"], h5py.Group) else h5
    names = root.attrs.get("layer_names")
    if names is not None:  # legacy: a group per layer, its weight_names in order
        for raw in list(names)[:100_000]:
            name = _text(raw)
            out.order.append(name)
            group = root.get(name)
            if not isinstance(group, h5py.Group):
                continue
            for wraw in list(group.attrs.get("weight_names", []))[:10_000]:
                wname = _text(wraw)
                dataset = group.get(wname)
                if isinstance(dataset, h5py.Dataset):
                    parts = wname.split(":")[0].split("/")
                    owner = parts[-2] if len(parts) > 1 else name
                    array = _read(dataset, budget)
                    if array is not None:
                        out.by_name.setdefault(name, {})[parts[-1]] = array
                        if owner != name:  # a nested model's inner layer (or a name-scope suffix: conv_1_1)
                            out.by_name.setdefault(owner, {})[parts[-1]] = array
                            out.by_name.setdefault(_strip_suffix(owner), {}).setdefault(parts[-1], array)
        return out

    def visit(group: Any, path: tuple[str, ...], depth: int) -> None:
        if depth > 32:
            return
        for key in list(group.keys())[:100_000]:
            item = group.get(key)
            if not isinstance(item, h5py.Group):
                continue
            if key == "vars":
                arrays = []
                for i in sorted((k for k in item.keys() if k.isdigit()), key=int):
                    ds = item.get(i)
                    arrays.append(_read(ds, budget) if isinstance(ds, h5py.Dataset) else None)
                out.by_path[path] = arrays
            elif key in ("layers", "_layer_checkpoint_dependencies"):
                visit(item, path, depth + 1)
            else:
                visit(item, path + (key,), depth + 1)

    visit(h5, (), 0)
    return out


def _strip_suffix(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def _contents(source: Any, limit: int, where: str) -> tuple[str | None, dict[str, str], Weights]:
    """(model_config text, metadata, weights) of an open-able HDF5 source; runs in the child."""
    import h5py

    try:
        with h5py.File(source, "r") as h5:
            raw = h5.attrs.get("model_config")
            text = None if raw is None else raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            metadata = {k: _text(h5.attrs[k]) for k in ("keras_version", "backend") if k in h5.attrs}
            if "layer_names" not in h5.attrs and "model_weights" not in h5 and "layers" not in h5 \
                    and "_layer_checkpoint_dependencies" not in h5:
                raise UnreadableInputError(f"{where}: an HDF5 file without Keras weights (no layer_names, "
                                           "model_weights or layers)")
            return text, metadata, _collect(h5, limit)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError, UnicodeDecodeError) as exc:
        raise UnreadableInputError(f"{where}: not a readable Keras HDF5 file "
                                   f"({' '.join(str(exc).split())[:120]})") from exc


def _quiet() -> None:
    """In the child: no crash dump or native library message on the user's terminal (the parent says what
    happened, in one line)."""
    import faulthandler
    import os

    faulthandler.disable()
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass


def read_contents(source: Any, limit: int, where: str, size: int) -> tuple[str | None, dict[str, str], Weights]:
    """:func:`_contents` in a forked child; in-process where ``fork`` is not available."""
    import multiprocessing

    try:
        context = multiprocessing.get_context("fork")
    except ValueError:
        return _contents(source, limit, where)
    receiver, sender = context.Pipe(duplex=False)

    def child() -> None:
        _quiet()
        try:
            result: tuple = ("ok", _contents(source, limit, where))
        except CbnError as error:
            result = ("cbn", type(error).__name__, error.message, error.hint)
        except BaseException as exc:  # noqa: BLE001 -- reported by the parent as a damaged file
            result = ("failed", f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
        sender.send(result)

    process = context.Process(target=child, daemon=True)
    process.start()
    sender.close()
    seconds = time_allowed(size)
    try:
        result = receiver.recv() if receiver.poll(seconds) else None
        timed_out = result is None and process.is_alive()
    except EOFError:  # the child died before it could answer
        result, timed_out = None, False
    finally:
        receiver.close()
        process.join(0.5 if result is None else 5)
        if process.is_alive():
            process.kill()
            process.join()
    if result is None and timed_out:
        raise ResourceLimitError(f"{where}: the HDF5 library did not finish reading it within {seconds:.0f} s "
                                 "(a damaged file, or one far larger than it looks)")
    if result is None:
        raise UnreadableInputError(f"{where}: the HDF5 library crashed reading it (exit status "
                                   f"{process.exitcode}): a damaged HDF5 file")
    if result[0] == "ok":
        return result[1]
    if result[0] == "cbn":
        cls = getattr(errors, result[1], UnreadableInputError)
        raise cls(result[2], hint=result[3])
    raise UnreadableInputError(f"{where}: not a readable Keras HDF5 file ({result[1]})")
