"""The plain-language summary of a needs report: sentences built from the records (no measuring here)."""

from __future__ import annotations

import math

from .records import JointCheck, LayerNeeds, NeedsSettings, OutputChange


def _pct(value: float) -> str:
    return f"{100 * value:.3g}%" if math.isfinite(value) else "inf"


def _change_words(change: OutputChange) -> str:
    text = f"changes the outputs by {_pct(change.relative_l2)}"
    if change.top1_agreement is not None:
        text += f" (top-1 agreement {_pct(change.top1_agreement)})"
    return text + f" on {change.inputs} held-out input(s)"


def _groups(results: list[LayerNeeds]) -> list[list[LayerNeeds]]:
    """Consecutive probes with the same grid, needed band and advice (told in one sentence)."""
    groups: list[list[LayerNeeds]] = []
    for r in results:
        last = groups[-1][0] if groups else None
        if last is not None and (last.grid, last.needed_band, last.safe_factor) == (r.grid, r.needed_band, r.safe_factor):
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def summarise(results: list[LayerNeeds], joint: tuple[JointCheck, ...], settings: NeedsSettings,
             kind: str) -> list[str]:
    tol = f"relative change <= {settings.max_change:g}"
    if kind == "class":
        tol += f" and top-1 agreement >= {settings.min_agreement:g}"
    lines = []
    broken = [r for r in results if not r.reliable]
    for r in broken:
        lines.append(f"No conclusion at {r.name}: keeping its full band already changes the outputs by "
                     f"{_pct(r.sanity_full.relative_l2)}, so the machinery does not reproduce the reference run there.")
    results = [r for r in results if r.reliable]
    if results and all(r.everything_needed for r in results):
        lines.append(f"Everything is needed: at no probed layer can a frequency band be cut within the tolerance "
                     f"({tol}); no down-sampling is safe.")
    dead = [r for r in results if r.needed_rank == 0]
    if dead:
        names = ", ".join(r.name for r in dead[:6]) + (", ..." if len(dead) > 6 else "")
        lines.append(f"The outputs do not depend on the features entering {names}: zeroing them stays within the "
                     "tolerance (a dead branch, e.g. a residual block whose last normalisation scale is 0).")
    for group in _groups([r for r in results if r.needed_rank != 0]):
        r = group[0]
        grid = "x".join(map(str, r.grid))
        where = (f"{r.name} ({grid})" if len(group) == 1
                 else f"{r.name} ... {group[-1].name} ({len(group)} probed layers, {grid})")
        if r.safe_factor > 1:
            worst = max((g.safe_change for g in group if g.safe_change is not None), key=lambda c: c.relative_l2)
            lines.append(f"The features entering {where} need frequencies up to {r.needed_band:.3g} of "
                         f"Nyquist; down-sampling by {r.safe_factor} there {'at most ' if len(group) > 1 else ''}"
                         f"{_change_words(worst)}{'' if worst.holds else ', which is beyond the tolerance'}.")
        elif r.needed_band is not None and 0 < r.needed_band < 1.0:
            lines.append(f"The features entering {where} need frequencies up to {r.needed_band:.3g} of "
                         "Nyquist: more than any down-sampling dividing the grid keeps.")
    needed = sum(r.needed_rank if r.needed_rank is not None else r.directions for r in results)
    total = sum(r.directions for r in results)
    lines.append(f"Needs {needed} of {total} frequency-channel directions in the probed layers (rank truncation, "
                 f"{tol}).")
    for check in joint:
        if check.change is not None and check.kind == "rank":
            lines.append(f"Joint check: the needed ranks at all {len(check.cuts)} layer(s) kept together "
                         f"{_change_words(check.change).replace('changes', 'change')}: "
                         f"{'the truncations hold' if check.change.holds else 'they compound beyond the tolerance'}.")
        elif check.change is not None:
            lines.append(f"Joint check: the {len(check.cuts)} recommended down-sampling(s) applied together "
                         f"{_change_words(check.change).replace('changes', 'change')}: "
                         f"{'the advice holds' if check.change.holds else 'they compound beyond the tolerance'}.")
    return lines
