"""Reporters: records in, text or pictures out (terminal, JSON, HTML; figures in ``figures`` need matplotlib,
``frame`` pandas, both imported only there). They never compute anything the analysis did not."""

from .html import audit_html, report_fragment, report_html
from .json_report import report_to_dict, settings_to_dict, to_json, validate_report
from .terminal import HeatStrip, TerminalReport, format_degrees

__all__ = ["HeatStrip", "TerminalReport", "audit_html", "format_degrees", "report_fragment", "report_html",
           "report_to_dict", "settings_to_dict", "to_json", "validate_report"]
