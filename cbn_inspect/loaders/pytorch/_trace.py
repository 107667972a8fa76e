"""Grids, geometry and execution order of an ``nn.Module``'s convolutions, from one forward pass with hooks.

:func:`trace_convs` runs the module once on a zero input (on the module's own device, ``meta`` included,
where nothing is computed) with a pre-hook on every conv module, and records for each conv what it really
sees: the spatial size of its input (THEORY.md's grid), stride, dilation, groups, padding mode, transposed
or not, and the order in which it ran. A BatchNorm whose input is exactly a conv's output is paired with it
(the module graph, not the names, decides). Convs that did not run are kept, with their declared geometry
and no grid, and the reason.

The result is a list of :class:`ConvSpec` (geometry only, no weights); :func:`bind_specs` joins specs with
a name -> tensor mapping (the module's own parameters, or a checkpoint file's lazy entries) to make
:class:`ConvLayer` records. timm convs whose stored weight is not the kernel applied are named as such:
``StdConv2d``/``ScaledStdConv2d`` are analysed on the standardised kernel, ``CondConv2d`` per expert,
``MixedConv2d`` per split (its splits are ordinary child convs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ...errors import ResourceLimitError, UnreadableInputError
from ..._parse import parse_input_size  # noqa: F401  (re-exported)
from ...records import BatchNormParams, ConvLayer, InMemoryWeight, WeightSource

STANDARDISED = ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame")


@dataclass(frozen=True)
class ConvSpec:
    """One conv as the trace found it; ``weight_key`` names its stored weight in the state dict."""

    name: str
    weight_key: str
    shape: tuple[int, ...]
    dtype: str
    groups: int
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    transposed: bool
    padding_mode: str
    grid: tuple[int, ...] | None
    ran: bool
    transform: str = "none"  # none | standardise | expert
    eps: float = 0.0  # standardisation epsilon
    gain_key: str | None = None  # ScaledStdConv2d: per-channel gain, times ``scale``
    scale: float = 1.0
    expert: int | None = None
    batchnorm: tuple[str, float] | None = None  # (BatchNorm module name, eps)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StandardisedWeight:
    """The kernel a weight-standardised conv applies: per output channel, zero mean and unit variance."""

    base: WeightSource
    eps: float
    gain: WeightSource | None = None
    scale: float = 1.0

    def load(self) -> Any:
        import torch

        weight = self.base.load().detach()
        flat = weight.reshape(weight.shape[0], -1).to(torch.float64)
        mean = flat.mean(dim=1, keepdim=True)
        var = flat.var(dim=1, unbiased=False, keepdim=True)
        out = (flat - mean) / torch.sqrt(var + self.eps)
        if self.gain is not None:
            out = out * (self.gain.load().detach().reshape(-1, 1).to(torch.float64) * self.scale)
        return out.reshape(weight.shape).to(weight.dtype)


@dataclass(frozen=True)
class ExpertWeight:
    """One expert's kernel of a ``CondConv2d`` weight bank ``(num_experts, prod(shape))``."""

    base: WeightSource
    index: int
    shape: tuple[int, ...]

    def load(self) -> Any:
        return self.base.load()[self.index].reshape(self.shape)


