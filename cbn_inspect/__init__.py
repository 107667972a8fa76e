"""cbn-inspect: find the Convolution Bottleneck (Wen & Jacot, ICML 2024) in trained CNN checkpoints.

Library use::

    from cbn_inspect import inspect_source, report_to_dict
    report = inspect_source("model.safetensors")
    print(report.bottleneck)

During training, ``cbn_inspect.Monitor(model, every=N, out="cbn.jsonl")`` and ``monitor.step()`` once per
step; with PyTorch Lightning, ``cbn_inspect.CbnInspectCallback`` (the ``lightning`` extra).
"""

from ._version import SCHEMA_VERSION, __version__
from .errors import CbnError
from .inspect import analyze_model, inspect_source
from .loaders import load
from .records import Bottleneck, ConvLayer, LayerReport, ModelReport, Settings, ToleranceRule
from .report import report_to_dict, to_json
from .series import Monitor


def __getattr__(name: str):
    # The Lightning callback imports lightning, an optional extra: only when asked for.
    if name == "CbnInspectCallback":
        from .series.lightning import CbnInspectCallback

        return CbnInspectCallback
    raise AttributeError(f"module 'cbn_inspect' has no attribute {name!r}")


__all__ = [
    "SCHEMA_VERSION", "Bottleneck", "CbnError", "ConvLayer", "LayerReport", "ModelReport", "Monitor", "Settings",
    "ToleranceRule", "__version__", "analyze_model", "inspect_source", "load", "report_to_dict", "to_json",
]
