"""Records of ``cbn-inspect needs``: what each probed layer needs, measured by intervention (THEORY.md, "What a
network needs: interventions").

One frozen dataclass per idea, shared by the terminal, JSON, figure and HTML reporters:

- :class:`NeedsSettings` -- tolerances and choices, recorded in every output;
- :class:`OutputChange` -- how much the final outputs moved under one intervention, on one part of the inputs;
- :class:`CurvePoint`, :class:`NeedCurve` -- one search (box low-pass, l1 ball, rank truncation): the bands
  measured and the smallest one within tolerance;
- :class:`RingImportance` -- the change when one degree ring (or one group of rings) is removed;
- :class:`LayerNeeds` -- everything about one probed feature map, with the down-sampling advice;
- :class:`JointCheck` -- every recommended cut applied at once;
- :class:`InputSplit`, :class:`NeedsCost`, :class:`NeedsReport` -- the split of the inputs, what it cost, the report.

Numbers are plain floats/ints (no numpy, no torch), so a report pickles and serialises without either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..records import ActivationSettings
from ._views import NeedsViews

DEFAULT_MAX_CHANGE = 0.05  # relative L2 of the outputs an intervention may cause and still "hold"
DEFAULT_MIN_AGREEMENT = 0.99  # top-1 agreement a class output must keep to "hold"
FULL_BAND_LIMIT = 1e-4  # the full band's change above which a probe's results are not trusted (round-off: ~1e-7)
DEFAULT_MAX_RINGS = 32  # band-stop: more degree rings than this are removed in this many equal groups
KINDS = ("box", "ball", "rank")  # the three searches of a NeedCurve
PROBE_REASONS = ("grid-change", "bottleneck", "layers", "all-layers")


@dataclass(frozen=True)
class NeedsSettings:
    """Tolerances and choices of a needs run; recorded in every output.

    An intervention *holds* when the outputs' relative L2 change is at most ``max_change`` and, for a class
    output (``(B, K)``, K >= 2), the top-1 agreement is at least ``min_agreement``. ``held_out_every``: every
    k-th input (1, 1+k, ...) is held out for reporting; the others decide (k = 2: alternate inputs).
    ``layer_filter``/``all_layers`` choose the probes (default: where the grid changes, plus the activation
    bottleneck's layers). ``max_forward_passes`` bounds the work (refused up front when the estimate exceeds
    it). ``degree_metric`` is the degree of the l1 ball and the rings (l1 or linf). ``max_memory_mb`` bounds the
    caches (inputs, unmodified outputs, ONNX prefixes) and the Gram matrices; None: 2048 MB, or half the physical
    memory if less.
    """

    activations: ActivationSettings
    max_change: float = DEFAULT_MAX_CHANGE
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    held_out_every: int = 2
    layer_filter: str | None = None
    all_layers: bool = False
    max_forward_passes: int | None = None
    max_rings: int = DEFAULT_MAX_RINGS
    degree_metric: str = "l1"
    max_memory_mb: int | None = None


@dataclass(frozen=True)
class OutputChange:
    """The outputs under an intervention against the unmodified run on the same inputs.

    ``relative_l2`` = ||y' - y|| / ||y|| over all outputs and inputs; ``top1_agreement`` and ``kl`` (mean
    KL(softmax y || softmax y'), nats) for a class output; ``argmax_agreement`` per position for a dense
    output with a channel axis (channel axis taken as classes; reported, not used to decide). ``part`` is
    ``decide`` or ``held-out``; ``inputs`` how many were compared.
    """

    relative_l2: float
    inputs: int
    part: str
    holds: bool
    top1_agreement: float | None = None
    kl: float | None = None
    argmax_agreement: float | None = None


@dataclass(frozen=True)
class CurvePoint:
    """One measured band: ``value`` is the box band as a fraction of Nyquist (``box``), the l1-ball degree
    (``ball``) or the number of kept (frequency, direction) pairs counted per complex frequency (``rank``)."""

    value: float
    change: OutputChange


@dataclass(frozen=True)
class NeedCurve:
    """One search over kept bands on the decide inputs.

    ``points`` sorted by value; ``needed`` the smallest value within tolerance (None: not even the full band
    holds, which the sanity check rules out, or the search was not run); ``search`` is ``bisection`` (the
    change assumed monotone in the band) or ``scan`` (every candidate measured); ``monotone`` False when the
    measured points contradict monotonicity (then a scan decided, if the budget allowed, see ``notes``).
    """

    kind: str
    points: tuple[CurvePoint, ...]
    needed: float | None
    candidates: int
    search: str
    monotone: bool = True
    held_out: OutputChange | None = None  # the needed band's change on the held-out inputs
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RingImportance:
    """Band-stop: the change when degrees ``low..high`` (inclusive, one ring when equal) are zeroed."""

    low: int
    high: int
    frequencies: int  # complex frequencies in the ring(s)
    change: OutputChange


@dataclass(frozen=True)
class LayerNeeds:
    """What one probed feature map (the tensor a conv layer reads) needs.

    ``grid``/``channels`` of the feature map; ``also_read_by``: other conv layers reading the same tensor (one
    probe serves them). ``box``/``ball``/``rank``: the three searches. ``needed_band`` is the box's needed
    band as a fraction of the grid's Nyquist limit, ``needed_degree`` the l1 ball's needed degree,
    ``needed_rank`` the needed number of (frequency, direction) pairs (each complex frequency counted) with
    ``needed_rank_type`` its count per degree; ``profile_rank``/``profile_type`` the activation profile's mode
    count of the same tensor on the decide inputs under the report's tolerance rule; ``directions`` =
    ``|N| * C`` (all frequency-channel directions). ``safe_factor`` is the largest down-sampling factor s
    (dividing every axis) whose band 1/s holds the need, ``safe_change`` its measured change on held-out
    inputs (None when s = 1). ``sanity_full``/``sanity_zero`` are the full band's and frequency 0's changes.
    """

    name: str
    grid: tuple[int, ...]
    channels: int
    reason: str
    box: NeedCurve
    ball: NeedCurve
    rank: NeedCurve
    rings: tuple[RingImportance, ...]
    needed_band: float | None
    needed_degree: int | None
    needed_rank: int | None
    needed_rank_type: Mapping[int, int]
    profile_rank: int
    profile_type: Mapping[int, int]
    directions: int
    safe_factor: int
    safe_change: OutputChange | None
    sanity_full: OutputChange
    sanity_zero: OutputChange
    also_read_by: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def reliable(self) -> bool:
        """The machinery reproduces the reference: the full band changes the outputs by at most
        :data:`FULL_BAND_LIMIT` (else every other number of this layer is meaningless)."""
        return self.sanity_full.relative_l2 <= FULL_BAND_LIMIT

    @property
    def everything_needed(self) -> bool:
        """Nothing can be cut: the full band is needed and no down-sampling holds (on a reliable probe)."""
        return self.reliable and (self.needed_band is None or self.needed_band >= 1.0) and self.safe_factor == 1


@dataclass(frozen=True)
class JointCheck:
    """Every recommended cut at once, on the held-out inputs. ``kind``: ``downsampling`` (each layer's box
    band 1/safe_factor) or ``rank`` (each layer's needed rank). ``cuts``: (layer, factor or rank)."""

    kind: str
    cuts: tuple[tuple[str, int], ...]
    change: OutputChange | None  # None when there is no cut to check


@dataclass(frozen=True)
class InputSplit:
    """Which inputs decided and which were held out (``rule`` in words)."""

    rule: str
    decide: int
    held_out: int


@dataclass(frozen=True)
class NeedsCost:
    """Work done: ``forward_passes`` counts model runs on one batch (a suffix-only run counts as one);
    ``input_evaluations`` inputs pushed through them; ``estimated`` the up-front estimate."""

    forward_passes: int
    input_evaluations: int
    estimated: int
    cpu_seconds: float
    wall_seconds: float
    plain_forward_seconds: float | None = None  # the reference pass: one plain run over the decide inputs, for scale


@dataclass(frozen=True)
class NeedsReport(NeedsViews):
    """The report of ``cbn-inspect needs``: one :class:`LayerNeeds` per probe, the joint checks, the summary.

    ``summary`` holds plain-language sentences (the terminal prints them as they are); ``output`` describes
    the model's output (shape, ``class`` / ``dense`` / ``other``).
    """

    source: str
    runner: str
    settings: NeedsSettings
    inputs: Mapping[str, Any]
    split: InputSplit
    output: Mapping[str, Any]
    layers: tuple[LayerNeeds, ...]
    joint: tuple[JointCheck, ...]
    summary: tuple[str, ...]
    cost: NeedsCost
    notes: tuple[str, ...] = ()
    tolerance: str = ""  # the activation profile's tolerance rule, in words

    @property
    def everything_needed(self) -> bool:
        return bool(self.layers) and all(layer.everything_needed for layer in self.layers)

    @property
    def needed_directions(self) -> tuple[int, int]:
        """(needed, total) frequency-channel directions summed over the probed layers."""
        needed = sum(layer.needed_rank if layer.needed_rank is not None else layer.directions for layer in self.layers)
        return needed, sum(layer.directions for layer in self.layers)
