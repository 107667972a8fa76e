"""``Monitor``: the analysis of ``cbn-inspect`` on a live training module, every N steps, as JSON lines.

The module is traced once, when the monitor is made (grids, strides, execution order and BatchNorm pairs
come from one forward pass of a zero input in eval mode, as for a whole module passed to ``cbn-inspect``);
each analysis then takes detached CPU copies of the current conv weights (and BatchNorm statistics), binds
them to the traced layers and runs the same :func:`cbn_inspect.analyze_model`. Nothing is written to disk but
the record: one line per analysis, ``{"step": N, ...}`` followed by the fields of ``cbn-inspect --json``.

Usage::

    monitor = cbn_inspect.Monitor(model, every=200, out="cbn.jsonl", input_size=32)
    for batch in loader:
        ...; optimizer.step()
        monitor.step()          # after the update: the record of step N is the model after N updates

With ``background=True`` the loop waits only for the copy of the weights; the analysis and the write run
on one background thread, in step order (call :meth:`Monitor.close`, or use the monitor as a context
manager, to wait for the last records). ``cbn-inspect track cbn.jsonl`` shows the series. :meth:`Monitor.checkpoint_metadata` gives the
``__metadata__`` that makes a safetensors checkpoint of the same model analyse alike (grids and order).
"""

from __future__ import annotations

import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

from ..records import InMemoryWeight, LoadedModel, Settings, SourceInfo, WeightSource


