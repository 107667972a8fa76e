"""Flat views of an audit: one short record per row (:func:`flatten_row`), a rich table, and the CSV file.

:class:`AuditSummary` joins rich's world through ``__rich_console__``: a table (item, layers, bottleneck
range, rank, type, strength, status) and a totals line. The CSV has the same columns and a few more.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

from ..errors import UsageError
from ..report._text import safe
from .records import AuditRow

CSV_COLUMNS = (
    "item", "status", "error_type", "error_message", "format", "layers", "bottleneck_found",
    "bottleneck_start", "bottleneck_end", "rank", "type", "strength", "strength_label", "gap_ratio",
    "utilisation", "seconds", "wall_seconds", "sha256", "key",
)


def flatten_row(row: AuditRow) -> dict[str, Any]:
    """The row's headline numbers, flat (None where the row has no report)."""
    report = row.report or {}
    b = report.get("bottleneck") or {}
    return {
        "item": row.item,
        "status": row.status,
        "error_type": row.error_kind,
        "error_message": row.error_message,
        "format": (report.get("source") or {}).get("format"),
        "layers": len(report["layers"]) if "layers" in report else None,
        "bottleneck_found": b.get("found"),
        "bottleneck_start": b.get("start"),
        "bottleneck_end": b.get("end"),
        "rank": b.get("rank"),
        "type": b.get("type"),
        "strength": b.get("strength"),
        "strength_label": b.get("strength_label"),
        "gap_ratio": b.get("gap_ratio"),
        "utilisation": b.get("utilisation"),
        "seconds": report.get("seconds"),
        "wall_seconds": row.wall_seconds,
        "sha256": row.key.split(":", 1)[0],
        "key": row.key,
    }


def write_csv(path: Path, rows: Sequence[AuditRow]) -> None:
    """All rows of this run as CSV (written to a temporary file, then renamed into place)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: "" if v is None else v for k, v in flatten_row(row).items()})
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"--csv {path}: cannot write ({exc.strerror or exc})") from exc


def _short_item(item: str, common: str) -> str:
    return item[len(common):] if common and item.startswith(common) else item


def _common_folder(items: Sequence[str]) -> str:
    paths = [i for i in items if not i.startswith("timm:")]
    if len(paths) < 2:
        return os.path.dirname(paths[0]) + os.sep if paths else ""
    return os.path.commonpath(paths).rstrip(os.sep) + os.sep


@dataclass(frozen=True)
class AuditSummary:
    """The end-of-run table. ``reused`` counts rows taken from an earlier run's file; ``seconds`` this run."""

    rows: Sequence[AuditRow]
    reused: int = 0
    seconds: float = 0.0

    def totals(self) -> str:
        ok = sum(r.ok for r in self.rows)
        failed = len(self.rows) - ok
        kinds: dict[str, int] = {}
        for r in self.rows:
            if not r.ok:
                kinds[r.error_kind or "error"] = kinds.get(r.error_kind or "error", 0) + 1
        detail = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        computed = len(self.rows) - self.reused
        rate = f", {computed / self.seconds:.2f} items/s" if self.seconds > 0 and computed else ""
        return (f"{len(self.rows)} items: {ok} ok, {failed} failed" + (f" ({detail})" if detail else "")
                + f"; {computed} computed, {self.reused} from an earlier run; {self.seconds:.1f} s{rate}")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        common = _common_folder([r.item for r in self.rows])
        title = safe(f"cbn-inspect audit: {common}" if common else "cbn-inspect audit")
        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", expand=False)
        table.add_column("item", overflow="fold", min_width=16)
        table.add_column("layers", justify="right")
        table.add_column("bottleneck", overflow="fold")
        table.add_column("rank", justify="right")
        table.add_column("type (deg:n)", overflow="fold")
        table.add_column("strength", justify="right", no_wrap=True)
        table.add_column("status", no_wrap=True)
        failures = []
        for row in self.rows:
            flat = flatten_row(row)
            found = bool(flat["bottleneck_found"])
            b = (row.report or {}).get("bottleneck") or {}
            table.add_row(
                safe(_short_item(row.item, common)),
                _cell(flat["layers"]),
                safe(f"{flat['bottleneck_start']}–{flat['bottleneck_end']}" if found else "–"),
                _cell(flat["rank"]),
                safe(" ".join(f"{k}:{v}" for k, v in (b.get("degree_counts") or {}).items()) if found else "–"),
                safe(f"{flat['strength']:.2f} {flat['strength_label']}") if found and flat["strength"] is not None
                else ("none" if row.ok else "–"),
                Text("ok", style="green") if row.ok else safe(row.error_kind or "error", style="red"),
            )
            if not row.ok:
                message = (row.error_message or "").removeprefix(f"{row.item}: ")
                failures.append(safe(f"  {_short_item(row.item, common)}: {message}", style="red"))
        parts = [table]
        if failures:
            parts += [Text("failed:", style="bold red"), *failures]
        yield Group(*parts, safe(self.totals(), style="bold"))


def _cell(value: Any) -> Text:
    return safe("–" if value is None else value)
