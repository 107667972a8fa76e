"""The activation profile: run a model over inputs, accumulate per-frequency Gram matrices, count, locate.

:func:`profile_activations` drives a :class:`Runner` over an :class:`InputStream` batch by batch; every
conv feature map the runner hands over goes into that layer's :class:`GramAccumulator` and is dropped, so
memory does not grow with the number of inputs. Before the first input, :mod:`._plan` sizes the run against
``--max-memory`` (batch size, groups of layers with one pass over the inputs each, or exit 7). At the end each layer's singular values become a
:class:`Spectrum`, counted by the weight side's own :func:`count_modes` (same tolerance rule, degree
counts, utilisation) and the layers go through the same :func:`locate_bottleneck`.

A layer whose input is the very tensor another layer read in the same forward pass (a ResNet's
downsample shortcut next to the block's first conv) is accumulated once and reported for both. A conv
module called several times in one forward pass is profiled at its first call (noted).
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from typing import Any, Callable

import numpy as np
import torch

from ..analysis import locate_bottleneck
from ..analysis._threads import analysis_threads, parallel_map
from ..analysis.counting import count_modes
from .._limits import TimeBudget, current_rss_bytes, max_memory_bytes
from ..errors import AnalysisError, NothingToAnalyseError, ResourceLimitError, UsageError
from ..records import ActivationLayerReport, ActivationReport, ActivationSettings, LayerMetrics, Settings
from ._plan import ActivationPlan, LayerShape, plan_memory, probe_layers, release_memory
from .gram import GramAccumulator
from .inputs import open_inputs, resolve_preprocessing
from .runners import Runner

Progress = Callable[[int, int], None]  # (inputs done, inputs total)


class _Collector:
    """The sink a runner calls during one pass: the Gram accumulators of one group of layers.

    Aliases (a layer whose input is the very tensor an earlier layer read, found by the probe) are checked
    in every batch: the data flow must not change between batches. A layer called again within a forward
    pass is accumulated at its first call only.
    """

    def __init__(self, group: tuple[str, ...], shapes: dict[str, tuple[int, ...]], aliases: dict[str, str],
                 center: bool, device: str) -> None:
        self.accumulators = {name: GramAccumulator(shapes[name][0], shapes[name][1:], center=center, device=device)
                             for name in group}
        self.aliases = {alias: target for alias, target in aliases.items() if target in self.accumulators}
        self._watched = set(self.aliases.values())
        self._batch: dict[str, Any] = {}

    def start_batch(self) -> None:
        self._batch = {}

    def __call__(self, name: str, tensor: Any) -> None:
        if name in self._batch:
            return
        if name in self.accumulators:
            self._batch[name] = tensor if name in self._watched else None
            self.accumulators[name].add(tensor)
        elif name in self.aliases:
            self._batch[name] = None
            if self._batch.get(self.aliases[name]) is not tensor:
                raise UsageError(f"layer {name}: its input was the same tensor as {self.aliases[name]}'s in the "
                                 "first batch but not in a later one; the model's data flow changes between batches")


def profile_activations(runner: Runner, settings: ActivationSettings, analysis: Settings | None = None,
                        progress: Progress | None = None, size_note: str | None = None) -> ActivationReport:
    """Run ``runner`` over ``settings.inputs`` and profile every conv layer's feature map.

    Memory is planned first (:mod:`._plan`): a probe pass of one zero input gives every layer's shape; the
    batch size and the groups of layers accumulated together (one pass over the inputs per group) are
    chosen to fit ``--max-memory`` (``analysis.max_memory_mb``, else its default), or the run is refused
    at once (exit 7). The time budget (``analysis.timeout_s``) is checked between batches, and after the
    first batch against the estimated length of the whole run. ``size_note`` says how the input size was
    taken from the images (:func:`._image_size.size_from_images`), for the JSON.
    """
    analysis = analysis or Settings()
    started = time.perf_counter()
    clock = TimeBudget(analysis.timeout_s, f"--activations {settings.inputs}")
    limit = max_memory_bytes(analysis)
    prep = resolve_preprocessing(runner.model_input, settings)
    stream = open_inputs(settings.inputs, prep, settings, room_bytes=limit - current_rss_bytes())
    pattern = re.compile(analysis.layer_filter) if analysis.layer_filter else None
    with _torch_threads(analysis_threads()):
        layers, repeats = _probe(runner, (stream.prep.channels, *stream.prep.spatial), pattern)
        if not layers:
            what = f" matching --layers {analysis.layer_filter!r}" if analysis.layer_filter else ""
            raise NothingToAnalyseError(f"no conv layer{what} ran on the inputs")
        release_memory()  # what the weight report and the probe freed goes back before the room is measured
        plan = plan_memory(layers, settings.batch_size, limit - current_rss_bytes(),
                           onnx=runner.kind == "onnxruntime", limit_mb=limit // 2**20,
                           fixed_batch=runner.model_input.fixed_batch)
        shapes = {layer.name: layer.shape for layer in layers}
        aliases = {layer.name: layer.alias for layer in layers if layer.alias}
        spectra: dict[str, Any] = {}
        done = 0
        if progress:
            progress(0, stream.count * len(plan.groups))
        for index, group in enumerate(plan.groups):
            collector = _Collector(group, shapes, aliases, settings.center, settings.device)
            _select(runner, set(group) | {a for a, t in aliases.items() if t in group})
            try:
                count = _run(runner, stream, collector, plan, progress, clock, index)
            finally:
                _select(runner, None)
            if index and count != done:
                raise UsageError(f"--activations {settings.inputs}: {count} inputs in pass {index + 1} but {done} "
                                 "before: the inputs changed during the run")
            done = count
            spectra.update(_decompose(collector, list(group)))
            del collector  # the group's Gram sums go before the next group's are allocated
            release_memory()
    layers_out = _finish(layers, spectra, analysis, done)
    names = [layer.name for layer in layers_out]
    bottleneck = locate_bottleneck(names, [layer.metrics for layer in layers_out], analysis)
    inputs = stream.describe()
    inputs["centering"] = {
        "frequency_0_mean_removed": settings.center,
        "description": ("the batch mean of each channel removed at frequency 0 (exact, streaming)"
                        if settings.center else "none: frequency 0 carries each channel's mean over the inputs"),
    }
    inputs["batch_size"] = plan.batch_size
    if size_note is not None:
        inputs["preprocessing"]["size_from"] = size_note
    notes = list(runner.notes) + list(plan.notes)
    for name, count in repeats.items():
        notes.append(f"{name} ran {count} times per forward pass: profiled at its first call")
    return ActivationReport(inputs=inputs, layers=tuple(layers_out), bottleneck=bottleneck, settings=settings,
                            runner=runner.kind, notes=tuple(notes),
                            seconds=round(time.perf_counter() - started, 4))


def _probe(runner: Runner, shape: tuple[int, ...], pattern) -> tuple[list[LayerShape], dict[str, int]]:
    try:
        return probe_layers(runner, shape, pattern)
    except (UsageError, NothingToAnalyseError):
        raise
    except Exception as exc:  # the model's own failure on an input of this shape
        text = " ".join(str(exc).split())[:200]
        raise UsageError(f"running the model on inputs of shape {(1, *shape)} failed ({type(exc).__name__}: {text})",
                         hint="check --input-size (and --activation-side) for this model") from exc


def _select(runner: Runner, layers: set[str] | None) -> None:
    """Runners that can fetch only some feature maps (onnxruntime) fetch only this pass's."""
    select = getattr(runner, "select", None)
    if select is not None:
        select(layers)


