"""JSON for a series (``track --json``) and a comparison (``compare --json``), each with its own schema.

``cbn_inspect/schema/series.schema.json`` and ``comparison.schema.json`` fix them; key order is stable and
non-finite numbers are ``null``. The per-checkpoint numbers are taken from the checkpoints' JSON reports
(:func:`cbn_inspect.report.json_report.report_to_dict`), never recomputed; ``include_reports`` embeds those
reports whole.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from .._version import __version__
from ..series.records import Comparison, LayerChange, Series, StepCall

SERIES_SCHEMA_VERSION = "1.0"
COMPARED_FIELDS = ("mode_count", "capacity", "utilisation", "degree_counts", "spectral_norm", "gap_ratio")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _call(call: StepCall | None) -> dict[str, Any] | None:
    if call is None:
        return None
    return {"step": call.step, "found": call.found, "reason": call.reason, "start": call.start, "end": call.end,
            "rank": call.rank, "type": call.type, "strength": _clean(call.strength),
            "strength_label": call.strength_label}


def _call_at(series: Series, step: int | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return next(_call(c) for c in series.calls if c is not None and c.step == step)


def series_to_dict(series: Series, *, include_reports: bool = False) -> dict[str, Any]:
    """The JSON-ready form of a series (validates against ``series.schema.json``)."""
    done = [c for c in series.calls if c is not None]
    points = []
    for point, call in zip(series.points, series.calls):
        entry: dict[str, Any] = {
            "step": point.step.step,
            "epoch": point.step.epoch,
            "source": point.source,
            "step_origin": point.step.origin,
            "step_key": point.step.key,
            "status": "ok" if point.ok else "error",
            "error": None if point.ok else {"type": point.error_kind, "message": point.error_message},
            "bottleneck": _call(call),
        }
        if include_reports:
            entry["report"] = dict(point.report) if point.report is not None else None
        points.append(entry)
    return {
        "schema_version": SERIES_SCHEMA_VERSION,
        "kind": "series",
        "tool": {"name": "cbn-inspect", "version": __version__},
        "unit": series.unit,
        "step_source": series.step_source,
        "steps": list(series.steps),
        "points": points,
        "layers": [
            {
                "name": t.name,
                "mode_count": list(t.mode_count),
                "utilisation": [_clean(v) for v in t.utilisation],
                "gap_ratio": [_clean(v) for v in t.gap_ratio],
                "spectral_norm": [_clean(v) for v in t.spectral_norm],
                "degree_counts": [dict(v) if v is not None else None for v in t.degree_counts],
                "in_bottleneck": list(t.in_bottleneck),
            }
            for t in series.layers
        ],
        "first_found": _call_at(series, series.first_found),
        "settled": _call_at(series, series.settled),
        "final": _call(done[-1]) if done else None,
        "partial_layers": list(series.partial_layers),
        "failed": [p.source for p in series.failed],
        "settings": dict(series.settings) if series.settings is not None else None,
    }


def _side(layer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if layer is None:
        return None
    return {k: _clean(layer.get(k)) for k in COMPARED_FIELDS}


def _change(change: LayerChange) -> dict[str, Any]:
    a, b = change.a, change.b
    delta = None
    if change.paired and a.get("mode_count") is not None and b.get("mode_count") is not None:
        delta = b["mode_count"] - a["mode_count"]
    return {"name": change.name, "in": "both" if change.paired else ("a" if b is None else "b"),
            "changed": list(change.changed), "mode_count_change": delta, "a": _side(a), "b": _side(b)}


def _bottleneck(report: Mapping[str, Any]) -> dict[str, Any]:
    b = report.get("bottleneck") or {}
    return {k: _clean(b.get(k)) for k in ("found", "reason", "start", "end", "rank", "type", "strength",
                                         "strength_label")}


def comparison_to_dict(comparison: Comparison) -> dict[str, Any]:
    """The JSON-ready form of a comparison (validates against ``comparison.schema.json``)."""
    return {
        "schema_version": SERIES_SCHEMA_VERSION,
        "kind": "comparison",
        "tool": {"name": "cbn-inspect", "version": __version__},
        "a": {"path": (comparison.a.get("source") or {}).get("path"), "bottleneck": _bottleneck(comparison.a)},
        "b": {"path": (comparison.b.get("source") or {}).get("path"), "bottleneck": _bottleneck(comparison.b)},
        "unchanged": comparison.unchanged,
        "rtol": comparison.rtol,
        "settings_differ": comparison.settings_differ,
        "bottleneck_changed": list(comparison.bottleneck_changed),
        "changed_layers": [c.name for c in comparison.changed_layers],
        "only_a": list(comparison.only_a),
        "only_b": list(comparison.only_b),
        "layers": [_change(c) for c in comparison.layers],
    }


def dumps(data: Mapping[str, Any], indent: int | None = 2) -> str:
    return json.dumps(data, indent=indent, allow_nan=False, ensure_ascii=False)


@lru_cache(maxsize=2)
def load_series_schema(kind: str = "series") -> dict[str, Any]:
    """``series`` or ``comparison``."""
    name = {"series": "series.schema.json", "comparison": "comparison.schema.json"}[kind]
    return json.loads(resources.files("cbn_inspect").joinpath(f"schema/{name}").read_text())


def validate_series(data: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``data`` breaks its schema (chosen by ``kind``)."""
    from .json_report import _import_jsonschema

    jsonschema = _import_jsonschema()

    jsonschema.validate(data, load_series_schema(str(data.get("kind"))))
