"""From a source to a :class:`Runner`: which sources can be executed, and how (one table, in this order).

| source | runner | needs |
| --- | --- | --- |
| ``timm:NAME`` | the timm architecture, timm's random initialisation (seed 0, the weight report's weights) | -- |
| a file with ``--arch timm:NAME``, a ``config.json`` folder, an identified state dict | the timm architecture with the file's weights | -- |
| a whole pickled ``nn.Module`` | the module | ``trust_code`` |
| a TorchScript archive | the program (:mod:`._torchscript`) | ``trust_code`` |
| ``.onnx`` | onnxruntime (:mod:`._onnx`) | custom-op domains: ``trust_code`` |
| a safetensors file whose metadata describes its architecture (the bundled samples) | the rebuilt network | -- |

Anything else (a bare state dict no architecture fits) raises :class:`NotExecutableError` (exit 11) naming
the ways out. The weight side's :class:`LoadedModel` is passed in, so the architecture it settled on
(flag, config, identification) is the one that runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import NotExecutableError, UsageError
from ..records import LoadedModel
from .runners import ModuleRunner, Runner, module_input, sample_module, timm_input

TIMM_PREFIX = "timm:"
WAYS_OUT = ("pass --arch timm:NAME for the architecture these weights belong to, or export the model to ONNX "
            "(or TorchScript, with --trust-code) and profile that file")


def open_runner(source: str | Path, loaded: LoadedModel | None = None, *, side: str = "input", device: str = "cpu",
                trust_code: bool = False, key: str | None = None) -> Runner:
    """A runner for ``source``; ``loaded`` is the weight side's result for it (its architecture is reused)."""
    from ..loaders import _resolve_path, detect_format

    if not isinstance(source, (str, Path)):  # an nn.Module in memory (the library's inspect_source(module))
        declared = (timm_input(source) if getattr(source, "pretrained_cfg", None)
                    else module_input(source, None, "an nn.Module in memory (no declared input size)"))
        return ModuleRunner(source, declared,
                            side=side, device=device, kind="module", notes=["an nn.Module passed in memory"])
    text = str(source)
    if text.startswith(TIMM_PREFIX) and not Path(text).exists():
        return _timm_random(text, side, device)
    path = _resolve_path(source)
    fmt = detect_format(path)
    if fmt == "torchscript":
        from ._torchscript import TorchScriptRunner, load_program

        return TorchScriptRunner(load_program(path, trust_code), side=side, device=device)
    if fmt == "onnx":
        from ._onnx import OnnxRunner

        return OnnxRunner(path, side=side, device=device, trust_code=trust_code)
    if fmt in ("tflite", "keras", "keras-h5"):
        raise NotExecutableError(f"{path}: --activations does not run {fmt} models (no TensorFlow runtime here)",
                                 hint="convert the model to ONNX (tf2onnx, or tflite2onnx for .tflite) and "
                                      "profile that file")
    tensors, metadata, module = _read_weights(path, fmt, trust_code, key)
    arch = loaded.source.architecture if loaded is not None else None
    if module is not None:
        return ModuleRunner(module, module_input(module, None, "whole module (no declared input size)"),
                            side=side, device=device, kind="module",
                            notes=["a whole pickled module, run under --trust-code"])
    if arch and arch.startswith(TIMM_PREFIX):
        config = _config(Path(source)) if Path(source).is_dir() else None
        return _timm_with_weights(arch, tensors, config, side, device, loaded.source.architecture_source)
    rebuilt = sample_module(tensors, metadata)
    if rebuilt is not None:
        model, model_input, note = rebuilt
        return ModuleRunner(model, model_input, side=side, device=device, kind="sample", notes=[note])
    raise NotExecutableError(f"{path}: --activations needs a model to run, and this file holds weights "
                             "without an architecture", hint=WAYS_OUT)


def _read_weights(path: Path, fmt: str, trust_code: bool, key: str | None):
    """The file's tensors by name (loaded), its metadata, and the module when it is a whole trusted one."""
    from ..loaders._safetensors import read_safetensors, read_sharded
    from ..loaders.pytorch._torchfile import entries_of, read_torch_object

    if fmt in ("safetensors", "safetensors-index"):
        entries, info = (read_safetensors if fmt == "safetensors" else read_sharded)(path)
        return {k: e.source.load() for k, e in entries.items()}, dict(info.metadata), None
    chosen, _notes, metadata = read_torch_object(path, trust=trust_code, key=key)
    if isinstance(chosen, torch.nn.Module):
        return {}, metadata, chosen
    return {k: e.source.load() for k, e in entries_of(chosen).items()}, metadata, None


def _config(folder: Path) -> dict[str, Any] | None:
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _timm_random(text: str, side: str, device: str) -> Runner:
    from ..loaders._timm import arch_name, create

    name = arch_name(text)
    torch.manual_seed(0)  # the same random initialisation the weight report analyses (loaders._timm)
    model = create(name, meta=False)
    return ModuleRunner(model, timm_input(model), side=side, device=device, kind="timm",
                        notes=[f"timm:{name} with timm's random initialisation (seed 0), as in the weight report"])


def _timm_with_weights(arch: str, tensors: dict[str, Any], config: dict | None, side: str, device: str,
                       how: str | None) -> Runner:
    from ..loaders._timm import arch_name, build_kwargs, create

    name = arch_name(arch)
    kwargs = build_kwargs(name, {k: tuple(v.shape) for k, v in tensors.items()})
    if config:
        kwargs.update({k: v for k, v in (config.get("model_args") or {}).items()
                       if isinstance(v, (int, float, str, bool)) and k not in ("pretrained", "pretrained_cfg_overlay")})
        kwargs.update({k: config[k] for k in ("num_classes", "in_chans") if isinstance(config.get(k), int)})
    model = create(name, meta=False, **kwargs)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise UsageError(f"the weights do not fit timm:{name} ({', '.join((missing + unexpected)[:3])})")
    cfg = config.get("pretrained_cfg") if config and isinstance(config.get("pretrained_cfg"), dict) else None
    return ModuleRunner(model, timm_input(model, cfg), side=side, device=device, kind="timm",
                        notes=[f"the file's weights in timm:{name} ({how or 'architecture'})"])
