"""Runners: execute a model on a batch and hand every conv layer's feature map to a sink, in execution order.

A runner knows how to execute one kind of model and what input it expects (:class:`ModelInput`); it
knows nothing about Gram matrices. ``run(batch, sink)`` calls ``sink(name, tensor)`` once per conv call, in
the order the layers ran, with the feature map the layer reads (``side="input"``) or writes
(``side="output"``). The torch runners return the model's output (``cbn-inspect needs`` compares it under
interventions). Names are the weight report's layer names (module names; for ONNX the loader's node
names), so the two profiles line up.

This module holds the ``torch.nn.Module`` runner (timm architectures, whole trusted modules, the bundled
samples rebuilt from their metadata); :mod:`._torchscript` and :mod:`._onnx` hold the other two.

Why the input side by default: the representation a layer *receives* is what THEORY.md's activation
profile is about (which frequencies and channels the data occupies when it reaches the layer); a conv's
output is the next layer's input up to the nonlinearity, and with ``side="output"`` it is profiled before
the nonlinearity, where for a full-size circular layer it lies in the range of ``W_hat(m)`` at every
frequency (so its counts can never exceed the weight counts).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch

from .inputs import ModelInput

Sink = Callable[[str, Any], None]


class Runner(Protocol):
    kind: str  # timm, module, sample, torchscript, onnxruntime
    model_input: ModelInput
    notes: list[str]

    def run(self, batch: torch.Tensor, sink: Sink) -> Any:
        ...


def _is_conv(module: Any) -> bool:
    from ..loaders.pytorch._trace import _is_conv as is_conv

    return is_conv(module) or isinstance(module, CircularConv)


class ModuleRunner:
    """An ``nn.Module`` in eval mode, with a forward (pre-)hook on every conv module."""

    def __init__(self, module: torch.nn.Module, model_input: ModelInput, *, side: str, device: str,
                 kind: str = "module", notes: list[str] | None = None) -> None:
        self.module = module.eval().to(device)
        self.model_input = model_input
        self.side = side
        self.device = device
        self.kind = kind
        self.notes = list(notes or [])
        self.convs = [(name, m) for name, m in self.module.named_modules() if _is_conv(m)]
        if not self.convs:
            from ..errors import NothingToAnalyseError

            raise NothingToAnalyseError("the model has no convolution modules to profile")

    def run(self, batch: torch.Tensor, sink: Sink) -> Any:
        handles = []
        for name, conv in self.convs:
            if self.side == "input":
                handles.append(conv.register_forward_pre_hook(
                    lambda _m, args, name=name: sink(name, args[0]) if args and torch.is_tensor(args[0]) else None))
            else:
                handles.append(conv.register_forward_hook(
                    lambda _m, _a, out, name=name: sink(name, out) if torch.is_tensor(out) else None))
        try:
            with torch.no_grad():
                return self.module(batch.to(self.device))
        finally:
            for handle in handles:
                handle.remove()


def module_input(module: torch.nn.Module, size: tuple[int, ...] | None, source: str) -> ModelInput:
    """A whole module declares no input size: channels and axes from its first conv, size from the flag."""
    first = next((m for _, m in module.named_modules() if _is_conv(m) and hasattr(m, "weight")), None)
    weight = getattr(first, "weight", None)
    ndim = weight.ndim - 2 if weight is not None else 2
    channels = getattr(first, "in_channels", None) or (weight.shape[1] if weight is not None else 3)
    return ModelInput(channels=int(channels), spatial=None, ndim=ndim, source=source)


def timm_input(model: Any, config_cfg: dict | None = None) -> ModelInput:
    """Input size, mean, std, interpolation and crop of a timm model's ``pretrained_cfg`` (a config's wins)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update({k: v for k, v in (config_cfg or {}).items() if v is not None})
    size = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224)))
    mean = cfg.get("mean")
    std = cfg.get("std")
    return ModelInput(channels=size[0], spatial=size[1:], ndim=len(size) - 1,
                      mean=tuple(float(v) for v in mean) if mean else None,
                      std=tuple(float(v) for v in std) if std else None,
                      interpolation=str(cfg.get("interpolation") or "bicubic"),
                      crop_pct=float(cfg.get("crop_pct") or 1.0),
                      source="config.json pretrained_cfg" if config_cfg else "timm pretrained_cfg")


# ----------------------------------------------------------------------------------------------------------
# The bundled samples (sample_checkpoints/make_samples.py), rebuilt from their metadata
# ----------------------------------------------------------------------------------------------------------


