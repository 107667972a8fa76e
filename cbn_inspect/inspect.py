"""The library's front door: a source in, a :class:`ModelReport` out.

``inspect_source`` = load (loaders) + ``analyze_model`` (analysis) + the bottleneck call. Reporters and the CLI
sit on top. Weights are read here, in this thread, one layer at a time, and at most ``threads`` layers are
in the analysis at once, so a lazy loader never holds the whole model twice.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from ._limits import TimeBudget, check_layer_count, check_memory, memory_room
from .analysis import analyze_layer, layer_evidence, layers_in_flight, locate_bottleneck, resolve_grid, submit_layer
from .analysis.layer import unit_axes
from .errors import CbnError, NothingToAnalyseError, ResourceLimitError, UnreadableInputError, UsageError
from .loaders import load, parse_input_size
from .records import ActivationSettings, LayerReport, LoadedModel, ModelReport, Settings


def _select_layers(loaded: LoadedModel, pattern: str | None):
    if not pattern:
        return loaded.layers
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"--layers {pattern!r} is not a valid regular expression: {exc}") from exc
    return tuple(layer for layer in loaded.layers if regex.search(layer.name))


def _warnings(loaded: LoadedModel, reports: list[LayerReport], settings: Settings) -> list[str]:
    out = list(loaded.source.notes)
    by_source = {r.layer.grid_source for r in reports}
    if "default" in by_source:
        out.append(
            f"no grid known for some layers: they were analysed on the default grid "
            f"({settings.default_grid} per axis, or the kernel size if larger); pass --grid to set it"
        )
    if settings.grid is not None and "metadata" in by_source:
        out.append("--grid ignored for layers whose grid the checkpoint's metadata declares")
    if any(r.layer.geometry_source == "assumed" for r in reports):
        out.append("groups, stride and padding are not declared by this checkpoint: assumed groups=1, "
                   "stride 1; spectra assume circular padding (approximate)")
    wrapped = [r.layer.name for r in reports if "wrapped-kernel" in r.flags]
    if wrapped:
        out.append(f"{len(wrapped)} layer(s) have kernels larger than their grid ({', '.join(wrapped[:5])}"
                   f"{', ...' if len(wrapped) > 5 else ''}): their taps were wrapped, so their spectra are those "
                   f"of the wrapped operator, not of the layer the network runs (exact: false; no strong call)")
    flagged = [r.layer.name for r in reports if "nonfinite" in r.flags]
    if flagged:
        out.append(f"{len(flagged)} layer(s) hold NaN/Inf weights and were not analysed: {', '.join(flagged[:5])}")
    return out


def _short(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _result(future, loaded: LoadedModel) -> LayerReport:
    """A layer's report; a MemoryError in its analysis is a resource limit, not a bug."""
    try:
        return future.result()
    except MemoryError as exc:
        raise ResourceLimitError(f"{loaded.source.path}: ran out of memory analysing a layer "
                                 "(try --layers, a smaller --grid or --memory-budget)") from exc


def _tick(progress, reports: list[LayerReport], total: int) -> None:
    if progress is not None:
        progress(len(reports), total, reports[-1].layer.name)


def _complete(reports: list[LayerReport], index: int, settings: Settings, loaded: LoadedModel):
    """Analyse layer ``index`` again on the full route (the bottleneck call needs its gap), replace its report
    in ``reports``, and return its metrics."""
    layer = reports[index].layer
    try:
        weight = layer.weight.load()
    except CbnError:
        raise
    except Exception as exc:
        raise UnreadableInputError(f"{loaded.source.path}: cannot read layer {layer.name}: {_short(exc)}") from exc
    report = analyze_layer(layer, weight, settings, route="full")
    reports[index] = report
    return report.metrics


