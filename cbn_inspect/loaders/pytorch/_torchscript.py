"""TorchScript archives: read statically by default; run (``torch.jit.load`` and a trace) only when trusted.

``torch.jit.load`` executes TorchScript from the file (a class's ``__setstate__`` runs while loading), so
without ``trust_code`` an archive is read as data (:mod:`._script_archive`, :mod:`._script_code`): tensors
and module names from ``data.pkl``, conv geometry (stride, dilation, groups, transposed, padding mode) from
the code files' constants and conv calls, and the order of convs from the calls in ``forward``, all parsed,
never run. Grids are then not known (default grid, or ``--grid``), and ``--input-size`` is refused.

With ``trust_code`` and an input size, the program runs once on a zero input under a ``TorchDispatchMode``
that sees every ``aten`` convolution the interpreter executes, with its input shape (the grid), stride,
padding, dilation, groups and transposed flag, in execution order. The weight passed is matched to the
program's named parameters by storage, so each call gets its module name; a BatchNorm whose input is exactly
a conv's output is folded into it. An explicit pad feeding a conv (reflect, replicate, constant, and torch's
circular padding, which writes into a ``new_empty`` tensor) is seen too: the grid is the size before
padding, and the mode is the pad's (a scripted module's own ``padding_mode`` attribute wins where present).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from ...errors import UnreadableInputError, UnsafeContentError
from ...records import BatchNormParams, ConvLayer, InMemoryWeight, LoadedModel, SourceInfo
from .._statedict import TensorEntry, build_model
from ._static_script import read_static

CONV_OPS = ("convolution", "_convolution")
PAD_OPS = {"constant_pad_nd": "zeros", "reflection_pad1d": "reflect", "reflection_pad2d": "reflect",
           "reflection_pad3d": "reflect", "replication_pad1d": "replicate", "replication_pad2d": "replicate",
           "replication_pad3d": "replicate"}


def looks_like_torchscript(names: list[str]) -> bool:
    """A zip archive written by ``torch.jit.save``: it holds compiled code next to the pickled constants."""
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


_ITEMSIZE = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
             "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "QInt8": 1, "QUInt8": 1, "QInt32": 4}


def _declared_storages(data: bytes) -> list[tuple[str, str, int]]:
    """(key, storage type, element count) of each ``('storage', type, key, location, numel)`` persistent id
    in a pickle, read from its opcodes (nothing is unpickled). Empty when the opcodes do not parse."""
    import pickletools

    values: list[Any] = []
    memo: dict[int, Any] = {}
    out = []
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BININT", "BININT1", "BININT2",
                        "LONG1", "INT", "LONG"):
                values.append(arg)
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = values[-1] if values else None
            elif name == "MEMOIZE":
                memo[len(memo)] = values[-1] if values else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                values.append(memo.get(int(arg)))
            elif name == "BINPERSID":
                tail = values[-5:]
                if len(tail) == 5 and tail[0] == "storage" and isinstance(tail[1], str) and isinstance(tail[4], int):
                    out.append((str(tail[2]), tail[1].rsplit(" ", 1)[-1], tail[4]))
            values = values[-16:]
    except Exception:  # not a pickle torch can read either: torch.jit.load says so
        return []
    return out


def _check_storages(path: Path) -> None:
    """Refuse an archive whose pickles declare storages larger than their records (or records that are
    missing): torch.jit.load reads past the record and dies of SIGSEGV on them (found by fuzzing)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            pickles = [n for n in sizes if n.endswith(("/data.pkl", "/constants.pkl"))]
            contents = {n: archive.read(n) for n in pickles if sizes[n] <= 64 * 2**20}
    except Exception as exc:  # zipfile's errors for a corrupt member (zlib, CRC, version, names)
        raise UnreadableInputError(f"{path}: a damaged TorchScript archive ({type(exc).__name__}: {exc})") from exc
    for name, data in contents.items():
        folder = name.rsplit("/", 1)[0] + ("/data/" if name.endswith("/data.pkl") else "/constants/")
        for key, kind, numel in _declared_storages(data):
            need = numel * _ITEMSIZE.get(kind.removesuffix("Storage"), 1)
            have = sizes.get(folder + key)
            if have is None or have < need:
                raise UnreadableInputError(
                    f"{path}: storage {key} declares {need} bytes, its record holds "
                    f"{'none' if have is None else have}: a truncated or corrupt TorchScript archive")


