"""A hand-built :class:`NeedsReport` for the reporters' tests (figures, HTML, frame): no model is run.

Two probed layers with known curves, rings and advice, and a hostile layer name, so that each reporter can be
checked against numbers written here.
"""

from __future__ import annotations

from cbn_inspect.interventions import (CurvePoint, InputSplit, JointCheck, LayerNeeds, NeedCurve, NeedsCost,
                                       NeedsReport, NeedsSettings, OutputChange, RingImportance)
from cbn_inspect.records import ActivationSettings

MAX_CHANGE = 0.05
HOSTILE = "stage<b>\x1b[31m"


def change(value: float, part: str = "decide", inputs: int = 8, top1: float | None = 1.0) -> OutputChange:
    holds = value <= MAX_CHANGE and (top1 is None or top1 >= 0.99)
    return OutputChange(relative_l2=value, inputs=inputs, part=part, holds=holds, top1_agreement=top1,
                        kl=None if top1 is None else value / 10)


def curve(kind: str, values, changes, needed, held=None) -> NeedCurve:
    points = tuple(CurvePoint(v, change(c, top1=1.0 if c <= MAX_CHANGE else 0.5)) for v, c in zip(values, changes))
    return NeedCurve(kind=kind, points=points, needed=needed, candidates=len(values), search="bisection",
                     held_out=None if held is None else change(held, "held-out", 7))


def layer(name: str, grid, channels: int, box, ball, rank, rings, needed_band, needed_degree, needed_rank,
          safe_factor: int, safe_change: float | None, rank_type=None, profile_rank=40, notes=()) -> LayerNeeds:
    return LayerNeeds(
        name=name, grid=tuple(grid), channels=channels, reason="grid-change",
        box=box, ball=ball, rank=rank,
        rings=tuple(RingImportance(lo, hi, n, change(c, top1=1.0 if c <= MAX_CHANGE else 0.6))
                    for lo, hi, n, c in rings),
        needed_band=needed_band, needed_degree=needed_degree, needed_rank=needed_rank,
        needed_rank_type=rank_type or {0: 3, 1: 4, 2: 1}, profile_rank=profile_rank,
        profile_type={0: 5, 1: 20, 2: 15}, directions=grid[0] * grid[1] * channels, safe_factor=safe_factor,
        safe_change=None if safe_change is None else change(safe_change, "held-out", 7),
        sanity_full=change(3e-8), sanity_zero=change(0.9, top1=0.1), notes=tuple(notes))


def example_report() -> NeedsReport:
    first = layer(
        "layer1.0.conv1", (16, 16), 8,
        box=curve("box", (0.125, 0.25, 0.5, 1.0), (0.6, 0.2, 0.03, 0.0), 0.5, held=0.031),
        ball=curve("ball", (1, 2, 4, 8, 16), (0.7, 0.4, 0.1, 0.02, 0.0), 8, held=0.025),
        rank=curve("rank", (1, 4, 8, 32, 2048), (0.8, 0.3, 0.04, 0.01, 0.0), 8, held=0.045),
        rings=((0, 0, 1, 0.5), (1, 1, 4, 0.2), (2, 2, 8, 0.06), (3, 4, 28, 0.01), (5, 16, 215, 0.001)),
        needed_band=0.5, needed_degree=8, needed_rank=8, safe_factor=2, safe_change=0.031)
    second = layer(
        HOSTILE, (8, 8), 16,
        box=curve("box", (0.25, 0.5, 1.0), (0.5, 0.2, 0.0), 1.0),
        ball=curve("ball", (1, 4, 8), (0.6, 0.2, 0.0), 8),
        rank=curve("rank", (1, 64, 1024), (0.9, 0.3, 0.0), 1024),
        rings=((0, 0, 1, 0.9), (1, 1, 4, 0.3), (2, 8, 59, 0.08)),
        needed_band=1.0, needed_degree=8, needed_rank=1024, safe_factor=1, safe_change=None,
        rank_type={0: 16, 1: 64, 2: 128, 3: 816}, profile_rank=900, notes=("everything is needed",))
    settings = NeedsSettings(activations=ActivationSettings("samples", center=True))
    return NeedsReport(
        source="example.onnx", runner="onnxruntime", settings=settings,
        inputs={"kind": "samples", "count": 15, "source": "samples (scikit-learn, scikit-image)"},
        split=InputSplit(rule="every 2nd input held out (inputs 1, 3, 5, ...)", decide=8, held_out=7),
        output={"shape": [15, 10], "kind": "class"},
        layers=(first, second),
        joint=(JointCheck("downsampling", (("layer1.0.conv1", 2),), change(0.033, "held-out", 7)),
               JointCheck("rank", (("layer1.0.conv1", 8), (HOSTILE, 1024)), change(0.047, "held-out", 7))),
        summary=("layer1.0.conv1 needs frequencies up to 1/2 of Nyquist: a 2x down-sampling there changes the "
                 "outputs by 3.1% (held-out).", f"{HOSTILE}: everything is needed."),
        cost=NeedsCost(forward_passes=120, input_evaluations=1800, estimated=130, cpu_seconds=12.5,
                       wall_seconds=7.25, plain_forward_seconds=0.05),
        notes=("a note",), tolerance="sigma > 0.1 x the layer's largest")
