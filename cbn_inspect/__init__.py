"""cbn-inspect: find the Convolution Bottleneck (Wen & Jacot, ICML 2024) in trained CNN checkpoints.

Library use::

    import cbn_inspect
    report = cbn_inspect.analyze("model.safetensors")      # or "timm:resnet18", or an nn.Module
    print(report.bottleneck)
    report.to_frame(); report.plot()                        # pandas / matplotlib, optional
    report = inspect_source("timm:resnet18", activations="samples")   # also run it: report.activations
    needs = cbn_inspect.needs("timm:resnet18", "samples")   # which frequencies each stage needs, measured

The names below are imported on first use (PEP 562), so that ``import cbn_inspect`` -- and with it the
command line's ``--help``, ``--version`` and usage errors -- does not import torch or numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr
from ._version import SCHEMA_VERSION, __version__
from .errors import CbnError

# Public name -> the module that defines it. Training-time analysis (cbn_inspect.series): Monitor(model,
# every=N, out=PATH) and monitor.step() once per step; with PyTorch Lightning, CbnInspectCallback (the
# ``lightning`` extra).
_LAZY = {
    "analyze": ".api",
    "analyze_model": ".inspect", "inspect_source": ".inspect",
    "load": ".loaders",
    "ActivationLayerReport": ".records", "ActivationReport": ".records", "ActivationSettings": ".records",
    "Bottleneck": ".records", "ConvLayer": ".records", "LayerReport": ".records", "ModelReport": ".records",
    "Settings": ".records", "ToleranceRule": ".records",
    "report_to_dict": ".report", "to_json": ".report",
    "Monitor": ".series",
    "needs": ".interventions",  # which frequencies a network needs, by intervention -> NeedsReport
    "CbnInspectCallback": ".series.lightning",
}

__all__ = ["SCHEMA_VERSION", "CbnError", "__version__", *(name for name in _LAZY if name != "CbnInspectCallback")]

if TYPE_CHECKING:  # pragma: no cover  (for type checkers and IDEs only)
    from .api import analyze
    from .inspect import analyze_model, inspect_source
    from .loaders import load
    from .records import (ActivationLayerReport, ActivationReport, ActivationSettings, Bottleneck, ConvLayer,
                          LayerReport, ModelReport, Settings, ToleranceRule)
    from .report import report_to_dict, to_json
    from .interventions import needs
    from .series import Monitor


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