def _jit_load(path: Path) -> Any:
    import torch

    _check_storages(path)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and friends for a broken archive
        text = " ".join(str(exc).split())[:160]
        raise UnreadableInputError(f"{path}: a TorchScript archive torch.jit.load cannot read ({text})") from exc


def _run(program: Any, shape: tuple[int, ...], max_memory_mb: int | None = None) -> tuple[list[dict], list[str]]:
    """Execute once on zeros; every aten convolution call (in order) and BatchNorm pairings by tensor identity."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    params = {t.untyped_storage().data_ptr(): n for n, t in program.state_dict().items()}
    calls: list[dict] = []
    outputs: dict[int, int] = {}
    padded: dict[int, tuple[tuple[int, ...], str]] = {}  # id(padded tensor) -> (grid before padding, mode)
    keep: list[Any] = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            op = func.overloadpacket.__name__
            if op in PAD_OPS or op == "new_empty":
                keep.append(out)
                mode = PAD_OPS.get(op, "circular")  # torch pads circularly into a new_empty tensor
                padded[id(out)] = (tuple(int(v) for v in args[0].shape[2:]), mode)
            elif op in CONV_OPS:
                x, w = args[0], args[1]
                stride, padding, dilation, transposed, _, groups = args[3:9]
                grid, mode = padded.get(id(x), (tuple(int(v) for v in x.shape[2:]), "zeros"))
                calls.append(dict(weight=params.get(w.untyped_storage().data_ptr()), shape=tuple(w.shape),
                                  grid=grid, mode=mode, stride=tuple(stride),
                                  dilation=tuple(dilation), transposed=bool(transposed), groups=int(groups),
                                  dtype=str(w.dtype).replace("torch.", ""), tensor=w, bn=None))
                keep.append(out)
                outputs[id(out)] = len(calls) - 1
            elif op in ("native_batch_norm", "_native_batch_norm_legit_no_training", "batch_norm",
                        "cudnn_batch_norm", "_batch_norm_impl_index"):
                index = outputs.get(id(args[0]))
                if index is not None and calls[index]["bn"] is None and args[4] is not None:
                    eps = float(args[-1])
                    calls[index]["bn"] = (args[1], args[4], eps, params.get(args[4].untyped_storage().data_ptr()))
            return out

    from .._policy import check_trace_input

    check_trace_input(tuple(shape), 4, max_memory_mb)
    notes: list[str] = []
    try:
        with torch.no_grad(), Watch():
            program(torch.zeros((1, *shape)))
    except Exception as exc:
        text = " ".join(str(exc).split())[:200]
        notes.append(f"running the program at input {_fmt(shape)} failed ({type(exc).__name__}: {text}): "
                     "grids unknown")
        return [], notes
    return calls, notes


def _padding_modes(program: Any) -> dict[str, str]:
    modes = {}
    for name, module in program.named_modules():
        try:
            mode = module.padding_mode
        except (AttributeError, RuntimeError):
            continue
        if isinstance(mode, str):
            modes[f"{name}.weight" if name else "weight"] = mode
    return modes


def read_torchscript(path: Path, *, size: tuple[int, ...] | None, fold_batchnorm: bool,
                     trust_code: bool = False, max_memory_mb: int | None = None) -> LoadedModel:
    """Statically unless ``trust_code`` and ``size`` are given; then the program is run once and traced."""
    from .._policy import allowed

    may_run = allowed("torchscript", "run-program", trust_code)
    if size is not None and not may_run:
        raise UnsafeContentError(
            "tracing a TorchScript program (--input-size) runs the code it holds and needs --trust-code",
            hint="pass --trust-code only for a file you trust, or drop --input-size to read its weights statically",
        )
    if not may_run or size is None:
        return read_static(path, fold_batchnorm=fold_batchnorm, max_memory_mb=max_memory_mb)
    program = _jit_load(path)
    info = SourceInfo(path=str(path), format="torchscript")
    tensors = {n: t for n, t in program.state_dict().items()}
    shape = None
    if size is not None:
        first = _first_conv(path, tensors, max_memory_mb)
        shape = tuple(size) if first is None or len(size) == first.ndim - 1 else (first.shape[1], *size)
        if len(shape) == 2 and first is not None and first.ndim == 4:
            shape = (shape[0], shape[1], shape[1])
    calls, notes = _run(program, shape, max_memory_mb) if shape else ([], [])
    if not calls:  # the trace failed (or saw no conv): the static read, which reads the code, not a bare state dict
        static = read_static(path, fold_batchnorm=fold_batchnorm, max_memory_mb=max_memory_mb)
        why = [*(notes or [f"running the program at input {_fmt(shape)} called no convolution"]),
               "fell back to the static read of the archive (no code run for it): order, strides and grids as "
               "the static reader gives them"]
        return dataclasses.replace(static, source=dataclasses.replace(
            static.source, notes=tuple(why) + tuple(static.source.notes)))
    modes = _padding_modes(program)
    layers, seen, unnamed = [], {}, 0
    for call in calls:
        name = call["weight"]
        if name is None:
            unnamed += 1
            name = f"conv_call{len(layers)}"
            call_notes = ("weight computed in the program (not a stored parameter): analysed as applied",)
        else:
            call_notes = ()
        if name in seen:
            seen[name] += 1
            continue
        seen[name] = 1
        bn = None
        if fold_batchnorm and call["bn"] is not None:
            gamma, var, eps, var_name = call["bn"]
            bn = BatchNormParams(name=(var_name or "batchnorm").rsplit(".", 1)[0],
                                 weight=None if gamma is None else gamma.detach(), running_var=var.detach(), eps=eps)
        layers.append(ConvLayer(
            name=name[: -len(".weight")] if name.endswith(".weight") else name, shape=call["shape"],
            dtype=call["dtype"], weight=InMemoryWeight(call["tensor"].detach()), order=len(layers),
            groups=call["groups"], stride=call["stride"], dilation=call["dilation"],
            transposed=call["transposed"], padding_mode=modes.get(name, call["mode"]), grid=call["grid"],
            grid_source="trace", geometry_source="trace", batchnorm=bn, notes=call_notes,
        ))
    notes.append(f"a TorchScript program, run once at input {_fmt(shape)}: grids, geometry and order traced")
    repeated = [n for n, c in seen.items() if c > 1]
    if repeated:
        notes.append(f"{len(repeated)} conv weight(s) used more than once: grid of the first use "
                     f"({', '.join(repeated[:3])})")
    return LoadedModel(source=dataclasses.replace(info, notes=tuple(notes)), layers=tuple(layers),
                       order_source="trace")


def _first_conv(path: Path, tensors: dict[str, Any], max_memory_mb: int | None) -> Any:
    """The weight of the conv that runs first (its input channels complete a spatial ``--input-size``): by the
    static read's order of forward's calls, which registration order (the state dict's) need not follow."""
    try:
        static = read_static(path, fold_batchnorm=False, max_memory_mb=max_memory_mb)
        name = min(static.layers, key=lambda layer: layer.order).name if static.layers else None
    except Exception:  # the static reader is best effort here: the trace decides
        name = None
    for key in ((f"{name}.weight", name) if name else ()):
        tensor = tensors.get(key)
        if tensor is not None and tensor.ndim in (3, 4, 5):
            return tensor
    return next((t for t in tensors.values() if t.ndim in (3, 4, 5) and t.is_floating_point()), None)


def _fmt(shape) -> str:
    return "x".join(str(v) for v in shape)
