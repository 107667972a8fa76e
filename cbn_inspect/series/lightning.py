"""``CbnInspectCallback``: :class:`cbn_inspect.Monitor` as a PyTorch Lightning callback (the ``lightning`` extra).

Every ``every`` optimizer steps (``trainer.global_step``) it analyses the LightningModule's conv weights,
appends the record to ``out`` and logs the headline numbers to the trainer's logger: ``cbn/found``,
``cbn/rank``, ``cbn/strength``, ``cbn/min_modes`` and ``cbn/modes/<layer>`` per layer. Works with
``lightning`` (``lightning.pytorch``) or the older ``pytorch_lightning`` package.
"""

from __future__ import annotations

import os
from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError:
    try:
        from pytorch_lightning import Callback
    except ImportError:
        from ..errors import MissingExtraError

        class MissingLightningError(MissingExtraError, ImportError):
            """Both: the package's exit 10 for a missing extra, and the ImportError Python code expects."""

        raise MissingLightningError(
            "cbn_inspect.CbnInspectCallback needs PyTorch Lightning: pip install 'cbn-inspect[lightning]'"
        ) from None

from ..records import Settings
from .monitor import Monitor


def headline(record: dict[str, Any]) -> dict[str, float]:
    """The numbers logged per analysis, from one Monitor record."""
    b = record["bottleneck"]
    counts = {f"cbn/modes/{layer['name']}": float(layer["mode_count"])
              for layer in record["layers"] if layer.get("mode_count") is not None}
    out = {"cbn/found": float(bool(b["found"])), "cbn/strength": float(b.get("strength") or 0.0)}
    if b.get("rank") is not None:
        out["cbn/rank"] = float(b["rank"])
    if counts:
        out["cbn/min_modes"] = min(counts.values())
    return {**out, **counts}


class CbnInspectCallback(Callback):
    """Analyse the module every ``every`` global steps; see the module docstring."""

    def __init__(self, every: int = 100, out: str | os.PathLike | None = None, settings: Settings | None = None,
                 input_size: str | tuple[int, ...] | None = None, *, log: bool = True) -> None:
        super().__init__()
        self.every, self.out, self.settings, self.input_size, self.log = every, out, settings, input_size, log
        self.monitor: Monitor | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # Made here, after Lightning has moved the module to its device; traced once.
        self.monitor = Monitor(pl_module, every=self.every, out=self.out, settings=self.settings,
                               input_size=self.input_size, start_step=trainer.global_step,
                               source=f"LightningModule {type(pl_module).__name__}")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.monitor is None or not trainer.is_global_zero:
            return
        record = self.monitor.step(global_step=trainer.global_step)
        if record is not None and self.log and trainer.logger is not None:
            trainer.logger.log_metrics(headline(record), step=trainer.global_step)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.monitor.close()
