"""Interventions: which frequencies a network needs, measured by filtering its feature maps and running on.

- :mod:`.records` -- the report records (frozen dataclasses);
- :mod:`cbn_inspect.analysis.interventions` -- the pure filters, metrics, searches and advice;
- :mod:`.torch_driver`, :mod:`.onnx_driver` -- replacing a probed feature map inside a running model;
- :mod:`.session` -- the inputs (split, cached within the memory bound) and the measuring of one intervention;
- :mod:`.run` -- :func:`needs`, the orchestration (probes, Gram directions, searches, joint checks);
- :mod:`.summary` -- the plain-language sentences of the report.
"""

from __future__ import annotations

from .records import (CurvePoint, InputSplit, JointCheck, LayerNeeds, NeedCurve, NeedsCost, NeedsReport,
                      NeedsSettings, OutputChange, RingImportance)

__all__ = ["CurvePoint", "InputSplit", "JointCheck", "LayerNeeds", "NeedCurve", "NeedsCost", "NeedsReport",
           "NeedsSettings", "OutputChange", "RingImportance"]

from .run import needs  # noqa: E402

__all__ += ["needs"]
