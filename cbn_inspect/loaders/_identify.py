"""Identify the timm architecture of a bare state dict from its key and shape signature.

Honest and fast rather than exhaustive:

1. **Candidates** are the timm models whose ``pretrained_cfg`` names a first conv and a classifier that
   both appear (as ``NAME.weight``) in the state dict: read from timm's registry without building anything.
   Names hinted by the file (its file name or folder, a ``config.json``) are tried first.
2. Each candidate's **signature** (every state-dict key with its shape; the classifier's output rows left
   out, so fine-tuned heads match) is computed by building the model on the ``meta`` device (no memory, no
   arithmetic) and cached under ``$XDG_CACHE_HOME/cbn-inspect`` (``~/.cache/cbn-inspect``), keyed by the timm
   version: each architecture is built at most once per machine.
3. A match is **confident** when every key and every shape agree (BatchNorm ``num_batches_tracked``
   counters aside). Where several architectures match, their traced geometry is compared; if it is the
   same the first (in hint order, then by name) is used, and the others are named; if it differs there is
   no confident match, unless exactly one of them has published timm weights (the likeliest origin of a
   checkpoint): that one is used and the report names the others and says why. Otherwise the tool falls
   back to the default grid, naming the candidates.
"""

from __future__ import annotations

import functools

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

MAX_CANDIDATES = 400  # a ceiling on architectures built for one identification (first run only)


@dataclass(frozen=True)
class Identification:
    arch: str | None
    reason: str
    others: tuple[str, ...] = ()


def cache_dir() -> Path:
    root = os.environ.get("CBN_INSPECT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "cbn-inspect")
    return Path(root)


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value or ())


def _signature(shapes: Mapping[str, tuple[int, ...]], classifier: tuple[str, ...]) -> str:
    heads = {f"{c}.weight" for c in classifier} | {f"{c}.bias" for c in classifier}
    rows = sorted(
        f"{k}:{'x'.join(str(v) for v in (s[1:] if k in heads else s))}"
        for k, s in shapes.items() if not k.endswith("num_batches_tracked")
    )
    return hashlib.sha1("\n".join(rows).encode()).hexdigest()


class SignatureCache:
    """``{model name: signature}`` for one timm version, persisted as one small JSON file."""

    def __init__(self) -> None:
        import timm

        self.path = cache_dir() / f"timm-{timm.__version__}-signatures.json"
        try:
            self.data: dict[str, str | None] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.dirty = False

    def get(self, name: str, classifier: tuple[str, ...]) -> str | None:
        if name not in self.data:
            self.data[name] = _build_signature(name, classifier)
            self.dirty = True
        return self.data[name]

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.data, sort_keys=True))
            tmp.replace(self.path)
        except OSError:  # a read-only cache only costs time
            pass


def _build_signature(name: str, classifier: tuple[str, ...]) -> str | None:
    import timm
    import torch

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False)
    except Exception:  # an architecture that cannot be built on meta is simply not a candidate
        return None
    return _signature({k: tuple(v.shape) for k, v in model.state_dict().items()}, classifier)


@functools.lru_cache(maxsize=1)
def _registry() -> tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]:
    """(name, first conv names, classifier names) of every timm model: read once per process (timm deep-copies
    each config, about half a second in all, which an audit or ``track`` worker would otherwise pay per file)."""
    import timm
    from timm.models import get_pretrained_cfg

    out = []
    for name in timm.list_models():
        cfg = get_pretrained_cfg(name)
        if cfg is not None:
            out.append((name, tuple(_names(cfg.first_conv)), tuple(_names(cfg.classifier))))
    return tuple(out)


def _candidates(keys: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    return [(name, classifier) for name, first, classifier in _registry()
            if first and f"{first[0]}.weight" in keys and all(f"{c}.weight" in keys for c in classifier)]


def hint_names(hints: Iterable[str]) -> list[str]:
    """Lower-case tokens of file and folder names that could be model names (``resnet50.a1_in1k`` -> ...)."""
    out = []
    for hint in hints:
        stem = re.sub(r"\.(safetensors|pth?|bin|ckpt|tar)$", "", Path(hint).name.lower())
        out += [stem, stem.split(".")[0], stem.replace("-", "_")]
    return out


def identify(shapes: Mapping[str, tuple[int, ...]], hints: Iterable[str] = ()) -> Identification:
    """The timm architecture whose state dict has exactly these keys and shapes, if there is a confident one."""
    keys = set(shapes)
    candidates = _candidates(keys)
    if not candidates:
        return Identification(None, "no timm architecture has this state dict's first conv and classifier names")
    wanted = hint_names(hints)
    candidates.sort(key=lambda c: (c[0] not in wanted, c[0]))
    cache = SignatureCache()
    matches = []
    try:
        for name, classifier in candidates[:MAX_CANDIDATES]:
            if cache.get(name, classifier) == _signature(shapes, classifier):
                matches.append(name)
    finally:
        cache.save()
    checked = min(len(candidates), MAX_CANDIDATES)
    if not matches:
        return Identification(None, f"no exact key/shape match among {checked} timm architectures with these "
                                    "first-conv and classifier names")
    reason = f"every key and shape matches timm:{matches[0]} (checked {checked} candidate architectures)"
    if len(matches) > 1 and not _same_geometry(matches[:5], shapes):
        published = _with_published_weights(matches)
        if len(published) != 1:
            return Identification(None, f"keys and shapes match several timm architectures with different "
                                        f"geometry ({', '.join(matches[:5])}): pass --arch")
        others = [m for m in matches if m != published[0]]
        reason = (f"every key and shape matches timm:{published[0]}, the only match with published timm weights "
                  f"(checked {checked} candidates; {', '.join(others[:3])} match too but differ in geometry "
                  "and have none: pass --arch to choose one)")
        return Identification(published[0], reason, ())
    return Identification(matches[0], reason, tuple(matches[1:]))


def _with_published_weights(names: list[str]) -> list[str]:
    """The names among ``names`` for which timm lists pretrained weights (a checkpoint's likeliest origin)."""
    import timm

    published = {n.split(".", 1)[0] for n in timm.list_models(pretrained=True)}
    return [n for n in names if n in published]


def _same_geometry(names: list[str], shapes: Mapping[str, tuple[int, ...]]) -> bool:
    from ._timm import build_kwargs, trace_arch
    from .pytorch._trace import geometry_key

    keys = set()
    for name in names:
        specs, _ = trace_arch(name, None, [], **build_kwargs(name, shapes))
        keys.add(geometry_key(specs))
    return len(keys) == 1
