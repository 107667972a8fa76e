"""cbn-inspect: find the Convolution Bottleneck (Wen & Jacot, ICML 2024) in trained CNN checkpoints.

Library use::

    import cbn_inspect
    report = cbn_inspect.analyze("model.safetensors")      # or "timm:resnet18", or an nn.Module
    print(report.bottleneck)
    report.to_frame(); report.plot()                        # pandas / matplotlib, optional
    report = inspect_source("timm:resnet18", activations="samples")   # also run it: report.activations
    needs = cbn_inspect.needs("timm:resnet18", "samples")   # which frequencies each stage needs, measured
"""

from ._version import SCHEMA_VERSION, __version__
from .api import analyze
from .errors import CbnError
from .inspect import analyze_model, inspect_source
from .loaders import load
from .records import (ActivationLayerReport, ActivationReport, ActivationSettings, Bottleneck, ConvLayer, LayerReport,
                      ModelReport, Settings, ToleranceRule)
from .report import report_to_dict, to_json

__all__ = [
    "ActivationLayerReport", "ActivationReport", "ActivationSettings", "SCHEMA_VERSION", "Bottleneck", "CbnError",
    "ConvLayer", "LayerReport", "ModelReport", "Settings", "ToleranceRule", "__version__", "analyze", "analyze_model",
    "inspect_source", "load", "report_to_dict", "to_json",
]

# Training-time analysis (cbn_inspect.series): Monitor(model, every=N, out=PATH) and monitor.step() once per
# step; with PyTorch Lightning, CbnInspectCallback (the ``lightning`` extra, imported only when asked for).
from .series import Monitor  # noqa: E402

__all__ += ["Monitor"]


# Which frequencies a network needs, by intervention: cbn_inspect.needs(source, inputs, ...) -> NeedsReport
# (imported on first use).
__all__ += ["needs"]


def __getattr__(name: str):
    if name == "needs":
        from .interventions import needs

        return needs
    if name == "CbnInspectCallback":
        from .series.lightning import CbnInspectCallback

        return CbnInspectCallback
    raise AttributeError(f"module 'cbn_inspect' has no attribute {name!r}")