def _axes(value: Any, d: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * d
    return tuple(int(v) for v in value)


def _is_conv(module: Any) -> bool:
    from torch.nn.modules.conv import _ConvNd

    return isinstance(module, _ConvNd) or _is_condconv(module)


def _is_condconv(module: Any) -> bool:
    return type(module).__name__ == "CondConv2d" and hasattr(module, "weight_shape") and hasattr(module, "num_experts")


def _specs_of(name: str, module: Any, parent: str | None, grid: tuple[int, ...] | None, ran: bool) -> list[ConvSpec]:
    """The spec(s) of one conv module: one, or one per expert of a ``CondConv2d``."""
    import torch

    kind = type(module).__name__
    weight = module.weight
    if isinstance(weight, torch.nn.parameter.UninitializedParameter):
        return []
    notes: list[str] = []
    if parent == "MixedConv2d":
        notes.append(f"split {name.rsplit('.', 1)[-1]} of MixedConv2d {name.rsplit('.', 1)[0]}")
    if _is_condconv(module):
        shape = tuple(int(v) for v in module.weight_shape)
        d = len(shape) - 2
        common = dict(
            weight_key=f"{name}.weight", shape=shape, dtype=str(weight.dtype).replace("torch.", ""),
            groups=int(module.groups), stride=_axes(module.stride, d), dilation=_axes(module.dilation, d),
            transposed=False, padding_mode="zeros", grid=grid, ran=ran, transform="expert",
        )
        return [
            ConvSpec(name=f"{name}.expert{e}", expert=e,
                     notes=(*notes, f"expert {e} of {module.num_experts} of CondConv2d {name} "
                            "(the kernel applied mixes experts per input)"), **common)
            for e in range(int(module.num_experts))
        ]
    d = weight.ndim - 2
    spec = ConvSpec(
        name=name, weight_key=f"{name}.weight", shape=tuple(int(v) for v in weight.shape),
        dtype=str(weight.dtype).replace("torch.", ""), groups=int(module.groups),
        stride=_axes(module.stride, d), dilation=_axes(module.dilation, d),
        transposed=bool(module.transposed), padding_mode=str(getattr(module, "padding_mode", "zeros")),
        grid=grid, ran=ran, notes=tuple(notes),
    )
    if kind in STANDARDISED:
        scaled = kind.startswith("Scaled")
        return [dataclasses.replace(
            spec, transform="standardise", eps=float(module.eps),
            gain_key=f"{name}.gain" if scaled else None, scale=float(getattr(module, "scale", 1.0)),
            notes=spec.notes + (f"{kind}: analysed the standardised kernel it applies, not the stored weight",),
        )]
    if type(module).forward not in _PLAIN_FORWARDS():
        spec = dataclasses.replace(spec, notes=spec.notes + (
            f"{kind} overrides forward: the stored weight was analysed; it may differ from the kernel applied",))
    return [spec]


def _PLAIN_FORWARDS() -> set[Callable]:
    import torch.nn as nn

    return {cls.forward for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                                    nn.ConvTranspose3d)}


