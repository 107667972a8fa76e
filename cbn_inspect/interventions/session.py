"""The inputs of a needs run (split, kept in memory when they fit) and the measuring of one intervention.

:class:`Bank` holds the decide and held-out batches and the unmodified outputs (within a byte budget; past it
the inputs are re-read for every pass, so memory stays flat in their number). :class:`Session` runs a driver
with a set of edits over one part of the inputs and returns the :class:`OutputChange`, counting forward passes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..analysis import interventions as iv
from ..errors import AnalysisError, CbnError
from .records import NeedsSettings, OutputChange

Edit = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int, str], None]  # (forward passes done, estimated total, what)


class Bank:
    """The decide and held-out batches, and the unmodified outputs of each (cached within ``budget`` bytes)."""

    def __init__(self, open_stream: Callable[[], Any], batch_size: int, every: int, budget: int) -> None:
        self.open_stream, self.batch_size, self.every, self.budget = open_stream, batch_size, every, budget
        self.store: dict[str, list[torch.Tensor]] | None = {"decide": [], "held-out": []}
        self.counts = {"decide": 0, "held-out": 0}
        self.used = 0
        self.refs: dict[tuple[str, int], list[torch.Tensor]] = {}
        self.stream = None
        for part, batch in self._split():
            self.counts[part] += len(batch)
            if self.store is not None:
                self.used += batch.numel() * batch.element_size()
                if self.used > budget:
                    self.store = None  # re-read the inputs for every pass
                else:
                    self.store[part].append(batch)

    def _split(self) -> Iterator[tuple[str, torch.Tensor]]:
        stream = self.open_stream()
        self.stream = stream
        pending: dict[str, list[torch.Tensor]] = {"decide": [], "held-out": []}
        index = 0
        for batch in stream.batches(self.batch_size):
            for item in batch:
                part = "held-out" if index % self.every == 1 else "decide"
                index += 1
                pending[part].append(item)
                if len(pending[part]) == self.batch_size:
                    yield part, torch.stack(pending[part])
                    pending[part] = []
        for part in ("decide", "held-out"):
            if pending[part]:
                yield part, torch.stack(pending[part])

    def batches(self, part: str) -> Iterator[tuple[int, torch.Tensor]]:
        if self.store is not None:
            yield from enumerate(self.store[part])
            return
        key = 0
        for which, batch in self._split():
            if which == part:
                yield key, batch
                key += 1

    def batch_count(self, part: str) -> int:
        return math.ceil(self.counts[part] / self.batch_size) if self.counts[part] else 0


class Session:
    """The driver, the inputs and the tolerances: measures an intervention, counting forward passes."""

    def __init__(self, driver: Any, bank: Bank, settings: NeedsSettings, kind: str, progress: Progress | None,
                 estimate: int = 0) -> None:
        self.driver, self.bank, self.settings, self.kind = driver, bank, settings, kind
        self.progress = progress
        self.passes = 0
        self.evaluations = 0
        self.estimate = estimate
        self.ref_bytes = 0
        self.label = ""

    def _tick(self, inputs: int) -> None:
        self.passes += 1
        self.evaluations += inputs
        if self.progress is not None:
            self.progress(self.passes, max(self.estimate, self.passes), self.label)

    def reference(self, part: str, key: int, batch: torch.Tensor) -> list[torch.Tensor]:
        cached = self.bank.refs.get((part, key))
        if cached is not None:
            return cached
        out = self.driver.reference(batch, lambda _n, _t: None)
        self._tick(len(batch))
        self.keep_ref(part, key, out)
        return out

    def keep_ref(self, part: str, key: int, out: list[torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in out)
        if self.ref_bytes + size <= self.bank.budget:
            self.bank.refs[(part, key)] = out
            self.ref_bytes += size

    def measure(self, edits: dict[str, Edit], part: str = "decide") -> OutputChange:
        meter = iv.ChangeMeter(self.kind)
        for key, batch in self.bank.batches(part):
            ref = self.reference(part, key, batch)
            try:
                out = self.driver.run(batch, edits, key=(part, key)) if self._onnx else self.driver.run(batch, edits)
            except CbnError:
                raise
            except Exception as exc:  # the model failed on the filtered feature map (TorchScript wraps ours too)
                text = " ".join(str(exc).split())[:160] or type(exc).__name__
                raise AnalysisError(f"running the model with an intervention at {', '.join(edits)} failed ({text})",
                                    hint="a model whose operations change between runs cannot be probed this way") from exc
            self._tick(len(batch))
            meter.add(ref, out)
        return meter.result(part, self.settings.max_change, self.settings.min_agreement)

    @property
    def _onnx(self) -> bool:
        return self.driver.kind == "onnxruntime"


def mask_edit(mask: np.ndarray) -> Edit:
    """The edit that filters a feature map with a half-grid frequency mask."""
    return lambda x: iv.apply_mask(x, mask)
