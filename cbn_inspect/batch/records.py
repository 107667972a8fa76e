"""The audit's records: an item to analyse, the task a worker receives, and the row it gives back.

A row is what one line of the ``--out`` JSONL file holds: the batch fields first (``item``, ``key``,
``status``, ``error``, ``wall_seconds``), then, for an ``ok`` row, exactly the fields of
``cbn-inspect ITEM --json -``. Error rows carry the batch fields and the settings, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..records import ActivationSettings, Settings

ROW_FORMAT = 1  # bumped when a batch field is renamed or removed

# Error kinds that say something about the item itself: re-running would give the same answer, so a resumed
# audit keeps these rows. The others (a timeout, a dead worker, a bug) are retried on resume.
FINAL_ERROR_KINDS = frozenset({"usage", "unreadable", "no-conv-layers", "unsafe", "analysis"})


@dataclass(frozen=True)
class AuditItem:
    """One thing to analyse: ``source`` is what :func:`cbn_inspect.inspect_source` receives.

    ``kind`` is ``file`` or ``timm``; ``origin`` the command-line argument (or manifest line) it came from.
    """

    source: str
    kind: str = "file"
    origin: str = ""


@dataclass(frozen=True)
class AuditTask:
    """What a worker needs to analyse one item: the item, its row key, and the analysis options."""

    item: AuditItem
    key: str
    settings: Settings
    trust_code: bool = False
    checkpoint_key: str | None = None
    threads: int | None = None
    hash_timed_out: float | None = None  # hashing the item passed its time limit (seconds): a timeout row, not run
    activations: ActivationSettings | None = None  # audit --activations: profile each item's activations too


@dataclass(frozen=True)
class AuditRow:
    """The outcome of one item. ``report`` is the JSON report (a dict) of an ``ok`` row, else None."""

    item: str
    key: str
    status: str  # "ok" or "error"
    wall_seconds: float | None = None
    error_kind: str | None = None
    error_message: str | None = None
    exit_code: int | None = None
    report: Mapping[str, Any] | None = field(default=None, compare=False)
    settings: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def final(self) -> bool:
        """True when a resumed audit may keep this row instead of computing the item again."""
        return self.ok or self.error_kind in FINAL_ERROR_KINDS

    def to_dict(self) -> dict[str, Any]:
        """The row as one JSONL line holds it (batch fields, then the report's own fields)."""
        out: dict[str, Any] = {
            "row_format": ROW_FORMAT,
            "item": self.item,
            "key": self.key,
            "status": self.status,
            "error": (
                {"type": self.error_kind, "message": self.error_message, "exit_code": self.exit_code}
                if self.status != "ok"
                else None
            ),
            "wall_seconds": self.wall_seconds,
        }
        if self.report is not None:
            out.update(self.report)
        elif self.settings is not None:
            out["settings"] = dict(self.settings)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRow:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``TypeError`` on a line that is not a row."""
        error = data["error"] or {}
        report = {k: v for k, v in data.items() if k not in BATCH_FIELDS} if data["status"] == "ok" else None
        return cls(
            item=str(data["item"]),
            key=str(data["key"]),
            status=str(data["status"]),
            wall_seconds=data.get("wall_seconds"),
            error_kind=error.get("type"),
            error_message=error.get("message"),
            exit_code=error.get("exit_code"),
            report=report,
            settings=data.get("settings"),
        )


BATCH_FIELDS = ("row_format", "item", "key", "status", "error", "wall_seconds")
