"""Plain records shared by every loader, the analysis and every reporter.

One frozen dataclass per idea:

- :class:`ConvLayer` -- a convolution as a loader found it (name, stored shape, declared geometry, where its
  weight lives). Loaders declare the layout; nothing downstream guesses it from the shape.
- :class:`Spectrum` -- the per-frequency singular values of one layer (analysis output, arrays).
- :class:`LayerMetrics` -- the counts and soft measures derived from a spectrum under one tolerance rule.
- :class:`LayerReport`, :class:`Bottleneck`, :class:`ModelReport` -- what reporters consume.
- :class:`ActivationSettings`, :class:`ActivationLayerReport`, :class:`ActivationReport` -- the activation
  profile (:mod:`cbn_inspect.activations`), hung on ``ModelReport.activations``; its layers carry the same
  :class:`LayerMetrics` and its bottleneck is a :class:`Bottleneck`.

Arrays are numpy, never torch, once analysis is done, so reports pickle cheaply and serialise without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:  # numpy is imported where arrays are made, so the command line can validate options without it
    import numpy as np

# How sure an order is when its loader did not say: a trace or declared order is the data flow; names are a guess.
ORDER_CONFIDENCE = {"trace": "high", "graph": "high", "metadata": "high", "file": "medium", "shapes": "low", "natural-sort": "low"}

# Where a layer's grid came from, in THEORY.md's order of preference.
GRID_SOURCES = ("trace", "metadata", "flag", "default")


class WeightSource(Protocol):
    """Anything that can produce the layer's stored weight tensor on demand (lazily, one layer at a time)."""

    def load(self) -> Any:  # returns a torch.Tensor
        ...


@dataclass(frozen=True)
class InMemoryWeight:
    """A weight already in memory (pickled checkpoints, traced modules)."""

    tensor: Any

    def load(self) -> Any:
        return self.tensor


@dataclass(frozen=True)
class BatchNormParams:
    """A BatchNorm that follows a conv; folded into the conv's output channels before analysis."""

    name: str
    weight: Any  # torch.Tensor (C_out,) or None when affine=False
    running_var: Any  # torch.Tensor (C_out,)
    eps: float = 1e-5