class Monitor:
    """Analyse ``model``'s conv weights every ``every`` calls of :meth:`step`; see the module docstring.

    ``input_size`` (``N``, ``HxW``, ``CxHxW``) is the input the grids are traced at (timm modules know their
    own); without it grids fall back to the settings' default, as for an untraced module. ``start_step`` is
    the step the first :meth:`step` call follows (a resumed run). ``out`` may be None: the records are then
    only returned (and kept in :attr:`last`). ``background=True``: :meth:`step` and :meth:`analyse` return a
    ``Future`` of the record instead, and an analysis error is raised by the next call or :meth:`close`.
    """

    def __init__(
        self,
        model: Any,
        every: int = 100,
        out: str | os.PathLike | None = None,
        settings: Settings | None = None,
        input_size: str | tuple[int, ...] | None = None,
        *,
        start_step: int = 0,
        source: str | None = None,
        background: bool = False,
    ) -> None:
        from ..loaders import parse_input_size
        from ..loaders.pytorch._trace import trace_module

        if int(every) < 1:
            raise ValueError("every must be a positive number of steps")
        self.model = model
        self.every = int(every)
        self.out = Path(out) if out is not None else None
        self.settings = settings or Settings()
        self.global_step = int(start_step)
        self.last: dict[str, Any] | None = None
        self._done: set[int] = set()
        specs, notes, shape, traced = trace_module(model, parse_input_size(input_size))
        self._specs = specs
        self._traced = traced
        label = source or f"live module {type(model).__name__}"
        what = (f"live module ({type(model).__name__}); grids traced at input {'x'.join(map(str, shape))}"
                if shape is not None else
                f"live module ({type(model).__name__}), not traced: pass input_size to trace grids and order")
        self._info = SourceInfo(path=label, format="live-module", notes=(what, *notes))
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="cbn-monitor") if background else None
        self._pending: deque[Future] = deque()

    # -- the schedule --------------------------------------------------------------------------------

    def step(self, global_step: int | None = None) -> dict[str, Any] | Future | None:
        """Count one training step (or set the count to ``global_step``); analyse when it is a multiple of
        ``every``. Returns the record written, else None."""
        self.global_step = self.global_step + 1 if global_step is None else int(global_step)
        if self.global_step % self.every or self.global_step in self._done:
            return None
        return self.analyse(self.global_step)

    def analyse(self, step: int | None = None) -> dict[str, Any] | Future:
        """Analyse the current weights now, write the record (``step`` defaults to the count so far)."""
        step = self.global_step if step is None else int(step)
        loaded = self.snapshot()  # the copy is taken here, in the caller's thread, in both modes
        self._done.add(step)
        if self._pool is None:
            return self._record(step, loaded)
        self._reap(wait=False)
        future = self._pool.submit(self._record, step, loaded)
        self._pending.append(future)
        return future

    def _record(self, step: int, loaded: LoadedModel) -> dict[str, Any]:
        from ..analysis._threads import restored_threads
        from ..inspect import analyze_model
        from ..report.json_report import report_to_dict

        with restored_threads():  # the training loop's torch and BLAS threads are its own again afterwards
            report = analyze_model(loaded, self.settings)
        record = {"step": step, **report_to_dict(report)}
        if self.out is not None:
            line = json.dumps(record, allow_nan=False, ensure_ascii=False, separators=(",", ":")) + "\n"
            with self.out.open("a", encoding="utf-8") as handle:
                handle.write(line)
        self.last = record
        return record

    def _reap(self, wait: bool) -> None:
        """Drop finished background analyses, raising the first error; with ``wait``, all of them."""
        while self._pending and (wait or self._pending[0].done()):
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for background analyses (raising the first error) and stop the background thread."""
        try:
            self._reap(wait=True)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the weights ---------------------------------------------------------------------------------

    def snapshot(self) -> LoadedModel:
        """The traced layers bound to detached copies of the weights as they are now."""
        from ..loaders.pytorch._trace import bind_specs

        layers = bind_specs(self._specs, self._tensors(), fold_batchnorm=self.settings.fold_batchnorm,
                            traced=self._traced)
        return LoadedModel(source=self._info, layers=tuple(layers),
                           order_source="trace" if self._traced else "natural-sort")

    def _tensors(self) -> dict[str, WeightSource]:
        """Copies of just the tensors the layers read (weights, gains, BatchNorm scale and variance)."""
        wanted = set()
        for spec in self._specs:
            wanted.add(spec.weight_key)
            if spec.gain_key:
                wanted.add(spec.gain_key)
            if spec.batchnorm is not None:
                wanted.update((f"{spec.batchnorm[0]}.running_var", f"{spec.batchnorm[0]}.weight"))
        keep_device = self.settings.device != "cpu"
        out: dict[str, WeightSource] = {}
        for name, tensor in self.model.state_dict(keep_vars=True).items():
            if name in wanted and tensor is not None:
                copy = tensor.detach().clone() if keep_device else tensor.detach().to("cpu", copy=True)
                out[name] = InMemoryWeight(copy)
        return out

    def checkpoint_metadata(self) -> dict[str, str]:
        """``__metadata__`` for a safetensors file of ``model.state_dict()``: each conv's traced grid and
        geometry and the execution order, so that ``cbn-inspect FILE`` analyses it as this monitor does.

        Exact for plain convs; weight-standardised and expert convs store a weight that is not the kernel
        applied, which a state dict cannot say (analyse their files with ``--arch`` instead).
        """
        from ..loaders._statedict import META_GRID, META_LAYERS, META_ORDER

        layers: dict[str, Mapping[str, Any]] = {}
        order = []
        for spec in self._specs:
            if spec.transform != "none" or not spec.weight_key.endswith(".weight"):
                continue
            name = spec.weight_key[: -len(".weight")]
            entry: dict[str, Any] = {"stride": list(spec.stride), "dilation": list(spec.dilation),
                                     "groups": spec.groups, "padding_mode": spec.padding_mode,
                                     "transposed": spec.transposed}
            if spec.grid is not None and self._traced:
                entry = {"grid": list(spec.grid), **entry}
            layers[name] = entry
            order.append(name)
        meta = {META_LAYERS: json.dumps(layers), META_ORDER: json.dumps(order)}
        first = next((v.get("grid") for v in layers.values() if v.get("grid")), None)
        if first:
            meta[META_GRID] = "x".join(str(v) for v in first)
        return meta
