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
    "utilisation", "seconds", "wall_seconds", "sha256", "key", "route",
)


def _route(report: dict) -> str | None:
    """``counts`` when the counts route served any layer of the row, ``full`` when none did."""
    routes = {layer.get("route", "full") for layer in report.get("layers") or ()}
    return None if not routes else "counts" if "counts" in routes else "full"


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
        "route": _route(report),
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
        from ..report.terminal import short_names, shorten_middle

        width = options.max_width
        common = _common_folder([r.item for r in self.rows])
        title = safe(f"cbn-inspect audit: {shorten_middle(common, width - 20)}" if common else "cbn-inspect audit")
        ok = [r for r in self.rows if r.ok]
        cells = []
        for row in ok:
            flat = flatten_row(row)
            found = bool(flat["bottleneck_found"])
            b = (row.report or {}).get("bottleneck") or {}
            cells.append({
                "item": _short_item(row.item, common),
                "layers": _cell(flat["layers"]),
                "bottleneck": f"{flat['bottleneck_start']}–{flat['bottleneck_end']}" if found else "–",
                "rank": _cell(flat["rank"]),
                "type": " ".join(f"{k}:{v}" for k, v in (b.get("degree_counts") or {}).items()) if found else "–",
                "strength": (f"{flat['strength']:.2f} {flat['strength_label']}"
                             if found and flat["strength"] is not None else "none"),
            })
        widths = fit_columns(cells, width)
        table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", expand=False, pad_edge=False,
                      padding=0, show_edge=False)
        heads = {"type": "type (deg:n)"}
        for name, size in widths.items():
            table.add_column(heads.get(name, name) if len(heads.get(name, name)) <= size else name, no_wrap=True,
                             justify="right" if name in ("layers", "rank", "strength") else "left",
                             min_width=min(size, len(name)), max_width=size)
        shortened = {name: short_names([c[name] for c in cells], size) for name, size in widths.items()}
        for i in range(len(cells)):
            table.add_row(*(safe(shortened[name][i]) for name in widths))
        failed = [r for r in self.rows if not r.ok]
        parts: list = [table] if cells else []
        if failed:
            parts.append(Text(f"failed ({len(failed)}):", style="bold red"))
            names = short_names([_short_item(r.item, common) for r in failed], max(16, width // 2))
            for name, row in zip(names, failed):
                message = (row.error_message or "").removeprefix(f"{row.item}: ")
                parts.append(safe(f"  {name}: {row.error_kind or 'error'}: {message}", style="red"))
        yield Group(*parts, safe(self.totals(), style="bold"))


COLUMN_MIN = {"item": 12, "layers": 6, "bottleneck": 9, "rank": 4, "type": 7, "strength": 8}


def fit_columns(cells: Sequence[dict[str, str]], width: int) -> dict[str, int]:
    """Column widths that fit ``width`` without breaking a word: a long item name is cut in the middle to 24
    characters first, then the type column is dropped (it is in the JSONL and CSV), then item and bottleneck
    are cut in the middle, down to a minimum."""
    order = ("item", "layers", "bottleneck", "rank", "type", "strength")
    natural = {name: max([len(name)] + [len(c[name]) for c in cells]) for name in order}
    natural["type"] = max(natural["type"], len("type (deg:n)")) if natural["type"] > 4 else natural["type"]
    columns = dict(natural)

    def total(cols: dict[str, int]) -> int:
        return sum(cols.values()) + len(cols) - 1

    excess = total(columns) - width
    if excess > 0:  # first give up some of a long item name, keeping 24 characters of it
        columns["item"] = max(min(columns["item"], 24), columns["item"] - excess)
    if total(columns) > width:
        columns.pop("type")
    for name in ("item", "bottleneck"):
        excess = total(columns) - width
        if excess > 0:
            columns[name] = max(COLUMN_MIN[name], columns[name] - excess)
    return columns


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)
