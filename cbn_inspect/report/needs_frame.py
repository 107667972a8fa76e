"""``NeedsReport.to_frame()``: the needs report as pandas DataFrames (pandas is optional, imported here).

``what="layers"`` (default), one row per probed layer, in probe order: ``index``, ``name``, ``grid``
(tuple), ``channels``, ``reason``, ``needed_band`` (fraction of Nyquist), ``needed_degree``,
``needed_rank``, ``needed_rank_type`` (dict degree -> count), ``profile_rank``, ``profile_type``,
``directions`` (``|N| * C``), ``rank_share`` (needed_rank / directions), ``safe_factor``, ``safe_change``
and ``safe_top1`` (the safe down-sampling's change on held-out inputs; None when the factor is 1),
``box_held_out``, ``ball_held_out``, ``rank_held_out`` (each needed band's change on held-out inputs),
``sanity_full``, ``sanity_zero`` (the full band's and frequency 0's changes), ``rings_that_matter`` (rings
whose removal alone does not hold), ``everything_needed``, ``also_read_by``, ``notes`` (tuples).

``what="curves"``: one row per measured point of every search: ``layer``, ``kind`` (box, ball, rank),
``value`` (as recorded: band, degree or kept pairs), ``relative_l2``, ``holds``, ``top1_agreement``,
``kl``, ``argmax_agreement``, ``needed`` (the point is the search's answer).

``what="rings"``: one row per removed ring (group): ``layer``, ``low``, ``high``, ``frequencies``,
``relative_l2``, ``holds``, ``top1_agreement``, ``kl``, ``argmax_agreement``.

Every value is the record's own (nothing recomputed but ``rank_share`` and ``rings_that_matter``, plain
ratios and counts of recorded values).
"""

from __future__ import annotations

from typing import Any

WHAT = ("layers", "curves", "rings")


def _change(change: Any) -> float | None:
    return None if change is None else change.relative_l2


def layer_rows(report: Any) -> list[dict[str, Any]]:
    rows = []
    for i, layer in enumerate(report.layers):
        rows.append({
            "index": i, "name": layer.name, "grid": tuple(layer.grid), "channels": layer.channels,
            "reason": layer.reason, "needed_band": layer.needed_band, "needed_degree": layer.needed_degree,
            "needed_rank": layer.needed_rank, "needed_rank_type": {int(k): int(v) for k, v in layer.needed_rank_type.items()},
            "profile_rank": layer.profile_rank, "profile_type": {int(k): int(v) for k, v in layer.profile_type.items()},
            "directions": layer.directions,
            "rank_share": None if layer.needed_rank is None or not layer.directions else layer.needed_rank / layer.directions,
            "safe_factor": layer.safe_factor, "safe_change": _change(layer.safe_change),
            "safe_top1": None if layer.safe_change is None else layer.safe_change.top1_agreement,
            "box_held_out": _change(layer.box.held_out), "ball_held_out": _change(layer.ball.held_out),
            "rank_held_out": _change(layer.rank.held_out),
            "sanity_full": _change(layer.sanity_full), "sanity_zero": _change(layer.sanity_zero),
            "rings_that_matter": sum(not r.change.holds for r in layer.rings),
            "everything_needed": layer.everything_needed,
            "also_read_by": tuple(layer.also_read_by), "notes": tuple(layer.notes),
        })
    return rows


def _metrics(change: Any) -> dict[str, Any]:
    return {"relative_l2": change.relative_l2, "holds": change.holds, "top1_agreement": change.top1_agreement,
            "kl": change.kl, "argmax_agreement": change.argmax_agreement}


def curve_rows(report: Any) -> list[dict[str, Any]]:
    rows = []
    for layer in report.layers:
        for kind in ("box", "ball", "rank"):
            curve = getattr(layer, kind)
            for point in curve.points:
                rows.append({"layer": layer.name, "kind": kind, "value": point.value, **_metrics(point.change),
                             "needed": curve.needed is not None and point.value == curve.needed})
    return rows


def ring_rows(report: Any) -> list[dict[str, Any]]:
    return [{"layer": layer.name, "low": r.low, "high": r.high, "frequencies": r.frequencies, **_metrics(r.change)}
            for layer in report.layers for r in layer.rings]


ROWS = {"layers": layer_rows, "curves": curve_rows, "rings": ring_rows}
COLUMNS = {
    "layers": ("index", "name", "grid", "channels", "reason", "needed_band", "needed_degree", "needed_rank",
               "needed_rank_type", "profile_rank", "profile_type", "directions", "rank_share", "safe_factor",
               "safe_change", "safe_top1", "box_held_out", "ball_held_out", "rank_held_out", "sanity_full",
               "sanity_zero", "rings_that_matter", "everything_needed", "also_read_by", "notes"),
    "curves": ("layer", "kind", "value", "relative_l2", "holds", "top1_agreement", "kl", "argmax_agreement",
               "needed"),
    "rings": ("layer", "low", "high", "frequencies", "relative_l2", "holds", "top1_agreement", "kl",
              "argmax_agreement"),
}


def needs_frame(report: Any, what: str = "layers") -> Any:
    """A ``pandas.DataFrame`` of the layers, the curve points or the rings (needs pandas)."""
    if what not in ROWS:
        from ..errors import UsageError

        raise UsageError(f"to_frame({what!r}): use one of {', '.join(WHAT)}")
    try:
        import pandas as pd
    except ImportError as exc:
        from ..errors import MissingExtraError

        raise MissingExtraError("to_frame() needs pandas, which is not installed",
                                hint="pip install 'cbn-inspect[plot]' or pip install pandas") from exc
    return pd.DataFrame(ROWS[what](report), columns=list(COLUMNS[what]))
