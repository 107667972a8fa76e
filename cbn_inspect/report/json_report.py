"""The JSON report: one function builds it, one schema (``cbn_inspect/schema/report.schema.json``) fixes it.

Keys come in a stable order; non-finite floats become ``null`` (the analysis flags such layers), degree keys
are strings (JSON objects have string keys). Renaming or removing a field bumps ``SCHEMA_VERSION``.

Numbers measured from spectra are rounded to 7 significant digits under ``--precision float32`` (float32
carries about 7; the spectra themselves are accurate to about 1e-5 relative, README "Speed") and written in
full (shortest round-trip repr of the float64) under ``--precision float64``; ``number_format`` says which.
Scores the analysis rounds itself (``strength``, 4 decimals) and timings (4 digits) are not affected.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from .._version import SCHEMA_VERSION, __version__
from ..records import (ActivationLayerReport, ActivationReport, Bottleneck, LayerMetrics, LayerReport, ModelReport,
                       Settings, Spectrum)

FLOAT32_DIGITS = 7
# Order sources that are only a guess from layer names (THEORY.md: a natural sort of names).
GUESSED_ORDERS = ("natural-sort", "name", "names")


def _num(value: float | None, digits: int | None = FLOAT32_DIGITS) -> float | None:
    """A finite float rounded to ``digits`` significant digits (None: unrounded); non-finite -> None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value) if digits is None else float(f"{value:.{digits}g}")


def significant_digits(settings: Settings) -> int | None:
    """Digits kept in the JSON for numbers measured from spectra: 7 for float32, None (all) for float64."""
    return None if settings.precision == "float64" else FLOAT32_DIGITS


def order_is_guessed(order_source: str, confidence: str | None = None) -> bool:
    """Whether the layer order is only a guess: from names (no trace, metadata or file declared it), or a
    chain recovered with low confidence."""
    return order_source in GUESSED_ORDERS or "natural" in order_source or confidence == "low"


def _degrees(counts: Mapping[int, Any], cast=int) -> dict[str, Any]:
    return {str(k): cast(v) for k, v in sorted(counts.items())}


def format_type(counts: Mapping[int, int]) -> str:
    """``{0: 3, 1: 4, 2: 1}`` -> ``"3 @ deg 0, 4 @ deg 1, 1 @ deg 2"``."""
    return ", ".join(f"{v} @ deg {k}" for k, v in sorted(counts.items()))


def _settings(settings: Settings) -> dict[str, Any]:
    return {
        "grid": {
            "flag": list(settings.grid) if settings.grid else None,
            "default": settings.default_grid,
            "preference": ["trace", "metadata", "flag", "default"],
        },
        "tolerance": {
            "rule": settings.tolerance.name,
            "value": settings.tolerance.value,
            "description": settings.tolerance.describe(),
        },
        "degree_metric": settings.degree_metric,
        "precision": settings.precision,
        "fold_batchnorm": settings.fold_batchnorm,
        "layer_filter": settings.layer_filter,
        "bottleneck": {
            "min_plateau": settings.min_plateau,
            "plateau_tolerance": settings.plateau_tolerance,
            "min_gap": settings.min_gap,
            "weak_gap": settings.weak_gap,
            "max_utilisation": settings.max_utilisation,
            "edge_layers": settings.edge_layers,
        },
        # only when not the default, so that the audit's row keys of default runs stay as they were
        **({"spectrum_route": settings.spectrum_route} if settings.spectrum_route != "full" else {}),
    }


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """The report's ``settings`` object on its own (the batch layer keys its results on it)."""
    return _settings(settings)


def _layer(index: int, report: LayerReport, metric: str, spectra: bool, digits: int | None) -> dict[str, Any]:
    layer, m = report.layer, report.metrics

    def num(value: float | None) -> float | None:
        return _num(value, digits)

    out: dict[str, Any] = {
        "index": index,
        "name": layer.name,
        "kind": layer.kind,
        "shape": list(layer.shape),
        "dtype": layer.dtype,
        "in_channels": layer.in_channels,
        "out_channels": layer.out_channels,
        "groups": layer.groups,
        "stride": list(layer.stride) if layer.stride else [1] * layer.ndim,
        "dilation": list(layer.dilation) if layer.dilation else [1] * layer.ndim,
        "transposed": layer.transposed,
        "padding_mode": layer.padding_mode,
        "geometry_source": layer.geometry_source,
        "grid": list(layer.grid) if layer.grid else None,
        "grid_source": layer.grid_source,
        "spectrum_grid": list(report.spectrum_grid) if report.spectrum_grid else None,
        "exact": report.exact,
        "batchnorm": layer.batchnorm.name if layer.batchnorm is not None else None,
        "flags": list(report.flags),
        "notes": list(report.notes),
        "branch": layer.branch,
    }
    out.update(_metric_fields(m, metric, digits))
    out["route"] = report.route
    if m is not None and m.gap_bounds is not None:  # counts route: what is known of the gap ratio (null: unbounded)
        out["gap_ratio_bounds"] = [_num(v, digits) for v in m.gap_bounds]
    if spectra:
        out["spectrum"] = _spectrum(report.spectrum, digits)
    return out


