"""Interventions: which frequencies a network needs, measured by filtering its feature maps and running on.

- :mod:`.records` -- the report records (frozen dataclasses);
- :mod:`cbn_inspect.analysis.interventions` -- the pure filters, metrics, searches and advice;
- :mod:`.torch_driver`, :mod:`.onnx_driver` -- replacing a probed feature map inside a running model;
- :mod:`.run` -- :func:`needs`, the orchestration (probes, Gram directions, searches, joint checks).
"""

from __future__ import annotations

from .records import (CurvePoint, InputSplit, JointCheck, LayerNeeds, NeedCurve, NeedsCost, NeedsReport,
                      NeedsSettings, OutputChange, RingImportance)

__all__ = ["CurvePoint", "InputSplit", "JointCheck", "LayerNeeds", "NeedCurve", "NeedsCost", "NeedsReport",
           "NeedsSettings", "OutputChange", "RingImportance"]

from .run import needs  # noqa: E402

__all__ += ["needs"]
