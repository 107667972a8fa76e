"""The activation profile: run a model over inputs, accumulate per-frequency Gram matrices, count, locate.

:func:`profile_activations` drives a :class:`Runner` over an :class:`InputStream` batch by batch; every
conv feature map the runner hands over goes into that layer's :class:`GramAccumulator` and is dropped, so
memory does not grow with the number of inputs. At the end each layer's singular values become a
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
from ..errors import NothingToAnalyseError, UsageError
from ..records import ActivationLayerReport, ActivationReport, ActivationSettings, LayerMetrics, Settings
from .gram import GramAccumulator
from .inputs import open_inputs, resolve_preprocessing
from .runners import Runner

Progress = Callable[[int, int], None]  # (inputs done, inputs total)


class _Collector:
    """The sink a runner calls: one accumulator per layer, aliases by tensor identity within a batch."""

    def __init__(self, center: bool, device: str, pattern: re.Pattern | None) -> None:
        self.center, self.device, self.pattern = center, device, pattern
        self.accumulators: dict[str, GramAccumulator] = {}
        self.aliases: dict[str, str] = {}
        self.order: list[str] = []
        self.repeats: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._batch: dict[str, Any] = {}
        self._by_id: dict[int, str] = {}

    def start_batch(self) -> None:
        self._batch, self._by_id = {}, {}

    def __call__(self, name: str, tensor: Any) -> None:
        if self.pattern is not None and not self.pattern.search(name):
            return
        if name in self._batch:
            self.repeats[name] = self.repeats.get(name, 1) + 1
            return
        self._batch[name] = tensor  # holds the reference for the batch, so ids stay unique
        if tensor.ndim < 3:
            return
        if name not in self.order:
            self.order.append(name)
            self.shapes[name] = tuple(tensor.shape[1:])
            other = self._by_id.get(id(tensor))
            if other is not None:
                self.aliases[name] = other
            else:
                self.accumulators[name] = GramAccumulator(tensor.shape[1], tuple(tensor.shape[2:]),
                                                          center=self.center, device=self.device)
        self._by_id.setdefault(id(tensor), name)
        if name in self.aliases:
            if self._batch.get(self.aliases[name]) is not tensor:
                raise UsageError(f"layer {name}: its input was the same tensor as {self.aliases[name]}'s in the "
                                 "first batch but not in a later one; the model's data flow changes between batches")
            return
        self.accumulators[name].add(tensor)


def profile_activations(runner: Runner, settings: ActivationSettings, analysis: Settings | None = None,
                        progress: Progress | None = None, size_note: str | None = None) -> ActivationReport:
    """Run ``runner`` over ``settings.inputs`` and profile every conv layer's feature map. ``size_note`` says
    how the input size was taken from the images (:func:`._image_size.size_from_images`), for the JSON."""
    analysis = analysis or Settings()
    started = time.perf_counter()
    prep = resolve_preprocessing(runner.model_input, settings)
    stream = open_inputs(settings.inputs, prep, settings)
    pattern = re.compile(analysis.layer_filter) if analysis.layer_filter else None
    collector = _Collector(settings.center, settings.device, pattern)
    if progress:
        progress(0, stream.count)
    with _torch_threads(analysis_threads()):
        done = _run(runner, stream, collector, settings, progress)
    collector.start_batch()
    if not collector.order:
        what = f" matching --layers {analysis.layer_filter!r}" if analysis.layer_filter else ""
        raise NothingToAnalyseError(f"no conv layer{what} ran on the inputs")
    layers = _finish(collector, analysis, done)
    names = [layer.name for layer in layers]
    bottleneck = locate_bottleneck(names, [layer.metrics for layer in layers], analysis)
    inputs = stream.describe()
    inputs["centering"] = {
        "frequency_0_mean_removed": settings.center,
        "description": ("the batch mean of each channel removed at frequency 0 (exact, streaming)"
                        if settings.center else "none: frequency 0 carries each channel's mean over the inputs"),
    }
    inputs["batch_size"] = settings.batch_size
    if size_note is not None:
        inputs["preprocessing"]["size_from"] = size_note
    notes = list(runner.notes)
    for name, count in collector.repeats.items():
        notes.append(f"{name} ran {count} times per forward pass: profiled at its first call")
    return ActivationReport(inputs=inputs, layers=tuple(layers), bottleneck=bottleneck, settings=settings,
                            runner=runner.kind, notes=tuple(notes),
                            seconds=round(time.perf_counter() - started, 4))


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


def _run(runner: Runner, stream, collector: _Collector, settings: ActivationSettings,
         progress: Progress | None) -> int:
    done = 0
    for batch in stream.batches(settings.batch_size):
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
        if progress:
            progress(done, stream.count)
    return done


def _decompose(collector: _Collector, names: list[str]) -> dict[str, Any]:
    """Every accumulator's squared singular values, in chunks of frequencies on the analysis threads."""
    jobs = []
    for name in names:
        acc = collector.accumulators[name]
        # about 4 MB of matrices per chunk: enough work per call, and several chunks for the threads
        per = max(1, (1 << 22) // (16 * acc.channels * acc.channels))
        jobs += [(name, acc, rows) for rows in acc.chunks(per)]
    parts = parallel_map(lambda job: job[1].squared_values(job[2]), jobs)
    out: dict[str, list] = {name: [] for name in names}
    for (name, _, _), part in zip(jobs, parts):
        out[name].append(part)
    return {name: collector.accumulators[name].spectrum(np.concatenate(out[name])) for name in names}


def _finish(collector: _Collector, analysis: Settings, count: int) -> list[ActivationLayerReport]:
    targets = [name for name in collector.order if name not in collector.aliases]
    spectra = _decompose(collector, targets)
    collector.accumulators.clear()  # free the Gram sums before counting
    metrics = {name: count_modes(spectrum, analysis.tolerance) for name, spectrum in spectra.items()}
    out = []
    for name in collector.order:
        target = collector.aliases.get(name, name)
        shape = collector.shapes[name]
        out.append(ActivationLayerReport(
            name=name, grid=tuple(shape[1:]), channels=int(shape[0]), metrics=metrics[target], inputs_seen=count,
            nyquist_fraction=nyquist_fraction(metrics[target]),
            spectrum=spectra[target] if analysis.keep_spectra else None,
            shared_with=collector.aliases.get(name),
            notes=(f"same input tensor as {collector.aliases[name]}: profiled once",) if name in collector.aliases else (),
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