def _metric_fields(m: LayerMetrics | None, metric: str, digits: int | None) -> dict[str, Any]:
    """The counts and soft measures of one layer (weights or activations), in the report's key order."""
    def num(value: float | None) -> float | None:
        return _num(value, digits)

    return {
        "mode_count": m.mode_count if m else None,
        "capacity": m.capacity if m else None,
        "utilisation": num(m.utilisation) if m else None,
        "threshold": num(m.threshold) if m else None,
        "spectral_norm": num(m.spectral_norm) if m else None,
        "stable_rank": num(m.stable_rank) if m else None,
        "effective_rank": num(m.effective_rank) if m else None,
        "smallest_kept": num(m.smallest_kept) if m else None,
        "largest_discarded": num(m.largest_discarded) if m else None,
        "gap_ratio": num(m.gap_ratio) if m else None,
        "degree_counts": _degrees(m.degree_counts[metric]) if m else {},
        "degree_counts_by_metric": {k: _degrees(v) for k, v in m.degree_counts.items()} if m else {},
        "pair_degree_counts": {k: _degrees(v) for k, v in m.pair_degree_counts.items()} if m else {},
        "energy_by_degree": _degrees(m.energy_by_degree[metric], lambda v: _num(v, None if digits is None else 4))
        if m else {},
        "profile": [num(v) for v in m.profile] if m else [],
    }


def _spectrum(spectrum: Spectrum | None, digits: int | None) -> list[dict[str, Any]] | None:
    if spectrum is None:
        return None
    return [{"frequency": list(freq), "singular_values": [_num(v, digits) for v in vals]}
            for freq, vals in spectrum.full()]


def _plain(value: Any) -> Any:
    """Mappings and sequences of an ``inputs`` record as JSON values (non-finite floats as null)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return _num(value, 8)
    return value


def _activation_layer(index: int, layer: ActivationLayerReport, metric: str, spectra: bool,
                      digits: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": index,
        "name": layer.name,
        "grid": list(layer.grid),
        "channels": layer.channels,
        "inputs": layer.inputs_seen,
        "nyquist_fraction": _num(layer.nyquist_fraction, 4),
        "shared_with": layer.shared_with,
        "notes": list(layer.notes),
    }
    out.update(_metric_fields(layer.metrics, metric, digits))
    if spectra:
        out["spectrum"] = _spectrum(layer.spectrum, digits)
    return out


def activations_to_dict(report: ActivationReport, settings: Settings) -> dict[str, Any]:
    """The report's ``activations`` object: inputs, how the model ran, per layer, and the bottleneck."""
    s = report.settings
    metric = settings.degree_metric
    digits = significant_digits(settings)
    return {
        "inputs": _plain(report.inputs),
        "runner": report.runner,
        "settings": {
            "side": s.side,
            "center": s.center,
            "batch_size": s.batch_size,
            "max_inputs": s.max_inputs,
            "seed": s.seed,
            "device": s.device,
        },
        "layers": [_activation_layer(i, layer, metric, settings.keep_spectra, digits)
                   for i, layer in enumerate(report.layers)],
        "bottleneck": _bottleneck(report.bottleneck, [layer.name for layer in report.layers], digits),
        "notes": list(report.notes),
        "seconds": _num(report.seconds, 4),
    }


def _indexed(pairs, names: list[str]) -> list[dict[str, Any]]:
    return [{"index": i, "name": names[i], "reason": why} for i, why in pairs]


def _basis(report: ModelReport) -> dict[str, Any]:
    """What the call rests on: order and grid sources, exactness, and notes a reader should see first."""
    layers = report.layers
    grid_sources: dict[str, int] = {}
    for r in layers:
        grid_sources[r.layer.grid_source] = grid_sources.get(r.layer.grid_source, 0) + 1
    guessed = order_is_guessed(report.order_source, report.order_confidence)
    wrapped = [r.layer.name for r in layers if "wrapped-kernel" in r.flags]
    notes = []
    if guessed:
        notes.append("the layer order is only a guess from layer names (no trace or declared order): the run "
                     "and its edges may be wrong")
    if "default" in grid_sources:
        notes.append(f"{grid_sources['default']} layer(s) on the default grid: nothing declared their input size")
    if wrapped:
        notes.append(f"{len(wrapped)} layer(s) analysed with taps wrapped (grid smaller than the kernel): "
                     "not the layer the network runs; no strong call")
    exact = sum(r.exact for r in layers)
    if exact < len(layers):
        notes.append(f"{len(layers) - exact} of {len(layers)} spectra are not exact (padding not circular, "
                     "grid assumed, or taps wrapped)")
    return {
        "order_source": report.order_source,
        "order_guessed": guessed,
        "grid_sources": dict(sorted(grid_sources.items())),
        "exact_layers": exact,
        "layers": len(layers),
        "wrapped_layers": wrapped,
        "notes": notes,
    }


