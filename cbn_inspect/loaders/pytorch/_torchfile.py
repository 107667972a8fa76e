"""PyTorch checkpoint files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``), loaded with ``weights_only=True``.

A checkpoint is untrusted input: its pickle is read by torch's restricted unpickler, which builds tensors
and plain containers and refuses every other global. A file that needs more is refused with
:class:`UnsafeContentError`, naming what it asked for and the explicit way out (``--trust-pickle``, for
files the user trusts). Wrappers are unwrapped (``state_dict``, ``model``, EMA copies, Lightning) and the
prefixes of ``DataParallel`` and ``torch.compile`` stripped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from ...errors import CbnError, ResourceLimitError, UnreadableInputError, UnsafeContentError, UsageError
from ...records import InMemoryWeight, SourceInfo
from ._pickle_scan import placeholders, refusal, unsafe_globals
from .._policy import allowed
from .._statedict import TensorEntry

# Looked up in this order; the first that holds tensors is the model. EMA copies come after the raw model.
WRAPPER_KEYS = (
    "state_dict", "model_state_dict", "model", "module", "net", "network", "params",
    "model_ema", "state_dict_ema", "ema_state_dict", "ema",
)
STRIPPED_PREFIXES = ("module.", "_orig_mod.")


def _torch_load(path: Path, trust: bool) -> tuple[Any, list[str]]:
    """The file's object, and notes. Untrusted: torch's weights-only unpickler; globals of other libraries
    (omegaconf containers, argparse namespaces in Lightning hyper-parameters) become inert placeholders, while a
    global that means code (:func:`._pickle_scan.refusal`) is refused."""
    import pickle

    try:
        return _plain_load(path, trust), []
    except pickle.UnpicklingError as exc:
        text = " ".join(str(exc).split())
        if "Weights only load failed" not in text:
            raise UnreadableInputError(f"{path}: not a readable PyTorch checkpoint ({_reason(text)})") from exc
        unsafe = _unsafe_globals(path, text)
        if not unsafe:
            raise UnreadableInputError(f"{path}: not a readable PyTorch checkpoint ({_reason(text)})") from exc
        refused = [why for why in map(refusal, unsafe) if why]
        if refused:
            raise UnsafeContentError(
                f"{path}: refused: the pickle asks for {', '.join(unsafe[:3])}, which could run code ({refused[0]})",
                hint="if you trust this file, re-run with --trust-code (alias --trust-pickle)",
            ) from exc
        return _load_with_placeholders(path, unsafe, exc)


def _plain_load(path: Path, trust: bool, safe: list | None = None) -> Any:
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if safe:
                with torch.serialization.safe_globals(safe):
                    return torch.load(str(path), map_location="cpu", weights_only=True)
            return torch.load(str(path), map_location="cpu",
                              weights_only=not allowed("pytorch", "unpickle-objects", trust))
    except (pickle.UnpicklingError, CbnError):
        raise
    except MemoryError as exc:
        raise ResourceLimitError(f"{path}: ran out of memory while unpickling") from exc
    except RecursionError as exc:
        raise UnreadableInputError(f"{path}: not a readable PyTorch checkpoint (nested too deeply)") from exc
    except Exception as exc:  # torch.load lets out whatever a corrupt file provokes: struct.error,
        # AssertionError, UnicodeDecodeError, zipfile's NotImplementedError, ... all of it is the file's fault
        detail = _reason(str(exc)) if isinstance(exc, (RuntimeError, ValueError, OSError)) else ""
        detail = detail or f"{type(exc).__name__} while unpickling"
        raise UnreadableInputError(f"{path}: not a readable PyTorch checkpoint ({detail})") from exc


def _unsafe_globals(path: Path, text: str) -> list[str]:
    """Every global the file names that torch's allowlist does not take (read from the opcodes, nothing run)."""
    import torch

    names: list[str] = []
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # a legacy (non-zip) file, or a torch without the helper: scan the opcodes ourselves
        names = unsafe_globals(path) or []
    if not names:
        named = re.search(r"(?:Unsupported global:?|unsupported GLOBAL)\s*(?:GLOBAL\s+)?([\w.]+)", text)
        names = [named.group(1)] if named else []
    return sorted(set(names))