def analyze_model(loaded: LoadedModel, settings: Settings | None = None,
                  progress: Callable[[int, int, str], None] | None = None) -> ModelReport:
    """Analyse every selected conv layer of a loaded model and locate its bottleneck.

    ``progress(done, total, layer_name)`` is called as each layer's analysis finishes (for a progress bar)."""
    settings = settings or Settings()
    started = time.perf_counter()
    layers = _select_layers(loaded, settings.layer_filter)
    if not layers:
        what = f"matching --layers {settings.layer_filter!r}" if settings.layer_filter else "(rank 3-5 '*.weight' tensors)"
        raise NothingToAnalyseError(f"{loaded.source.path}: no convolution weights {what}")
    clock = TimeBudget(settings.timeout_s, loaded.source.path)
    check_layer_count(len(layers), settings, loaded.source.path)
    unit = unit_axes(loaded.layers)
    layers = tuple(resolve_grid(layer, settings, unit.get(layer.ndim, frozenset())) for layer in layers)
    needs = check_memory(layers, settings, loaded.source.path)  # before any weight is read
    room = memory_room(settings)
    reports: list[LayerReport] = []
    window = layers_in_flight(settings)
    pending: deque = deque()  # (future, estimated bytes)
    try:
        for index, (layer, need) in enumerate(zip(layers, needs)):
            clock.check(f"after {index} of {len(layers)} layers")
            # keep layers in flight within the room --max-memory leaves (one at a time if need be)
            while pending and (len(pending) >= window or sum(n for _, n in pending) + need > room):
                reports.append(pending.popleft()[0].result())
                _tick(progress, reports, len(layers))
            try:
                weight = layer.weight.load()
            except CbnError:
                raise
            except MemoryError as exc:
                raise ResourceLimitError(f"{loaded.source.path}: out of memory reading layer {layer.name}") from exc
            except Exception as exc:
                raise UnreadableInputError(f"{loaded.source.path}: cannot read layer {layer.name}: "
                                           f"{_short(exc)}") from exc
            pending.append((submit_layer(layer, weight, settings), need))
            del weight
        while pending:
            reports.append(_result(pending.popleft()[0], loaded))
            _tick(progress, reports, len(layers))
    finally:
        for future, _ in pending:
            future.cancel()
    clock.check(f"after all {len(layers)} layers")
    names = [r.layer.name for r in reports]
    bottleneck = locate_bottleneck(names, [r.metrics for r in reports], settings,
                                   layers=[layer_evidence(r) for r in reports],
                                   counts_only=[i for i, r in enumerate(reports) if r.route == "counts"],
                                   full_metrics=lambda i: _complete(reports, i, settings, loaded))
    return ModelReport(
        source=loaded.source,
        settings=settings,
        layers=tuple(reports),
        bottleneck=bottleneck,
        skipped=loaded.skipped,
        order_source=loaded.order_source,
        order_confidence=loaded.confidence,
        warnings=tuple(_warnings(loaded, reports, settings)),
        seconds=round(time.perf_counter() - started, 4),
    )


def _is_module(source: object) -> bool:
    import sys

    torch = sys.modules.get("torch")  # a module object can only exist if torch is already imported
    return torch is not None and isinstance(source, torch.nn.Module)


