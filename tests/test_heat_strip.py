"""The terminal heat strip (issue 11): kept modes per degree x layer in characters, readable without colour."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from rich.console import Console

from cbn_inspect import inspect_source
from cbn_inspect.report.figure_data import degree_matrix
from cbn_inspect.report.terminal import HEAT_CHARS, HeatStrip, heat_levels


def render(report, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, no_color=True, color_system=None)
    console.print(HeatStrip(report))
    return console.file.getvalue()


def test_heat_levels_log_scale():
    levels = heat_levels(np.array([[0.0, 1.0, 8.0, 100.0, np.nan]]))
    assert levels.tolist() == [[0, levels[0, 1], levels[0, 2], 9, -1]]
    assert 1 <= levels[0, 1] < levels[0, 2] < 9


def test_strip_cells_are_the_reports_counts(planted_path):
    report = inspect_source(planted_path)
    labels, lines, per, repeat = HeatStrip(report).grid(70)
    assert per == 1 and repeat == 3  # 12 layers: 3 characters each
    data = degree_matrix(report, limit=8, min_energy=float("inf"))
    levels = heat_levels(data.counts.T)
    for row, line in zip(levels, lines):
        assert line == "".join(HEAT_CHARS[v] * 3 for v in row)
    b = report.bottleneck
    assert lines[-1] == " " * 3 * b.start_index + "^" * 3 * (b.end_index - b.start_index + 1)
    assert labels[: len(data.labels)] == [f"deg {x}" for x in data.labels]
    text = render(report)
    assert "deg 0" in text and "^ bottleneck" in text
    assert set("".join(lines)) <= set(HEAT_CHARS + "^")


def test_150_layers_fit_80_columns(planted_path):
    report = inspect_source(planted_path)
    big = dataclasses.replace(report, layers=report.layers * 13)
    text = render(big)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "3 layers a column" in text and "155" in text
