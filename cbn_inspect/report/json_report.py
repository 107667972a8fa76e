"""The JSON report: one function builds it, one schema (``cbn_inspect/schema/report.schema.json``) fixes it.

Keys come in a stable order; non-finite floats become ``null`` (the analysis flags such layers), degree keys
are strings (JSON objects have string keys). Renaming or removing a field bumps ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from .._version import SCHEMA_VERSION, __version__
from ..records import Bottleneck, LayerReport, ModelReport, Settings


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


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
    }


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """The report's ``settings`` object on its own (the batch layer keys its results on it)."""
    return _settings(settings)


def _layer(index: int, report: LayerReport, metric: str, spectra: bool) -> dict[str, Any]:
    layer, m = report.layer, report.metrics
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
        "mode_count": m.mode_count if m else None,
        "capacity": m.capacity if m else None,
        "utilisation": _num(m.utilisation) if m else None,
        "threshold": _num(m.threshold) if m else None,
        "spectral_norm": _num(m.spectral_norm) if m else None,
        "stable_rank": _num(m.stable_rank) if m else None,
        "effective_rank": _num(m.effective_rank) if m else None,
        "smallest_kept": _num(m.smallest_kept) if m else None,
        "largest_discarded": _num(m.largest_discarded) if m else None,
        "gap_ratio": _num(m.gap_ratio) if m else None,
        "degree_counts": _degrees(m.degree_counts[metric]) if m else {},
        "degree_counts_by_metric": {k: _degrees(v) for k, v in m.degree_counts.items()} if m else {},
        "pair_degree_counts": {k: _degrees(v) for k, v in m.pair_degree_counts.items()} if m else {},
        "energy_by_degree": _degrees(m.energy_by_degree[metric], lambda v: _num(v, 4)) if m else {},
        "profile": [_num(v) for v in m.profile] if m else [],
    }
    if spectra:
        out["spectrum"] = (
            [
                {"frequency": list(freq), "singular_values": [_num(v, 7) for v in vals]}
                for freq, vals in report.spectrum.full()
            ]
            if report.spectrum is not None
            else None
        )
    return out


def _bottleneck(b: Bottleneck) -> dict[str, Any]:
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
        "gap_ratio": _num(b.gap_ratio),
        "typical_gap_ratio": _num(b.typical_gap_ratio),
        "clean": b.clean,
        "clean_layers": b.clean_layers,
        "utilisation": _num(b.utilisation),
        "plateau_length": b.plateau_length,
        "consistent_type": b.consistent_type,
        "candidate": dict(b.candidate) if b.candidate else None,
    }


def report_to_dict(report: ModelReport) -> dict[str, Any]:
    """The JSON-ready form of a report (validates against the shipped schema)."""
    metric = report.settings.degree_metric
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
        "layers": [_layer(i, r, metric, report.settings.keep_spectra) for i, r in enumerate(report.layers)],
        "skipped": [{"name": n, "reason": r} for n, r in report.skipped],
        "bottleneck": _bottleneck(report.bottleneck),
        "warnings": list(report.warnings),
        "seconds": _num(report.seconds, 4),
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
    import jsonschema

    jsonschema.validate(data, load_schema())
