"""Pure functions from JSON reports to series and comparison records: no I/O, no printing.

:func:`build_series` lines the points' layers up by name (in the order of the last successful point) and
finds when the bottleneck first appears and from which step it stays as it ends; :func:`compare_reports`
pairs two reports' layers by name and says what changed.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .records import Comparison, LayerChange, LayerTrack, Series, SeriesPoint, StepCall

COMPARED = ("mode_count", "degree_counts", "spectral_norm", "gap_ratio")
CALL_FIELDS = ("found", "start", "end", "rank", "type", "strength")
DEFAULT_RTOL = 1e-6  # the JSON keeps 6 significant digits: smaller relative changes are not seen


def _layer_map(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {layer["name"]: layer for layer in report.get("layers", [])}


def _layer_names(points: Sequence[SeriesPoint]) -> tuple[list[str], list[str]]:
    """All layer names, in the order of the last successful point (others after, first seen first)."""
    ok = [p for p in points if p.ok]
    names: list[str] = []
    for point in reversed(ok):
        for name in _layer_map(point.report):
            if name not in names:
                names.append(name)
    last = list(_layer_map(ok[-1].report)) if ok else []
    ordered = last + [n for n in names if n not in last]
    partial = [n for n in ordered if any(n not in _layer_map(p.report) for p in ok)]
    return ordered, partial


def _in_run(report: Mapping[str, Any]) -> set[str]:
    b = report.get("bottleneck") or {}
    if not b.get("found"):
        return set()
    layers = report.get("layers", [])
    return {layers[i]["name"] for i in range(b["start_index"], b["end_index"] + 1)}


def step_call(step: int, report: Mapping[str, Any]) -> StepCall:
    b = report.get("bottleneck") or {}
    return StepCall(step=step, found=bool(b.get("found")), reason=str(b.get("reason", "")), start=b.get("start"),
                    end=b.get("end"), rank=b.get("rank"), type=b.get("type"), strength=b.get("strength"),
                    strength_label=str(b.get("strength_label", "none")))


def _same_call(a: StepCall, b: StepCall) -> bool:
    return (a.found, a.start, a.end, a.rank, a.type) == (b.found, b.start, b.end, b.rank, b.type)


def build_series(points: Sequence[SeriesPoint], *, unit: str, step_source: str) -> Series:
    """A :class:`Series` from points already in step order."""
    names, partial = _layer_names(points)
    maps = [_layer_map(p.report) if p.ok else {} for p in points]
    runs = [_in_run(p.report) if p.ok else set() for p in points]

    def values(name: str, key: str) -> tuple:
        return tuple(m[name].get(key) if name in m else None for m in maps)

    layers = tuple(
        LayerTrack(name=name, mode_count=values(name, "mode_count"), utilisation=values(name, "utilisation"),
                   gap_ratio=values(name, "gap_ratio"), spectral_norm=values(name, "spectral_norm"),
                   degree_counts=values(name, "degree_counts"), in_bottleneck=tuple(name in r for r in runs))
        for name in names
    )
    calls = tuple(step_call(p.step.step, p.report) if p.ok else None for p in points)
    first = next((c.step for c in calls if c is not None and c.found), None)
    settled = None
    done = [c for c in calls if c is not None]
    if done and done[-1].found:
        settled = done[-1].step
        for call in reversed(done):
            if not _same_call(call, done[-1]):
                break
            settled = call.step
    settings = next((p.report.get("settings") for p in points if p.ok), None)
    return Series(points=tuple(points), unit=unit, step_source=step_source, layers=layers, calls=calls,
                  first_found=first, settled=settled, partial_layers=tuple(partial), settings=settings)


def _differs(a: Any, b: Any, rtol: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if isinstance(a, int) and isinstance(b, int):
            return a != b
        return not math.isclose(float(a), float(b), rel_tol=rtol, abs_tol=0.0)
    return a != b


def compare_reports(a: Mapping[str, Any], b: Mapping[str, Any], *, rtol: float = DEFAULT_RTOL) -> Comparison:
    """Pair the layers of two JSON reports by name; per layer, which of :data:`COMPARED` changed."""
    la, lb = _layer_map(a), _layer_map(b)
    names = list(la) + [n for n in lb if n not in la]
    changes = []
    for name in names:
        x, y = la.get(name), lb.get(name)
        if x is None or y is None:
            changes.append(LayerChange(name=name, a=x, b=y, changed=()))
            continue
        what = [k for k in COMPARED if _differs(x.get(k), y.get(k), rtol)]
        if (x.get("mode_count") is None) != (y.get("mode_count") is None):
            what.append("analysed")
        changes.append(LayerChange(name=name, a=x, b=y, changed=tuple(what)))
    ba, bb = a.get("bottleneck") or {}, b.get("bottleneck") or {}
    call = tuple(k for k in CALL_FIELDS if _differs(ba.get(k), bb.get(k), rtol))
    return Comparison(a=a, b=b, layers=tuple(changes), only_a=tuple(n for n in la if n not in lb),
                      only_b=tuple(n for n in lb if n not in la), bottleneck_changed=call,
                      settings_differ=a.get("settings") != b.get("settings"), rtol=rtol)