@dataclass(frozen=True)
class ConvLayer:
    """One convolution as loaded. Geometry fields are declared by the loader (or the user), never guessed.

    ``grid`` is the layer's input spatial size (None until a grid rule fills it). ``*_source`` fields say
    whether a value was declared (``metadata``, ``trace``, ``flag``) or assumed (``assumed``/``default``).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    weight: WeightSource = field(repr=False, compare=False)
    order: int = 0
    groups: int = 1
    stride: tuple[int, ...] | None = None
    dilation: tuple[int, ...] | None = None
    transposed: bool = False
    padding_mode: str = "unknown"
    grid: tuple[int, ...] | None = None
    grid_source: str = "default"
    geometry_source: str = "assumed"
    batchnorm: BatchNormParams | None = field(default=None, repr=False, compare=False)
    notes: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # what the loader knows is odd about the layer (e.g. "quantised")
    branch: str | None = None  # the alternative body (an ONNX If branch) the layer lies in, if any

    @property
    def ndim(self) -> int:
        """Number of spatial axes (1, 2 or 3)."""
        return len(self.shape) - 2

    @property
    def kind(self) -> str:
        base = "conv_transpose" if self.transposed else "conv"
        return f"{base}{self.ndim}d"

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.shape[2:])

    @property
    def in_channels(self) -> int:
        return self.shape[0] if self.transposed else self.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.shape[1] * self.groups if self.transposed else self.shape[0]


@dataclass(frozen=True)
class SourceInfo:
    """Where a model came from and what the file said about itself."""

    path: str
    format: str
    sha256: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    architecture: str | None = None  # e.g. "timm:resnet50", when one is known
    architecture_source: str | None = None  # "source" (timm:NAME), "flag" (--arch), "config", "identified"


@dataclass(frozen=True)
class LoadedModel:
    """A loader's result: the conv layers in execution (or natural) order, and what was skipped and why."""

    source: SourceInfo
    layers: tuple[ConvLayer, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (tensor name, reason)
    order_source: str = "natural-sort"  # or "metadata", "trace", "file" (the state dict's own), "shapes", "graph"
    order_confidence: str | None = None  # "high", "medium", "low" (None: the loader did not say)

    @property
    def confidence(self) -> str:
        """The order's confidence, as the loader said or by :data:`ORDER_CONFIDENCE`."""
        return self.order_confidence or ORDER_CONFIDENCE.get(self.order_source, "low")


@dataclass(frozen=True)
class Spectrum:
    """Per-frequency singular values of one layer's operator.

    One row per conjugate class of frequencies on ``grid`` (the grid the per-frequency matrices live on:
    the coarse grid for strided layers). ``multiplicity`` is 2 where the row stands for m and -m, 1 for
    self-conjugate frequencies. Each row holds the singular values of W_hat(m), union over groups, sorted in
    descending order. The full-grid spectrum is recovered with :meth:`full`.
    """

    grid: tuple[int, ...]
    frequencies: np.ndarray  # (F, d) int64, representatives
    multiplicity: np.ndarray  # (F,) int64, 1 or 2
    values: np.ndarray  # (F, r) float64, descending per row
    exact: bool = True
    # The most singular values a frequency can hold, given the geometry (union over groups); None = r. Below r
    # for a strided conv whose kernel leaves polyphase components empty (a strided 1x1 conv): those columns
    # are structural zeros, neither capacity nor discarded values.
    rank_bound: int | None = None

    @property
    def width(self) -> int:
        """Singular values per frequency that the layer can hold (structural zeros left out)."""
        r = self.values.shape[1]
        return r if self.rank_bound is None else min(r, self.rank_bound)

    @property
    def count(self) -> int:
        """Number of singular values of the whole operator that can be non-zero (all frequencies of the full grid)."""
        return int(self.multiplicity.sum()) * self.width

    def full(self) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """Every frequency of the full grid with its singular values, in row-major frequency order."""
        import numpy as np

        grid = np.asarray(self.grid)
        rows: dict[tuple[int, ...], np.ndarray] = {}
        for freq, mult, vals in zip(self.frequencies, self.multiplicity, self.values[:, : self.width]):
            rows[tuple(int(v) for v in freq)] = vals
            if mult == 2:
                rows[tuple(int(v) for v in (-freq) % grid)] = vals
        return sorted(rows.items())


@dataclass(frozen=True)
class ToleranceRule:
    """How a singular value is judged kept. ``name`` in relative, absolute, gap, energy."""

    name: str = "relative"
    value: float = 0.1

    def describe(self) -> str:
        return {
            "relative": f"sigma > {self.value:g} x the layer's largest",
            "absolute": f"sigma > {self.value:g}",
            "gap": f"above the largest gap in the sorted spectrum, if at least {self.value:g}x",
            "energy": f"fewest modes holding {self.value:.4g} of sum sigma^2",
        }[self.name]


@dataclass(frozen=True)
class LayerMetrics:
    """Counts and soft measures of one layer under one tolerance rule.

    ``degree_counts`` maps metric (``l1``/``linf``) -> degree -> kept count, per complex frequency;
    ``pair_degree_counts`` the same with each conjugate pair counted once.
    """

    mode_count: int
    capacity: int
    threshold: float
    spectral_norm: float
    stable_rank: float
    effective_rank: float | None  # None on the counts route (it needs every value)
    smallest_kept: float | None
    largest_discarded: float | None
    gap_ratio: float | None
    degree_counts: Mapping[str, Mapping[int, int]]
    pair_degree_counts: Mapping[str, Mapping[int, int]]
    energy_by_degree: Mapping[str, Mapping[int, float]]
    kept_frequencies: tuple[tuple[tuple[int, ...], int], ...]  # (representative frequency, kept count)
    grid: tuple[int, ...] = ()  # the grid the frequencies live on
    profile: tuple[float, ...] = ()  # all singular values sorted descending, sampled at PROFILE_POINTS quantiles
    # the largest singular values (full grid, with multiplicity), descending, at most counting.LEADING_POINTS
    leading: tuple[float, ...] = ()
    # counts route only, where gap_ratio is unknown but exists: (lower, upper) bounds on the gap_ratio the full
    # route would give (from the threshold and the frequencies the route solved); None where gap_ratio is known
    gap_bounds: tuple[float, float] | None = None

    def gap_at(self, count: int) -> float | None:
        """sigma_count / sigma_(count+1) of the sorted full-grid spectrum: how clean a split after ``count``
        values would be. The layer's own ``gap_ratio`` when ``count`` is its mode count; None when unknown."""
        if count == self.mode_count:
            return self.gap_ratio
        if count < 1 or count >= len(self.leading):
            return None
        below = max(self.leading[count], self.spectral_norm * 1e-7)
        return self.leading[count - 1] / below if below > 0 else None

    def kept_on_full_grid(self) -> tuple[tuple[tuple[int, ...], int], ...]:
        """Kept counts at every frequency of the full grid (each representative and its mirror), sorted."""
        out = {}
        for freq, count in self.kept_frequencies:
            out[freq] = count
            out[tuple((-f) % n for f, n in zip(freq, self.grid))] = count
        return tuple(sorted(out.items()))

    @property
    def utilisation(self) -> float:
        return self.mode_count / self.capacity if self.capacity else 0.0


@dataclass(frozen=True)
class LayerReport:
    """One analysed layer: the layer as loaded, the geometry actually used, its metrics, and flags."""

    layer: ConvLayer
    spectrum_grid: tuple[int, ...] | None
    exact: bool
    metrics: LayerMetrics | None
    spectrum: Spectrum | None = None
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # "full": every singular value was computed; "counts": counts above the threshold, the largest value and
    # traces only (analysis/counts.py): effective rank, smallest kept, largest discarded, gap and profile unknown
    route: str = "full"


@dataclass(frozen=True)
class Bottleneck:
    """The detected bottleneck, or ``found=False`` with the reason. ``start``/``end`` are layer names."""

    found: bool
    reason: str
    start: str | None = None
    end: str | None = None
    start_index: int | None = None
    end_index: int | None = None
    rank: int | None = None
    degree_counts: Mapping[int, int] = field(default_factory=dict)
    frequencies: tuple[tuple[tuple[int, ...], int], ...] = ()
    strength: float = 0.0
    strength_label: str = "none"
    gap_ratio: float | None = None  # smallest over the run
    typical_gap_ratio: float | None = None  # median over the run
    clean: bool = False  # every layer of the run reaches min_gap
    clean_layers: int = 0
    utilisation: float | None = None
    plateau_length: int = 0
    consistent_type: bool = False
    candidate: Mapping[str, Any] | None = None  # the best run examined, when found is False
    # What the call rests on (issue 16): layers left out of the main path, edge layers trimmed off the run,
    # the best candidate not reported and why, and a cap on the label (wrapped kernels), each with a reason.
    members: tuple[int, ...] = ()  # indices of the run's layers (side layers inside the span left out)
    side_layers: tuple[tuple[int, str], ...] = ()  # (index, why it is off the main path)
    trimmed: tuple[tuple[int, str], ...] = ()  # (index, why this entry/exit layer is not part of the plateau)
    rejected: Mapping[str, Any] | None = None  # start, end, start_index, end_index, rank, strength, reason
    wrapped_layers: tuple[int, ...] = ()  # run layers analysed with taps wrapped (grid smaller than the kernel)
    label_cap: str | None = None  # why the label is lower than the evidence alone would give


@dataclass(frozen=True)
class LayerEvidence:
    """What the bottleneck call may know about a layer besides its counts (all optional).

    Weight spectra fill it from :class:`LayerReport`; an activation profile can fill what it knows.
    ``grid`` is the layer's input grid; ``wrapped`` says the kernel was larger than the grid (taps wrapped).
    """

    in_channels: int | None = None
    out_channels: int | None = None
    grid: tuple[int, ...] | None = None
    exact: bool = True
    wrapped: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything that changes a result; recorded in every output."""

    tolerance: ToleranceRule = ToleranceRule()
    degree_metric: str = "l1"
    grid: tuple[int, ...] | None = None  # user flag; None = metadata or default
    default_grid: int = 32
    precision: str = "float32"
    fold_batchnorm: bool = True
    layer_filter: str | None = None
    min_plateau: int = 2
    plateau_tolerance: float = 0.25
    min_gap: float = 10.0
    weak_gap: float = 3.0
    max_utilisation: float = 0.5
    edge_layers: int = 1
    keep_spectra: bool = False
    # "full" (the default, --exact-values): every singular value; "auto" (--counts-route): the counts route
    # (analysis/counts.py) where the request needs only counts (relative/absolute rule, no kept spectra, float32
    # level, CPU) and it pays per layer. Counts, largest values and the bottleneck call are the same either way;
    # "auto" is not the default because it was measured slower end to end (README "Speed: the counts route").
    spectrum_route: str = "full"
    device: str = "cpu"
    memory_budget_mb: int = 256
    threads: int | None = None  # analysis worker threads; None = the cores available (does not change results)
    # Resource bounds (do not change results; a source past one is refused with ResourceLimitError):
    max_memory_mb: int | None = None  # None = half the physical memory (loaders._policy.default_max_memory_mb)
    max_layers: int = 10_000
    timeout_s: float | None = None  # per-source time budget for load + analysis; None = no limit


@dataclass(frozen=True)
class ModelReport:
    """Everything known about one model: where it came from, how it was analysed, per layer, and the call."""

    source: SourceInfo
    settings: Settings
    layers: tuple[LayerReport, ...]
    bottleneck: Bottleneck
    skipped: tuple[tuple[str, str], ...] = ()
    order_source: str = "natural-sort"
    order_confidence: str | None = None
    warnings: tuple[str, ...] = ()
    seconds: float | None = None
    activations: "ActivationReport | None" = None  # with --activations: the data-side profile

    # Views that delegate to the reporters (imported on use, so this module stays free of heavy imports).

    def to_frame(self) -> Any:
        """One row per layer as a ``pandas.DataFrame``; columns in :mod:`cbn_inspect.report.frame`."""
        from .report.frame import report_frame

        return report_frame(self)

    def plot(self, path: Any = None, panels: tuple[str, ...] | None = None) -> Any:
        """The report's figure (matplotlib ``Figure``); with ``path``, also written there (PNG/SVG/PDF)."""
        from .report.figures import plot_report, write_figure

        fig = plot_report(self, panels)
        if path is not None:
            write_figure(fig, path)
        return fig

    def to_html(self, figures: bool = True) -> str:
        """The self-contained HTML page of ``--html``."""
        from .report.html import report_html

        return report_html(self, figures=figures)

    def _repr_html_(self) -> str:
        """Jupyter's view: summary, heat map, layer table (no matplotlib needed)."""
        from .report.html import report_fragment

        return report_fragment(self)


# --------------------------------------------------------------------------------------------------------
# Activations: what the data does inside an executed model (cbn_inspect.activations)
# --------------------------------------------------------------------------------------------------------

from ._parse import ACTIVATION_SIDES  # noqa: E402  (defined without numpy for the command line)


@dataclass(frozen=True)
class ActivationSettings:
    """How a model is run to profile its activations; recorded in every output.

    ``inputs`` names what is fed: a folder of images, a tensor file (``.npy``, ``.pt``, ``.safetensors``),
    ``noise`` (seeded Gaussian) or ``samples`` (photographs bundled with scikit-learn and scikit-image).
    ``side`` picks the feature map of each conv layer that is profiled: the one it reads (``input``,
    default: the representation the layer receives) or the one it writes (``output``). ``center`` removes
    the batch mean at frequency 0. ``input_size``/``mean``/``std``/``interpolation`` override the model's
    own preprocessing config (None: follow it).
    """

    inputs: str
    side: str = "input"
    center: bool = False
    batch_size: int = 32
    max_inputs: int | None = None
    seed: int = 0
    input_size: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    device: str = "cpu"
    nonfinite: str = "refuse"  # inputs holding NaN/Inf: "refuse" (exit 3) or "skip" (skipped, counted in a note)


@dataclass(frozen=True)
class ActivationLayerReport:
    """One conv layer's feature map, profiled over the inputs.

    ``grid`` is the feature map's own spatial size (the grid its frequencies live on), ``channels`` its
    channel count; ``metrics`` are the same counts as for weights (:class:`LayerMetrics`), on the squared
    singular values of the per-frequency ``C x B`` matrices, capacity ``|N| * min(C, B)``.
    ``nyquist_fraction`` is the highest kept frequency as a fraction of the grid's Nyquist limit (l-inf over
    axes: 1.0 means some kept frequency reaches n/2 on some axis); None when nothing is kept.
    """

    name: str
    grid: tuple[int, ...]
    channels: int
    metrics: LayerMetrics | None
    inputs_seen: int = 0
    nyquist_fraction: float | None = None
    spectrum: Spectrum | None = None
    shared_with: str | None = None  # the layer whose input is the same tensor (profiled once)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActivationReport:
    """The activation-side profile of a model: inputs used, one record per conv layer, and the bottleneck.

    ``inputs`` describes what was fed (``kind``, ``count``, ``source``, ``preprocessing``, ``centering``);
    ``bottleneck`` is the same call as for weights (:func:`cbn_inspect.analysis.locate_bottleneck`) on the
    activation metrics.
    """

    inputs: Mapping[str, Any]
    layers: tuple[ActivationLayerReport, ...]
    bottleneck: Bottleneck
    settings: ActivationSettings
    runner: str = ""  # how the model was executed: timm, module, torchscript, onnxruntime, sample
    notes: tuple[str, ...] = ()
    seconds: float | None = None
