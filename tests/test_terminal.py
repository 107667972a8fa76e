"""The terminal report: golden output on a fixed-width console, and its parts."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from cbn_inspect import inspect_source
from cbn_inspect.records import Settings
from cbn_inspect.report import TerminalReport, format_degrees
from cbn_inspect.report.terminal import BARS, spark


def render(report, width=80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(TerminalReport(report))
    return console.file.getvalue()


def stable(report):
    """The report with its machine-dependent parts (temporary path) fixed."""
    return dataclasses.replace(report, source=dataclasses.replace(report.source, path="planted.safetensors"))


# the terminal table of `cbn-inspect SOURCE` (no --json) is drawn from the full route: its sparklines need every value
FULL = Settings(spectrum_route="full")


def test_golden_planted(planted_path, golden):
    golden("planted_report.txt", render(stable(inspect_source(planted_path, FULL))))


def test_golden_random(random_path, golden):
    golden("random_report.txt", render(stable(inspect_source(random_path, FULL))))


def test_counts_route_rows_show_the_kept_share(planted_path, monkeypatch):
    monkeypatch.setenv("CBN_COUNTS_MIN_FREQUENCIES", "1")  # the planted 4x4 grid has 10 frequencies
    monkeypatch.setenv("CBN_COUNTS_MIN_SIDE", "1")  # and few channels
    report = inspect_source(planted_path, Settings(spectrum_route="auto"))
    assert any(r.route == "counts" for r in report.layers)
    row = next(r for r in report.layers if r.route == "counts")
    text = spark(row).plain
    kept = round(row.metrics.utilisation * len(text))
    assert text == BARS[-1] * kept + "·" * (len(text) - kept)


def test_every_width_from_60_fits(planted_path):
    report = inspect_source(planted_path)
    for width in (60, 80, 120):
        assert max(len(line) for line in render(report, width).splitlines()) <= width


def test_format_degrees():
    assert format_degrees({0: 3, 1: 4, 2: 1}) == "0:3 1:4 2:1"
    assert format_degrees({i: 100 for i in range(10)}) == " ".join(f"{i}:100" for i in range(10))  # never cut
    assert format_degrees({}) == ""


def test_golden_big_network_folds_the_degree_list_and_explains_zero_convs(golden):
    """A timm ResNet as a newcomer first meets one: random weights, the last BatchNorm of each block
    zero-initialised (its conv reads 'all weights zero', explained), the per-degree list folded to one line."""
    from cbn_inspect import Settings

    report = inspect_source("timm:test_resnet", Settings(threads=1), input_size="64")
    folded = render(report, 100)
    golden("test_resnet_folded.txt", folded)
    assert "kept degrees in full" not in folded and "--full-degrees" in folded
    assert "zero-initialise the last BatchNorm of each residual block" in folded
    console = Console(file=io.StringIO(), width=100, color_system=None, legacy_windows=False)
    console.print(TerminalReport(report, full_degrees=True))
    full = console.file.getvalue()
    listed = full.split("kept degrees in full (degree:count):\n")[1]
    wide = [r for r in report.layers if r.metrics is not None and "+" in _cell(folded, r.layer.name)]
    assert wide and all(f" {r.layer.name}: 0:" in listed for r in wide)
    assert len(full.splitlines()) > len(folded.splitlines()) + len(wide) - 1
    unfolded = inspect_source("timm:test_resnet", Settings(threads=1, fold_batchnorm=False), input_size="64")
    assert not any("zero" in r.flags for r in unfolded.layers)  # the kernels themselves are not zero


def _cell(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if f" {name} " in line)


def test_cli_full_degrees_flag(cli):
    result = cli("timm:test_resnet", "--input-size", "64", "--full-degrees", "--quiet", "--threads", "1")
    assert result.exit_code == 0 and "kept degrees in full (degree:count):" in result.stdout