@contextmanager
def _torch_threads(n: int):
    """torch's intra-op threads for the forward pass and the Gram GEMMs (the analysis keeps torch at one
    thread per worker, see :mod:`cbn_inspect.analysis._threads`); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(runner: Runner, stream, collector: _Collector, plan: ActivationPlan, progress: Progress | None,
         clock: TimeBudget, index: int) -> int:
    """One pass over the inputs for one group of layers; the number of inputs fed."""
    done = 0
    stream.seen = 0
    passes = len(plan.groups)
    first = time.monotonic()
    for batch in stream.batches(plan.batch_size):
        clock.check("during the activation profile")
        collector.start_batch()
        try:
            runner.run(batch, collector)
        except (UsageError, NothingToAnalyseError):
            raise
        except Exception as exc:  # the model's own failure on these inputs: one line, with the shape
            text = " ".join(str(exc).split())[:200]
            raise UsageError(f"running the model on inputs of shape {tuple(batch.shape)} failed "
                             f"({type(exc).__name__}: {text})",
                             hint="check --input-size (and --activation-side) for this model") from exc
        done += len(batch)
        if index == 0 and done == len(batch):
            _check_time(clock, time.monotonic() - first, len(batch), stream.count * passes)
        if progress:
            progress(index * stream.count + done, stream.count * passes)
    return done


def _check_time(clock: TimeBudget, seconds: float, inputs: int, total: int) -> None:
    """After the first batch: refuse a run whose estimated length passes the time budget (exit 7)."""
    if clock.seconds is None or inputs == 0:
        return
    left = clock.seconds - (time.monotonic() - clock.started)
    estimate = seconds / inputs * total
    if estimate > 2 * max(left, 0.0) + 1.0:
        fit = max(1, int(inputs * max(left, 0.0) / max(seconds, 1e-9)))
        raise ResourceLimitError(f"{clock.path}: about {estimate:.0f} s for {total:,} input passes at "
                                 f"{seconds / inputs:.3g} s each; --timeout leaves {max(left, 0.0):.0f} s",
                                 hint=f"about {fit:,} inputs fit (--max-inputs), or a larger --timeout")


def _decompose(collector: _Collector, names: list[str]) -> dict[str, Any]:
    """Every accumulator's spectrum, its squared singular values in chunks of frequencies on the analysis
    threads. A Gram sum that overflowed (the model's float32 feature maps reached Inf or NaN) is refused."""
    jobs = []
    for name in names:
        acc = collector.accumulators[name]
        # the diagonal (each channel's energy) is the largest entry of its row, and any Inf or NaN in a
        # feature map reaches it: checking it is enough, without a copy of the whole accumulator
        if (not bool(torch.isfinite(torch.diagonal(acc.gram, dim1=1, dim2=2).real).all())
                or not bool(torch.isfinite(acc._sum).all())):
            raise AnalysisError(f"layer {name}: its feature maps hold non-finite values (NaN or Inf) on these "
                                "inputs: the model overflows float32 on them",
                                hint="check the inputs' scale (--mean/--std) or pick layers with --layers")
        # about 4 MB of matrices per chunk: enough work per call, and several chunks for the threads
        per = max(1, (1 << 22) // (16 * acc.channels * acc.channels))
        jobs += [(name, acc, rows) for rows in acc.chunks(per)]
    parts = parallel_map(lambda job: job[1].squared_values(job[2]), jobs)
    out: dict[str, list] = {name: [] for name in names}
    for (name, _, _), part in zip(jobs, parts):
        out[name].append(part)
    return {name: collector.accumulators[name].spectrum(np.concatenate(out[name])) for name in names}


def _finish(layers: list[LayerShape], spectra: dict[str, Any], analysis: Settings,
            count: int) -> list[ActivationLayerReport]:
    metrics = {name: count_modes(spectrum, analysis.tolerance) for name, spectrum in spectra.items()}
    out = []
    for layer in layers:
        target = layer.alias or layer.name
        shape = layer.shape
        out.append(ActivationLayerReport(
            name=layer.name, grid=tuple(shape[1:]), channels=int(shape[0]), metrics=metrics[target],
            inputs_seen=count, nyquist_fraction=nyquist_fraction(metrics[target]),
            spectrum=spectra[target] if analysis.keep_spectra else None,
            shared_with=layer.alias,
            notes=(f"same input tensor as {layer.alias}: profiled once",) if layer.alias else (),
        ))
    return out


def nyquist_fraction(metrics: LayerMetrics | None) -> float | None:
    """Highest kept frequency over the grid's Nyquist limit: max over kept m of max_j |m_j|_w / (n_j / 2)."""
    if metrics is None or not metrics.kept_frequencies:
        return None
    grid = np.asarray(metrics.grid, dtype=np.float64)
    freqs = np.asarray([f for f, _ in metrics.kept_frequencies], dtype=np.float64)
    wrapped = np.minimum(freqs, grid - freqs)
    return float((wrapped / (grid / 2.0)).max())
