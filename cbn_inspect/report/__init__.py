"""Reporters: records in, text or pictures out (terminal, JSON, HTML; figures in ``figures`` need matplotlib,
``frame`` pandas, both imported only there). They never compute anything the analysis did not.

Names are imported on first use (PEP 562): ``report._text`` (used by the command line before any work
starts) must not pull numpy in through this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "audit_html": ".html", "report_fragment": ".html", "report_html": ".html",
    "report_to_dict": ".json_report", "settings_to_dict": ".json_report", "to_json": ".json_report",
    "validate_report": ".json_report",
    "HeatStrip": ".terminal", "TerminalReport": ".terminal", "format_degrees": ".terminal",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'cbn_inspect.report' has no attribute {name!r}")
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value
    return value
