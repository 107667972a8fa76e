"""The library's front door: a source in, a :class:`ModelReport` out.

``inspect_source`` = load (loaders) + ``analyze_model`` (analysis) + the bottleneck call. Reporters and the CLI
sit on top. Weights are read here, in this thread, one layer at a time, and at most ``threads`` layers are
in the analysis at once, so a lazy loader never holds the whole model twice.
"""

from __future__ import annotations

import re
import time
from collections import deque
from pathlib import Path

from .analysis import layers_in_flight, locate_bottleneck, resolve_grid, submit_layer
from .errors import CbnError, NothingToAnalyseError, ResourceLimitError, UnreadableInputError, UsageError
from .loaders import load
from .records import LayerReport, LoadedModel, ModelReport, Settings


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


def analyze_model(loaded: LoadedModel, settings: Settings | None = None) -> ModelReport:
    """Analyse every selected conv layer of a loaded model and locate its bottleneck."""
    settings = settings or Settings()
    started = time.perf_counter()
    layers = _select_layers(loaded, settings.layer_filter)
    if not layers:
        what = f"matching --layers {settings.layer_filter!r}" if settings.layer_filter else "(rank 3-5 '*.weight' tensors)"
        raise NothingToAnalyseError(f"{loaded.source.path}: no convolution weights {what}")
    reports: list[LayerReport] = []
    window = layers_in_flight(settings)
    pending: deque = deque()
    try:
        for layer in layers:
            layer = resolve_grid(layer, settings)
            try:
                weight = layer.weight.load()
            except CbnError:
                raise
            except MemoryError as exc:
                raise ResourceLimitError(f"{loaded.source.path}: out of memory reading layer {layer.name}") from exc
            except Exception as exc:
                raise UnreadableInputError(f"{loaded.source.path}: cannot read layer {layer.name}: "
                                           f"{_short(exc)}") from exc
            pending.append(submit_layer(layer, weight, settings))
            del weight
            while len(pending) > window:
                reports.append(_result(pending.popleft(), loaded))
        while pending:
            reports.append(_result(pending.popleft(), loaded))
    finally:
        for future in pending:
            future.cancel()
    names = [r.layer.name for r in reports]
    bottleneck = locate_bottleneck(names, [r.metrics for r in reports], settings)
    return ModelReport(
        source=loaded.source,
        settings=settings,
        layers=tuple(reports),
        bottleneck=bottleneck,
        skipped=loaded.skipped,
        order_source=loaded.order_source,
        warnings=tuple(_warnings(loaded, reports, settings)),
        seconds=round(time.perf_counter() - started, 4),
    )


def inspect_source(
    source: str | Path,
    settings: Settings | None = None,
    *,
    trust_code: bool = False,
    trust_pickle: bool = False,
    key: str | None = None,
    arch: str | None = None,
    input_size: str | tuple[int, ...] | None = None,
) -> ModelReport:
    """Load ``source`` and analyse it: the whole job of ``cbn-inspect SOURCE``, as a library call.

    ``arch`` (``timm:NAME``) and ``input_size`` (``N``, ``HxW``, ``CxHxW``) are passed to :func:`load`.
    """
    settings = settings or Settings()
    loaded = load(source, trust_code=trust_code or trust_pickle, key=key, fold_batchnorm=settings.fold_batchnorm,
                  arch=arch, input_size=input_size)
    return analyze_model(loaded, settings)