class CircularConv(torch.nn.Module):
    """A full-size circular convolution as the samples store it: ``conv(pad(x, (0, n-1) circular), W)``.

    PyTorch's cross-correlation with the input wrapped by n-1 on the far side of every axis:
    ``y[p] = sum_u W[:, :, u] x[:, (p + u) mod n]``, exactly the samples' ``kernel_convention``.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.weight.ndim - 2
        taps = self.weight.shape[2:]
        pad: list[int] = []
        for t in reversed(taps):
            pad += [0, t - 1]
        x = torch.nn.functional.pad(x, pad, mode="circular")
        conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[d - 1]
        return conv(x, self.weight)


class CircularStack(torch.nn.Module):
    """``layers.{i}``: full-size circular convs, an activation between them (ReLU or none), none after the last."""

    def __init__(self, weights: list[torch.Tensor], relu: bool) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(CircularConv(w) for w in weights)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.relu and i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class DigitsCNN(torch.nn.Module):
    """The ``digits_cnn`` sample: ``features.{i}`` = 3x3 conv (zero padding 1) + BatchNorm + ReLU, GAP, linear."""

    def __init__(self, strides: list[int], shapes: list[tuple[int, ...]], classes: int) -> None:
        super().__init__()
        blocks = []
        for stride, shape in zip(strides, shapes):
            block = torch.nn.Module()
            block.conv = torch.nn.Conv2d(shape[1], shape[0], shape[2], stride=stride, padding=shape[2] // 2, bias=False)
            block.bn = torch.nn.BatchNorm2d(shape[0])
            blocks.append(block)
        self.features = torch.nn.ModuleList(blocks)
        self.classifier = torch.nn.Linear(shapes[-1][0], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.features:
            x = torch.relu(block.bn(block.conv(x)))
        return self.classifier(x.mean(dim=(-2, -1)))


# Declared in a safetensors file's metadata: the nonlinearity between the layers of a full-size circular
# stack ("relu" or "none"). The samples say it in prose ("ReLU between layers"), which is read too.
ACTIVATION_KEY = "cbn_inspect.activation"


def sample_module(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[torch.nn.Module, ModelInput, str] | None:
    """Rebuild a network whose metadata describes its architecture, or None when it describes none.

    Two families: a stack of full-size circular convs (every ``cbn_inspect.layers`` entry circular, kernel
    = grid, stride 1, groups 1, in the declared order) with the nonlinearity declared by
    ``cbn_inspect.activation`` or the samples' "ReLU between layers"; and the ``digits_cnn`` sample.
    """
    import json

    try:
        layers = json.loads(metadata.get("cbn_inspect.layers", "{}"))
        order = json.loads(metadata.get("cbn_inspect.order", "[]"))
    except ValueError:
        return None
    if not layers or not order or set(order) != set(layers):
        return None
    arch = metadata.get("architecture", "")
    keys = [f"{name}.weight" for name in order]
    if any(k not in tensors for k in keys):
        return None
    if arch.startswith("conventional CNN: 3x3 conv (zero padding 1, no bias) + BatchNorm + ReLU blocks"):
        return _digits(tensors, layers, order)
    circular = all(
        spec.get("padding_mode") == "circular" and all(s == 1 for s in spec.get("stride", [1]))
        and spec.get("groups", 1) == 1 and not spec.get("transposed", False)
        and list(tensors[f"{name}.weight"].shape[2:]) == list(spec.get("grid", []))
        for name, spec in layers.items()
    )
    declared = metadata.get(ACTIVATION_KEY)
    if declared is None and "ReLU between layers" in arch:
        declared = "relu"
    if not circular or declared not in ("relu", "none"):
        return None
    weights = [tensors[k] for k in keys]
    grid = tuple(layers[order[0]]["grid"])
    model = CircularStack(weights, relu=declared == "relu")
    how = "metadata" if ACTIVATION_KEY in metadata else "sample metadata (architecture)"
    return model, ModelInput(channels=int(weights[0].shape[1]), spatial=grid, ndim=len(grid), source=how), (
        f"rebuilt from the {how}: {len(weights)} full-size circular convs, "
        f"{'ReLU' if declared == 'relu' else 'no nonlinearity'} between them")


def _digits(tensors, layers, order):
    strides = [int(layers[n]["stride"][0]) for n in order]
    shapes = [tuple(tensors[f"{n}.weight"].shape) for n in order]
    if [f"features.{i}.conv" for i in range(len(order))] != order or "classifier.weight" not in tensors:
        return None
    model = DigitsCNN(strides, shapes, int(tensors["classifier.weight"].shape[0]))
    state = {k: v for k, v in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith("num_batches_tracked")] or unexpected:
        return None
    grid = tuple(layers[order[0]]["grid"])
    return model, ModelInput(channels=shapes[0][1], spatial=grid, ndim=2, source="sample metadata (architecture)"), (
        "rebuilt from the sample metadata (architecture): 3x3 conv + BatchNorm + ReLU blocks, pooling, linear")