def _load_with_placeholders(path: Path, unsafe: list[str], original: Exception) -> tuple[Any, list[str]]:
    import pickle

    try:
        obj = _plain_load(path, False, placeholders(unsafe))
    except pickle.UnpicklingError as exc:
        text = " ".join(str(exc).split())
        raise UnsafeContentError(
            f"{path}: refused: objects of other libraries ({', '.join(unsafe[:3])}) need more than inert "
            f"placeholders to load ({_reason(text)})",
            hint="if you trust this file, re-run with --trust-code (alias --trust-pickle)",
        ) from original
    note = (f"the checkpoint names {len(unsafe)} class(es) of other libraries, kept as inert placeholders "
            f"(never imported, nothing run): {', '.join(unsafe)}")
    return obj, [note]


def _reason(text: str) -> str:
    """The informative part of torch's (long, multi-paragraph) load error."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s+Check the documentation|$)", text)
    return (found.group(1) if found else _first_line(text))[:160]


def _first_line(text: str) -> str:
    text = text.replace("Weights only load failed.", "").strip()
    return (text.splitlines() or [""])[0][:160]


def _holds_tensors(value: Any) -> bool:
    import torch

    if isinstance(value, torch.nn.Module):
        return True
    return isinstance(value, Mapping) and any(
        isinstance(v, torch.Tensor) or (isinstance(v, Mapping) and _holds_tensors(v)) for v in value.values()
    )


def _select(obj: Any, key: str | None) -> tuple[Any, list[str]]:
    notes: list[str] = []
    if key:
        for part in key.split("."):
            if not isinstance(obj, Mapping) or part not in obj:
                raise UsageError(f"--key {key}: the checkpoint has no entry {part!r}")
            obj = obj[part]
        return obj, notes
    if isinstance(obj, Mapping):
        present = [k for k in WRAPPER_KEYS if k in obj and _holds_tensors(obj[k])]
        if present:
            if len(present) > 1:
                others = ", ".join(present[1:])
                notes.append(f"analysed '{present[0]}'; the checkpoint also holds {others} (pick with --key)")
            return obj[present[0]], notes
    return obj, notes


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    out: dict[str, Any] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _strip(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in STRIPPED_PREFIXES:
            if name.startswith(p):
                name, changed = name[len(p) :], True
    return name


def read_torch_object(path: Path, *, trust: bool = False, key: str | None = None):
    """The checkpoint's object holding the model (a state dict, or an ``nn.Module`` when trusted), notes, metadata."""
    obj, load_notes = _torch_load(path, trust)
    try:
        chosen, notes = _select(obj, key)
        notes = load_notes + notes
        metadata = {}
        if isinstance(obj, Mapping):
            meta = obj.get("cbn_inspect_metadata") or obj.get("metadata")
            if isinstance(meta, Mapping):
                metadata = {str(k): str(v) for k, v in meta.items() if isinstance(v, (str, int, float))}
    except RecursionError as exc:  # containers nested thousands deep
        raise UnreadableInputError(f"{path}: not a readable PyTorch checkpoint (nested too deeply)") from exc
    return chosen, notes, metadata


def entries_of(chosen: Any) -> dict[str, TensorEntry]:
    """Named tensors of a state dict (nested mappings flattened, wrapper prefixes stripped) or a module.

    Tensors without data (``meta`` tensors) are left out: there are no weights to analyse.
    """
    import torch

    try:
        tensors = {_strip(k): v for k, v in _flatten(chosen).items()}
    except RecursionError as exc:
        raise UnreadableInputError("the checkpoint's state dict is nested too deeply to read") from exc
    return {
        name: TensorEntry(name=name, shape=tuple(t.shape), dtype=str(t.dtype).replace("torch.", ""),
                          source=InMemoryWeight(t))
        for name, t in tensors.items()
        if isinstance(t, torch.Tensor) and not t.is_sparse and not t.is_meta and t.layout == torch.strided
    }


def read_torch_file(path: Path, *, trust: bool = False, key: str | None = None):
    chosen, notes, metadata = read_torch_object(path, trust=trust, key=key)
    entries = entries_of(chosen)
    return entries, SourceInfo(path=str(path), format="pytorch", metadata=metadata, notes=tuple(notes))