def inspect_source(
    source: str | Path | Any,
    settings: Settings | None = None,
    *,
    trust_code: bool = False,
    trust_pickle: bool = False,
    key: str | None = None,
    arch: str | None = None,
    input_size: str | tuple[int, ...] | None = None,
    activations: ActivationSettings | str | None = None,
    onnx_branch: str = "then",
    progress: Callable[[int, int, str], None] | None = None,
    sha256: str | None = None,
    activation_progress: Callable[[int, int], None] | None = None,
) -> ModelReport:
    """Load ``source`` and analyse it: the whole job of ``cbn-inspect SOURCE``, as a library call.

    ``source`` is a path, ``timm:NAME``, or an ``nn.Module`` already in memory (traced at ``input_size``, or
    at its timm ``pretrained_cfg`` input size; without either, analysed untraced on the default grid).
    ``arch`` (``timm:NAME``) and ``input_size`` (``N``, ``HxW``, ``CxHxW``) are passed to :func:`load`.
    ``activations`` (an INPUTS spec such as ``"noise"``, ``"samples"``, a folder or a tensor file, or a full
    :class:`ActivationSettings`) also runs the model on those inputs and adds the activation profile as
    ``report.activations`` (see :mod:`cbn_inspect.activations`); ``activation_progress(done, total)`` is called
    after every batch; ``progress`` as for :func:`analyze_model`. ``onnx_branch`` is passed to :func:`load`.
    The report's ``source.sha256`` is the file's content hash (an index with its shards, as the audit keys
    rows); ``sha256`` passes one already computed. Running a TorchScript program or a whole pickled module needs ``trust_code``.
    """
    settings = settings or Settings()
    trust_code = trust_code or trust_pickle
    if _is_module(source):
        if arch:
            raise UsageError("arch applies to a checkpoint file; an nn.Module holds its own architecture")
        from .loaders.pytorch._trace import load_module
        from .records import SourceInfo

        info = SourceInfo(path=f"<{type(source).__name__}>", format="in-memory")
        loaded = load_module(source, info, size=parse_input_size(input_size), fold_batchnorm=settings.fold_batchnorm,
                             max_memory_mb=settings.max_memory_mb)
    elif not isinstance(source, (str, Path)):
        raise UsageError(f"cannot inspect a {type(source).__name__}: pass a path, 'timm:NAME' or an nn.Module")
    else:
        clock = TimeBudget(settings.timeout_s, str(source))
        loaded = load(source, trust_code=trust_code, key=key, fold_batchnorm=settings.fold_batchnorm,
                      arch=arch, input_size=input_size, max_memory_mb=settings.max_memory_mb,
                      onnx_branch=onnx_branch)
        digest = sha256 or loaded.source.sha256 or source_sha256(loaded.source.path)
        if digest:
            loaded = dataclasses.replace(loaded, source=dataclasses.replace(loaded.source, sha256=digest))
        clock.check("while loading")
        if settings.timeout_s is not None:  # what loading took counts against the budget
            left = settings.timeout_s - (time.monotonic() - clock.started)
            settings = dataclasses.replace(settings, timeout_s=max(left, 0.0))
    if activations is None:
        return analyze_model(loaded, settings, progress)
    if isinstance(activations, str):
        activations = ActivationSettings(inputs=activations, device=settings.device)
    if activations.input_size is None and input_size is not None:
        activations = dataclasses.replace(activations, input_size=parse_input_size(input_size))
    from .activations import open_runner, profile_activations

    # the runner first: a source that cannot run fails before any spectrum is computed
    runner = open_runner(source, loaded, side=activations.side, device=activations.device,
                         trust_code=trust_code, key=key)
    size_note = None
    if activations.input_size is None and runner.model_input.spatial is None:
        from .activations._image_size import size_from_images

        found = size_from_images(runner.model_input, activations.inputs, activations.max_inputs)
        if found is not None:  # images into a model that leaves its size open: their size, on both sides
            runner.model_input, size_note = found
            if loaded.source.format == "onnx":
                digest = loaded.source.sha256
                loaded = load(source, fold_batchnorm=settings.fold_batchnorm, max_memory_mb=settings.max_memory_mb,
                              input_size=(runner.model_input.channels, *runner.model_input.spatial),
                              onnx_branch=onnx_branch)
                notes = tuple(n.replace("(--input-size)", "(the size from the images)") for n in loaded.source.notes)
                loaded = dataclasses.replace(loaded, source=dataclasses.replace(loaded.source, sha256=digest,
                                                                                notes=notes))
            loaded = dataclasses.replace(loaded, source=dataclasses.replace(
                loaded.source, notes=loaded.source.notes + (size_note,)))  # once, among the report's warnings
    report = analyze_model(loaded, settings, progress)
    profile = profile_activations(runner, activations, settings, progress=activation_progress, size_note=size_note)
    return dataclasses.replace(report, activations=profile)


def source_sha256(path: str) -> str | None:
    """sha256 of a checkpoint's bytes (a sharded index with its shards, in sorted order); None for a
    ``timm:NAME`` source or a path that cannot be read. The audit's row keys hash files the same way."""
    import hashlib
    import json

    file = Path(path)
    if not file.is_file():
        return None
    files = [file]
    if file.name.endswith(".index.json"):
        try:
            shards = set(json.loads(file.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            shards = set()
        files += sorted(p for p in ((file.parent / s).absolute() for s in shards if isinstance(s, str)) if p.is_file())
    digest = hashlib.sha256()
    try:
        for one in files:
            with one.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
