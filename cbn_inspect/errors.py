"""The exceptions cbn-inspect raises on purpose, each with its exit code and a hint.

Every error a user can cause (a bad path, a corrupt file, an unsafe pickle) is one of these. The CLI turns
them into one line on stderr and the class's exit code; the batch layer turns them into error rows. Exit
codes are part of the documented interface (README, "Exit codes").
"""

from __future__ import annotations


class CbnError(Exception):
    """Base class: a failure with a one-line message, an optional hint and an exit code."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(CbnError):
    """Options that contradict each other or do not parse."""

    exit_code = 2
    kind = "usage"


class UnreadableInputError(CbnError):
    """The source is missing, not a checkpoint, empty, truncated or corrupt."""

    exit_code = 3
    kind = "unreadable"


class NothingToAnalyseError(CbnError):
    """The source was read, but holds no convolution weight the tool can analyse."""

    exit_code = 4
    kind = "no-conv-layers"


class UnsafeContentError(CbnError):
    """The file needs code execution to load (a pickle with non-tensor globals) and was not trusted."""

    exit_code = 5
    kind = "unsafe"


class AnalysisError(CbnError):
    """A layer could not be analysed with the geometry given (inconsistent shapes, groups or strides)."""

    exit_code = 6
    kind = "analysis"


class ResourceLimitError(CbnError):
    """The input needs more memory than is available (a MemoryError while loading or analysing it)."""

    exit_code = 7
    kind = "resource-limit"


SOME_ITEMS_FAILED_EXIT = 8  # `cbn-inspect audit`: the batch ran, but some items are error rows
INTERNAL_ERROR_EXIT = 70  # an unexpected exception: a bug in cbn-inspect, reported as one line
