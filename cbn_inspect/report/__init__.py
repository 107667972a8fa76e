"""Reporters: records in, text out (terminal, JSON). They never compute anything the analysis did not."""

from .json_report import report_to_dict, settings_to_dict, to_json, validate_report
from .terminal import TerminalReport, format_degrees

__all__ = ["TerminalReport", "format_degrees", "report_to_dict", "settings_to_dict", "to_json", "validate_report"]
