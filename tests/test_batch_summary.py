"""The summary table (rendered to a fixed-width console) and the CSV file."""

from __future__ import annotations

import csv
import io

from rich.console import Console

from cbn_inspect.batch.records import AuditRow
from cbn_inspect.batch.summary import CSV_COLUMNS, AuditSummary, flatten_row, write_csv

REPORT = {
    "source": {"format": "safetensors"},
    "layers": [{}] * 6,
    "bottleneck": {"found": True, "start": "layers.1", "end": "layers.4", "rank": 7,
                   "degree_counts": {"0": 3, "1": 4}, "type": "3 @ deg 0, 4 @ deg 1",
                   "strength": 0.97, "strength_label": "strong", "gap_ratio": 800.0, "utilisation": 0.01},
    "seconds": 0.02,
}
ROWS = [
    AuditRow("/zoo/a.safetensors", "aa:s", "ok", 0.03, report=REPORT),
    AuditRow("/zoo/b.pt", "bb:s", "error", 0.01, "unreadable", "/zoo/b.pt: empty file", 3),
    AuditRow("/zoo/c.pt", "cc:s", "error", 2.0, "timeout", "timed out after 2 s (worker killed)", 70),
]


def render(summary: AuditSummary, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(summary)
    return console.file.getvalue()


def test_table_shows_one_line_per_item_and_the_totals():
    text = render(AuditSummary(ROWS, reused=1, seconds=2.0))
    lines = text.splitlines()
    assert lines[0].strip() == "cbn-inspect audit: /zoo/"
    row_a = next(line for line in lines if "a.safetensors" in line)
    for cell in ("6", "layers.1–layers.4", "7", "0:3 1:4", "0.97 strong"):
        assert cell in row_a
    # each failure once (issue 12): under the table, with its kind and message, path prefix removed
    assert "  b.pt: unreadable: empty file" in text and text.count("b.pt") == 1
    assert "c.pt: timeout: timed out after 2 s (worker killed)" in text and text.count("c.pt") == 1
    assert " ".join(text.split()).endswith("3 items: 1 ok, 2 failed (1 timeout, 1 unreadable); 2 computed, 1 from an earlier "
                         "run; 2.0 s, 1.00 items/s")


def test_flat_row_and_csv(tmp_path):
    flat = flatten_row(ROWS[0])
    assert (flat["layers"], flat["rank"], flat["type"], flat["sha256"]) == (6, 7, "3 @ deg 0, 4 @ deg 1", "aa")
    assert flatten_row(ROWS[1])["layers"] is None
    out = tmp_path / "a.csv"
    write_csv(out, ROWS)
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 3
    assert rows[0]["bottleneck_start"] == "layers.1" and rows[0]["strength"] == "0.97"
    assert rows[1]["error_type"] == "unreadable" and rows[1]["rank"] == ""
    assert not list(tmp_path.glob(".*.tmp"))


def test_table_fits_80_columns_without_breaking_a_word():
    long_item = "/zoo/" + "very_long_folder_name/" * 3 + "model_with_a_long_name.safetensors"
    report = dict(REPORT, bottleneck=dict(REPORT["bottleneck"], start="features.stage3.block12.conv_dw",
                                          end="features.stage4.block2.conv_pw",
                                          degree_counts={str(k): 40 for k in range(8)}))
    rows = [AuditRow(long_item, "aa:s", "ok", 0.03, report=report), *ROWS]
    for width in (60, 80, 120):
        text = render(AuditSummary(rows, reused=0, seconds=1.0), width)
        table = text.split("failed (")[0].splitlines()
        assert max(len(line) for line in text.splitlines()) <= width
        body = table[next(i for i, line in enumerate(table) if line.lstrip().startswith("─")) + 1:]
        body = [line for line in body if line.strip()]
        assert len(body) == 2  # one line per ok item: nothing wrapped, no word broken onto a second line
