"""Reporters: records in, text or pictures out (terminal, JSON, HTML; figures in ``figures`` need matplotlib,
``frame`` pandas, both imported only there). They never compute anything the analysis did not.

Names are imported on first use (PEP 562): ``report._text`` (used by the command line before any work
starts) must not pull numpy in through this package.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_LAZY = {
    "audit_html": ".html", "report_fragment": ".html", "report_html": ".html",
    "report_to_dict": ".json_report", "settings_to_dict": ".json_report", "to_json": ".json_report",
    "validate_report": ".json_report",
    "HeatStrip": ".terminal", "TerminalReport": ".terminal", "format_degrees": ".terminal",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
