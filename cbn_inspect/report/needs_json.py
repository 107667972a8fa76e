"""JSON for ``cbn-inspect needs --json``: one function builds it, ``cbn_inspect/schema/needs.schema.json`` fixes it.

Key order is stable; a non-finite number (an output change that overflowed) is written as null with the
``finite: false`` flag of its :class:`OutputChange`, never as NaN.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from .._version import SCHEMA_VERSION, __version__
from ..interventions.records import JointCheck, LayerNeeds, NeedCurve, NeedsReport, OutputChange


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _change(change: OutputChange | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {
        "relative_l2": _num(change.relative_l2),
        "finite": math.isfinite(change.relative_l2),
        "top1_agreement": _num(change.top1_agreement),
        "kl": _num(change.kl),
        "argmax_agreement": _num(change.argmax_agreement),
        "inputs": change.inputs,
        "part": change.part,
        "holds": change.holds,
    }


def _curve(curve: NeedCurve) -> dict[str, Any]:
    return {
        "kind": curve.kind,
        "needed": _num(curve.needed, 12),
        "candidates": curve.candidates,
        "search": curve.search,
        "monotone": curve.monotone,
        "points": [{"value": _num(p.value, 12), "change": _change(p.change)} for p in curve.points],
        "held_out": _change(curve.held_out),
        "notes": list(curve.notes),
    }


def _counts(counts: Mapping[int, int]) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(counts.items())}


def _layer(layer: LayerNeeds) -> dict[str, Any]:
    return {
        "name": layer.name,
        "also_read_by": list(layer.also_read_by),
        "reason": layer.reason,
        "grid": list(layer.grid),
        "channels": layer.channels,
        "directions": layer.directions,
        "needed_band": _num(layer.needed_band, 12),
        "needed_degree": layer.needed_degree,
        "needed_rank": layer.needed_rank,
        "needed_rank_type": _counts(layer.needed_rank_type),
        "profile_rank": layer.profile_rank,
        "profile_type": _counts(layer.profile_type),
        "safe_factor": layer.safe_factor,
        "safe_change": _change(layer.safe_change),
        "everything_needed": layer.everything_needed,
        "reliable": layer.reliable,
        "sanity": {"full_band": _change(layer.sanity_full), "frequency_0": _change(layer.sanity_zero)},
        "curves": {"box": _curve(layer.box), "ball": _curve(layer.ball), "rank": _curve(layer.rank)},
        "rings": [{"low": r.low, "high": r.high, "frequencies": r.frequencies, "change": _change(r.change)}
                  for r in layer.rings],
        "notes": list(layer.notes),
    }


def _joint(check: JointCheck) -> dict[str, Any]:
    return {"kind": check.kind, "cuts": [{"layer": n, "value": v} for n, v in check.cuts],
            "change": _change(check.change)}


def needs_section(report: NeedsReport) -> dict[str, Any]:
    """The ``needs`` section: settings, inputs and their split, per-layer needs, joint checks, summary, cost."""
    s = report.settings
    act = s.activations
    needed, total = report.needed_directions
    return {
        "source": report.source,
        "runner": report.runner,
        "settings": {
            "max_change": s.max_change, "min_agreement": s.min_agreement, "held_out_every": s.held_out_every,
            "layers": s.layer_filter, "all_layers": s.all_layers, "max_forward_passes": s.max_forward_passes,
            "max_rings": s.max_rings, "degree_metric": s.degree_metric, "max_memory_mb": s.max_memory_mb,
            "inputs": act.inputs, "batch_size": act.batch_size, "max_inputs": act.max_inputs, "seed": act.seed,
            "device": act.device, "profile_tolerance": report.tolerance,
        },
        "inputs": json.loads(json.dumps(dict(report.inputs), default=str)),
        "split": {"rule": report.split.rule, "decide": report.split.decide, "held_out": report.split.held_out},
        "output": json.loads(json.dumps(dict(report.output), default=str)),
        "layers": [_layer(layer) for layer in report.layers],
        "joint": [_joint(check) for check in report.joint],
        "everything_needed": report.everything_needed,
        "needed_directions": needed,
        "total_directions": total,
        "summary": list(report.summary),
        "cost": {"forward_passes": report.cost.forward_passes, "input_evaluations": report.cost.input_evaluations,
                 "estimated_forward_passes": report.cost.estimated, "cpu_seconds": report.cost.cpu_seconds,
                 "wall_seconds": report.cost.wall_seconds,
                 "plain_forward_seconds": _num(report.cost.plain_forward_seconds)},
        "notes": list(report.notes),
    }


def needs_to_dict(report: NeedsReport) -> dict[str, Any]:
    """The JSON document of ``cbn-inspect needs --json`` (validates against ``needs.schema.json``)."""
    return {"schema_version": SCHEMA_VERSION, "kind": "needs",
            "tool": {"name": "cbn-inspect", "version": __version__}, "needs": needs_section(report)}


def needs_to_json(report: NeedsReport, indent: int | None = 2) -> str:
    return json.dumps(needs_to_dict(report), indent=indent, allow_nan=False, ensure_ascii=False)


@lru_cache(maxsize=1)
def load_needs_schema() -> dict[str, Any]:
    return json.loads(resources.files("cbn_inspect").joinpath("schema/needs.schema.json").read_text())


def validate_needs(data: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``data`` breaks ``needs.schema.json`` (the ``test`` extra)."""
    import jsonschema

    jsonschema.validate(data, load_needs_schema())
