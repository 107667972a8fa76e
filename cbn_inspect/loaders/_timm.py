"""timm architectures: ``timm:NAME`` sources, ``--arch timm:NAME`` for a file's weights, timm model folders.

The architecture comes from timm's registry with ``pretrained=False`` (nothing is ever downloaded). Grids,
geometry and order come from a trace (:mod:`.pytorch._trace`) of the architecture on the ``meta`` device: shapes
only, no arithmetic and no memory, so a trace of resnet50 at 224 takes a fraction of a second. The weights
are the file's (read lazily, layer by layer) or, for ``timm:NAME`` alone, a fresh random initialisation.
The input size is the model's ``pretrained_cfg['input_size']`` unless the caller gives one.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Mapping

from ..errors import UnreadableInputError, UsageError
from ..records import LoadedModel, SourceInfo
from .pytorch._trace import ConvSpec, bind_specs, trace_convs

PREFIX = "timm:"


def arch_name(text: str) -> str:
    """``timm:resnet50`` (or ``resnet50``) -> ``resnet50``; a pretrained tag (``.a1_in1k``) is dropped."""
    name = text[len(PREFIX):] if text.startswith(PREFIX) else text
    if ":" in name or not name:
        raise UsageError(f"--arch {text!r}: only timm architectures are known, e.g. timm:resnet50")
    return name.split(".", 1)[0]


def _check_known(name: str) -> None:
    import timm

    if not timm.is_model(name):
        import difflib

        names = timm.list_models()
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)  # most similar first: resnet5 -> resnet50
        close += [n for n in timm.list_models(f"*{name}*") if n not in close][: 5 - len(close)]
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise UsageError(f"timm has no architecture {name!r}", hint=hint)


def create(name: str, *, meta: bool, **kwargs: Any):
    """``timm.create_model(name, pretrained=False)``, on the meta device when ``meta``; errors wrapped."""
    import timm
    import torch

    _check_known(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if meta:
                with torch.device("meta"):
                    model = timm.create_model(name, pretrained=False, **kwargs)
            else:
                model = timm.create_model(name, pretrained=False, **kwargs)
    except Exception as exc:  # timm raises many kinds for bad kwargs
        raise UsageError(f"timm could not build {name!r} ({type(exc).__name__}: {exc})") from exc
    return model.eval()


def input_shape(model: Any, size: tuple[int, ...] | None, channels: int | None = None) -> tuple[int, ...]:
    """(C, H, W) for the trace: ``size`` (spatial, or with channels) over the model's ``pretrained_cfg``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    default = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224)))
    chans = channels or default[0]
    if size is None:
        return (chans, *default[1:])
    if len(size) == 1:
        size = size * (len(default) - 1)
    return tuple(size) if len(size) == len(default) else (chans, *size)


def trace_arch(name: str, size: tuple[int, ...] | None, notes: list[str], how: str = "",
               **kwargs: Any) -> tuple[list[ConvSpec], Any]:
    """Specs of architecture ``name`` traced on the meta device; also the meta model (for its state dict)."""
    model = create(name, meta=True, **kwargs)
    shape = input_shape(model, size, kwargs.get("in_chans"))
    specs, trace_notes = trace_convs(model, shape)
    notes.append(f"architecture timm:{name}{how} (pretrained=False); grids traced at input {_fmt(shape)}")
    notes.extend(trace_notes)
    return specs, model


def load_timm(name: str, *, size: tuple[int, ...] | None, fold_batchnorm: bool,
              model_kwargs: Mapping[str, Any] | None = None) -> LoadedModel:
    """``timm:NAME``: the architecture with random weights (a known-answer baseline: no bottleneck expected).

    ``model_kwargs`` go to ``timm.create_model`` (library use: e.g. narrower variants for quick checks).
    """
    name = arch_name(name)
    kwargs = dict(model_kwargs or {})
    notes: list[str] = []
    specs, _ = trace_arch(name, size, notes, f" {kwargs}" if kwargs else "", **kwargs)
    holder = _RandomModel(name, tuple(sorted(kwargs.items())))
    notes.append("weights are timm's random initialisation (seed 0): nothing was downloaded")
    tensors = {key: _ModelTensor(holder, key) for key in _state_keys(specs)}
    layers = bind_specs(specs, tensors, fold_batchnorm=fold_batchnorm)
    info = SourceInfo(path=f"{PREFIX}{name}", format="timm", notes=tuple(notes),
                      architecture=f"{PREFIX}{name}", architecture_source="source")
    return LoadedModel(source=info, layers=tuple(layers), order_source="trace")