def trace_convs(model: Any, input_shape: tuple[int, ...] | None,
                max_memory_mb: int | None = None) -> tuple[list[ConvSpec], list[str]]:
    """Run ``model`` once on zeros of ``(1, *input_shape)`` and describe every conv module; also return notes.

    With ``input_shape=None`` nothing runs: the specs carry the modules' declared geometry and no grid.
    """
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    modules = dict(model.named_modules())
    parents = {}
    for name, module in modules.items():
        for child, _ in module.named_children():
            parents[f"{name}.{child}" if name else child] = type(module).__name__
    convs = {name: m for name, m in modules.items() if _is_conv(m) and name}
    seen: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    outputs: dict[int, str] = {}
    keep: list[Any] = []  # conv outputs stay referenced during the pass, so their ids stay unique
    pairs: dict[str, tuple[str, float]] = {}
    notes: list[str] = []

    def pre_hook(name):
        def hook(module, args):
            calls[name] = calls.get(name, 0) + 1
            if name not in seen and args and isinstance(args[0], torch.Tensor):
                seen[name] = tuple(int(v) for v in args[0].shape[2:])
        return hook

    def post_hook(name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                keep.append(output)
                outputs[id(output)] = name
        return hook

    def bn_hook(bn_name):
        def hook(module, args):
            conv = outputs.get(id(args[0])) if args else None
            if conv and conv not in pairs and not module.training and module.track_running_stats:
                pairs[conv] = (bn_name, float(module.eps))
        return hook

    handles = []
    ran_ok = input_shape is not None
    if input_shape is not None:
        for name, module in convs.items():
            handles.append(module.register_forward_pre_hook(pre_hook(name)))
            handles.append(module.register_forward_hook(post_hook(name)))
        for name, module in modules.items():
            if isinstance(module, _BatchNorm):
                handles.append(module.register_forward_pre_hook(bn_hook(name)))
        # each module's own mode, restored after the pass (also when the user's forward fails)
        modes = {m: m.training for m in modules.values()}
        try:
            first = next(iter(model.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
            dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
            if device.type != "meta":
                from .._policy import check_trace_input

                check_trace_input(tuple(input_shape), torch.empty((), dtype=dtype).element_size(), max_memory_mb)
            model.eval()
            with torch.no_grad():
                model(torch.zeros((1, *input_shape), device=device, dtype=dtype))
        except ResourceLimitError:
            raise
        except Exception as exc:  # any failure of the user's forward: keep declared geometry, say why
            ran_ok = False
            text = " ".join(str(exc).split())[:200]
            notes.append(f"the traced forward pass at input {_fmt(input_shape)} failed "
                         f"({type(exc).__name__}: {text}): grids unknown")
            seen.clear()
            pairs.clear()
        finally:
            for module, training in modes.items():
                module.training = training
            for handle in handles:
                handle.remove()
            keep.clear()

    specs: list[tuple[int, ConvSpec]] = []
    order = {name: i for i, name in enumerate(seen)}
    missing = []
    for name, module in convs.items():
        ran = name in seen
        if ran_ok and not ran:
            missing.append(name)
        for spec in _specs_of(name, module, parents.get(name), seen.get(name), ran):
            if name in pairs:
                spec = dataclasses.replace(spec, batchnorm=pairs[name])
            if calls.get(name, 0) > 1:
                spec = dataclasses.replace(spec, notes=spec.notes + (
                    f"ran {calls[name]} times in the forward pass: grid of the first call",))
            if ran_ok and not ran:
                spec = dataclasses.replace(spec, notes=spec.notes + ("did not run in the traced forward pass",))
            specs.append((order.get(name, len(order)), spec))
    if missing:
        notes.append(f"{len(missing)} conv module(s) did not run in the traced forward pass "
                     f"(grids unknown): {', '.join(missing[:5])}")
    specs.sort(key=lambda item: item[0])  # stable: modules that did not run keep registration order
    return [spec for _, spec in specs], notes


def module_tensors(model: Any) -> dict[str, WeightSource]:
    """The module's parameters and buffers as weight sources, by state-dict name."""
    return {name: InMemoryWeight(t.detach()) for name, t in model.state_dict(keep_vars=True).items()
            if t is not None}


def bind_specs(
    specs: list[ConvSpec],
    tensors: Mapping[str, WeightSource],
    *,
    fold_batchnorm: bool = True,
    traced: bool = True,
) -> list[ConvLayer]:
    """ConvLayers for ``specs``, weights taken from ``tensors`` (lazily: nothing is read but BatchNorm vectors)."""
    layers = []
    for i, spec in enumerate(specs):
        base = tensors.get(spec.weight_key)
        if base is None:
            raise UnreadableInputError(f"no tensor {spec.weight_key} for conv {spec.name}")
        weight: WeightSource = base
        if spec.transform == "standardise":
            gain = tensors.get(spec.gain_key) if spec.gain_key else None
            weight = StandardisedWeight(base=base, eps=spec.eps, gain=gain, scale=spec.scale)
        elif spec.transform == "expert":
            weight = ExpertWeight(base=base, index=int(spec.expert or 0), shape=spec.shape)
        bn = None
        notes = spec.notes
        if fold_batchnorm and spec.batchnorm is not None:
            bn_name, eps = spec.batchnorm
            var = tensors.get(f"{bn_name}.running_var")
            gamma = tensors.get(f"{bn_name}.weight")
            if var is not None:
                bn = BatchNormParams(name=bn_name, weight=gamma.load() if gamma is not None else None,
                                     running_var=var.load(), eps=eps)
            else:
                notes = notes + (f"BatchNorm {bn_name} follows it but has no running_var: not folded",)
        ran = traced and spec.ran and spec.grid is not None
        layers.append(ConvLayer(
            name=spec.name, shape=spec.shape, dtype=spec.dtype, weight=weight, order=i, groups=spec.groups,
            stride=spec.stride, dilation=spec.dilation, transposed=spec.transposed,
            padding_mode=spec.padding_mode if spec.padding_mode in _MODES else "unknown",
            grid=spec.grid if ran else None, grid_source="trace" if ran else "default",
            geometry_source="trace" if ran else "metadata", batchnorm=bn, notes=notes,
        ))
    return layers


_MODES = ("circular", "zeros", "reflect", "replicate")


def geometry_key(specs: list[ConvSpec]) -> tuple:
    """What a spectrum depends on, per layer: used to tell whether two architectures analyse alike."""
    return tuple((s.weight_key, s.shape, s.groups, s.stride, s.dilation, s.transposed, s.padding_mode, s.grid,
                  s.transform) for s in specs)


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


def module_input_shape(model: Any, size: tuple[int, ...] | None, first: ConvSpec | None) -> tuple[int, ...] | None:
    """(C, *spatial) for tracing a module: ``size`` completed with the first conv's channels, or the
    module's own ``pretrained_cfg['input_size']`` (timm modules); None when neither says."""
    cfg = getattr(model, "pretrained_cfg", None)
    if size is None and isinstance(cfg, Mapping) and cfg.get("input_size"):
        return tuple(int(v) for v in cfg["input_size"])
    if size is None or first is None:
        return size
    d = len(first.shape) - 2
    chans = first.shape[0] if first.transposed else first.shape[1] * first.groups
    if len(size) == 1:
        return (chans, *(size * d))
    return tuple(size) if len(size) == d + 1 else (chans, *size)


def trace_module(model: Any, size: tuple[int, ...] | None, max_memory_mb: int | None = None) -> tuple[list[ConvSpec], list[str], tuple[int, ...] | None, bool]:
    """The conv specs of a module, traced at ``size`` (or its own input size) when one is known.

    Returns the specs (in execution order when traced, else a natural sort of names), the trace's notes, the
    input shape traced (None when not traced) and whether the trace ran. :class:`cbn_inspect.Monitor` keeps
    the specs and binds the live weights to them at every analysis (:func:`bind_specs`).
    """
    from .._statedict import natural_key

    declared, _ = trace_convs(model, None)
    shape = module_input_shape(model, size, declared[0] if declared else None)
    if shape is None:
        return sorted(declared, key=lambda s: natural_key(s.name)), [], None, False
    specs, notes = trace_convs(model, shape, max_memory_mb)
    traced = any(s.ran for s in specs)
    if not traced:
        specs = sorted(specs, key=lambda s: natural_key(s.name))
    return specs, notes, shape, traced


def load_module(model: Any, info: Any, *, size: tuple[int, ...] | None, fold_batchnorm: bool,
                max_memory_mb: int | None = None):
    """A whole ``nn.Module`` (unpickled with trust): traced when an input size is known, else declared only."""
    import dataclasses as dc

    from ...records import LoadedModel

    specs, trace_notes, shape, traced = trace_module(model, size, max_memory_mb)
    notes = list(info.notes)
    if shape is None:
        notes.append("a whole module, not traced: pass --input-size to trace grids and execution order; "
                     "geometry is the modules' own")
        layers = bind_specs(specs, module_tensors(model), fold_batchnorm=False, traced=False)
        return LoadedModel(source=dc.replace(info, format=info.format + "-module", notes=tuple(notes)),
                           layers=tuple(layers), order_source="natural-sort")
    notes.append(f"a whole module ({type(model).__name__}); grids traced at input {_fmt(shape)}")
    notes.extend(trace_notes)
    layers = bind_specs(specs, module_tensors(model), fold_batchnorm=fold_batchnorm, traced=traced)
    return LoadedModel(source=dc.replace(info, format=info.format + "-module", notes=tuple(notes)),
                       layers=tuple(layers), order_source="trace" if traced else "natural-sort")
