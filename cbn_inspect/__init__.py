"""cbn-inspect: find the Convolution Bottleneck (Wen & Jacot, ICML 2024) in trained CNN checkpoints.

Library use::

    from cbn_inspect import inspect_source, report_to_dict
    report = inspect_source("model.safetensors")
    print(report.bottleneck)
    report = inspect_source("timm:resnet18", activations="samples")   # also run it: report.activations
"""

from ._version import SCHEMA_VERSION, __version__
from .errors import CbnError
from .inspect import analyze_model, inspect_source
from .loaders import load
from .records import (ActivationLayerReport, ActivationReport, ActivationSettings, Bottleneck, ConvLayer, LayerReport,
                      ModelReport, Settings, ToleranceRule)
from .report import report_to_dict, to_json

__all__ = [
    "ActivationLayerReport", "ActivationReport", "ActivationSettings", "SCHEMA_VERSION", "Bottleneck", "CbnError", "ConvLayer", "LayerReport", "ModelReport", "Settings",
    "ToleranceRule", "__version__", "analyze_model", "inspect_source", "load", "report_to_dict", "to_json",
]