def _bottleneck(b: Bottleneck, names: list[str], digits: int | None = FLOAT32_DIGITS) -> dict[str, Any]:
    def num(value: float | None) -> float | None:
        return _num(value, digits)

    rejected = None
    if b.rejected:
        rejected = dict(b.rejected)
        rejected["strength"] = _num(rejected.get("strength"), 4)
    return {
        "found": b.found,
        "reason": b.reason,
        "start": b.start,
        "end": b.end,
        "start_index": b.start_index,
        "end_index": b.end_index,
        "rank": b.rank,
        "degree_counts": _degrees(b.degree_counts),
        "type": format_type(b.degree_counts) if b.found else None,
        "frequencies": [{"frequency": list(f), "count": c} for f, c in b.frequencies],
        "strength": _num(b.strength, 4),
        "strength_label": b.strength_label,
        "gap_ratio": num(b.gap_ratio),
        "typical_gap_ratio": num(b.typical_gap_ratio),
        "clean": b.clean,
        "clean_layers": b.clean_layers,
        "utilisation": num(b.utilisation),
        "plateau_length": b.plateau_length,
        "consistent_type": b.consistent_type,
        "candidate": dict(b.candidate) if b.candidate else None,
        "members": list(b.members),
        "side_layers": _indexed(b.side_layers, names),
        "trimmed": _indexed(b.trimmed, names),
        "rejected": rejected,
        "wrapped_layers": [names[i] for i in b.wrapped_layers],
        "label_cap": b.label_cap,
    }


def report_to_dict(report: ModelReport) -> dict[str, Any]:
    """The JSON-ready form of a report (validates against the shipped schema)."""
    metric = report.settings.degree_metric
    digits = significant_digits(report.settings)
    names = [r.layer.name for r in report.layers]
    bottleneck = _bottleneck(report.bottleneck, names, digits)
    bottleneck["basis"] = _basis(report)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "cbn-inspect", "version": __version__},
        "source": {
            "path": report.source.path,
            "format": report.source.format,
            "sha256": report.source.sha256,
            "architecture": report.source.architecture,
            "architecture_source": report.source.architecture_source,
            "metadata": dict(report.source.metadata),
        },
        "settings": _settings(report.settings),
        "order_source": report.order_source,
        "order_confidence": report.order_confidence,
        "layers": [_layer(i, r, metric, report.settings.keep_spectra, digits) for i, r in enumerate(report.layers)],
        "skipped": [{"name": n, "reason": r} for n, r in report.skipped],
        "bottleneck": bottleneck,
        "warnings": list(report.warnings),
        "seconds": _num(report.seconds, 4),
        "number_format": {
            "significant_digits": digits,
            "description": (f"numbers measured from spectra rounded to {digits} significant digits (float32)"
                            if digits is not None else "numbers measured from spectra in full float64 precision"),
        },
        "activations": activations_to_dict(report.activations, report.settings) if report.activations else None,
    }


def error_to_dict(error: Any) -> dict[str, Any]:
    """The JSON written instead of a report when ``--json -`` fails: what went wrong, as the exit code says."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "cbn-inspect", "version": __version__},
        "error": {"kind": getattr(error, "kind", "error"), "message": getattr(error, "message", str(error)),
                  "hint": getattr(error, "hint", None), "exit_code": getattr(error, "exit_code", 1)},
    }


def to_json(report: ModelReport, indent: int | None = 2) -> str:
    return json.dumps(report_to_dict(report), indent=indent, allow_nan=False, ensure_ascii=False)


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    text = resources.files("cbn_inspect").joinpath("schema/report.schema.json").read_text()
    return json.loads(text)


def validate_report(data: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``data`` breaks the schema (needs the ``test`` extra)."""
    jsonschema = _import_jsonschema()

    jsonschema.validate(data, load_schema())


def _import_jsonschema():
    """jsonschema, or :class:`~cbn_inspect.errors.MissingExtraError` (exit 10) where it is not installed."""
    try:
        import jsonschema
    except ImportError as exc:
        from ..errors import MissingExtraError

        raise MissingExtraError("validating JSON reports needs jsonschema", hint="pip install 'cbn-inspect[test]'") from exc
    return jsonschema