class _RandomModel:
    """The randomly initialised model, built on first use (a listing never builds it)."""

    def __init__(self, name: str, kwargs: tuple) -> None:
        self.name, self.kwargs, self.tensors = name, kwargs, None

    def get(self, key: str) -> Any:
        if self.tensors is None:
            import torch

            torch.manual_seed(0)
            model = create(self.name, meta=False, **dict(self.kwargs))
            self.tensors = {k: v.detach() for k, v in model.state_dict().items()}
        return self.tensors.get(key)


@dataclasses.dataclass(frozen=True)
class _ModelTensor:
    holder: _RandomModel = dataclasses.field(compare=False)
    key: str

    def load(self) -> Any:
        return self.holder.get(self.key)


def _state_keys(specs: list[ConvSpec]) -> set[str]:
    keys = set()
    for spec in specs:
        keys.add(spec.weight_key)
        if spec.gain_key:
            keys.add(spec.gain_key)
        if spec.batchnorm:
            keys.update({f"{spec.batchnorm[0]}.weight", f"{spec.batchnorm[0]}.running_var"})
    return keys


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value or ()]


def build_kwargs(name: str, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """``num_classes``/``in_chans`` read off the checkpoint's classifier and first conv (pretrained_cfg names)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    kwargs: dict[str, Any] = {}
    if cfg is None:
        return kwargs
    classifier = _names(cfg.classifier)
    if classifier:
        rows = [shapes[f"{c}.weight"][0] for c in classifier if f"{c}.weight" in shapes]
        kwargs["num_classes"] = rows[0] if rows else 0
    first = _names(cfg.first_conv)
    if first and f"{first[0]}.weight" in shapes and len(shapes[f"{first[0]}.weight"]) == 4:
        kwargs["in_chans"] = shapes[f"{first[0]}.weight"][1]
    return kwargs


def compare(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Differences between an architecture's state dict and a checkpoint's (``num_batches_tracked`` ignored)."""
    def real(keys):
        return {k for k in keys if not k.endswith("num_batches_tracked")}

    diffs = [f"missing {k}" for k in sorted(real(expected) - real(found))]
    diffs += [f"unexpected {k}" for k in sorted(real(found) - real(expected))]
    diffs += [f"{k}: {_fmt(found[k])} in the file, {_fmt(expected[k])} in the architecture"
              for k in sorted(real(expected) & real(found)) if tuple(expected[k]) != tuple(found[k])]
    return diffs


def load_with_arch(
    entries: Mapping[str, Any],
    info: SourceInfo,
    arch: str,
    *,
    size: tuple[int, ...] | None,
    fold_batchnorm: bool,
    how: str = "given with --arch",
    model_kwargs: Mapping[str, Any] | None = None,
    architecture_source: str = "flag",
) -> LoadedModel:
    """A checkpoint's tensors (``TensorEntry`` by name) analysed in a timm architecture's geometry."""
    name = arch_name(arch)
    _check_known(name)
    shapes = {k: tuple(e.shape) for k, e in entries.items()}
    kwargs = {**build_kwargs(name, shapes), **dict(model_kwargs or {})}
    notes = list(info.notes)
    specs, meta_model = trace_arch(name, size, notes, f" {how}", **kwargs)
    expected = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    diffs = compare(expected, shapes)
    if diffs:
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise UsageError(f"{info.path}: the weights do not fit timm:{name} ({'; '.join(diffs[:3])}{more})",
                         hint="check --arch, or leave it out to analyse the file as a bare state dict")
    layers = bind_specs(specs, {k: e.source for k, e in entries.items()}, fold_batchnorm=fold_batchnorm)
    info = dataclasses.replace(_with_notes(info, notes), architecture=f"{PREFIX}{name}",
                               architecture_source=architecture_source)
    return LoadedModel(source=info, layers=tuple(layers), order_source="trace")


def read_config(folder: Path) -> tuple[str, dict[str, Any], tuple[int, ...] | None] | None:
    """A timm/Hugging Face ``config.json``: (architecture, model kwargs, input size) or None if it names none."""
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UnreadableInputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        return None
    name = config.get("architecture") or config.get("model_name")
    if not isinstance(name, str):
        return None
    kwargs = {k: v for k, v in (config.get("model_args") or {}).items()
              if isinstance(v, (int, float, str, bool)) and k not in ("pretrained", "pretrained_cfg_overlay")}
    for key in ("num_classes", "in_chans"):
        if isinstance(config.get(key), int):
            kwargs[key] = config[key]
    cfg = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    size = cfg.get("input_size")
    size = tuple(int(v) for v in size) if isinstance(size, list) and all(isinstance(v, int) for v in size) else None
    return name, kwargs, size


def _with_notes(info: SourceInfo, notes: list[str]) -> SourceInfo:
    return dataclasses.replace(info, notes=tuple(notes))


def _fmt(shape) -> str:
    return "x".join(str(v) for v in shape)
