"""Rows of the terminal table hide nothing: markers for odd rows, whole degrees, names cut in the middle."""

from __future__ import annotations

import io
from collections import OrderedDict

import torch
from rich.console import Console

from cbn_inspect import inspect_source
from cbn_inspect.report import TerminalReport


def render(report, width=80, full_degrees=False) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(TerminalReport(report, full_degrees=full_degrees))
    return console.file.getvalue()


def _row(text: str, index: int) -> str:
    return next(line for line in text.splitlines() if line.lstrip().startswith(f"{index} "))


def test_odd_rows_are_marked_and_explained_under_the_table(tmp_path):
    torch.manual_seed(0)
    state = OrderedDict([("stem.weight", torch.randn(8, 3, 3, 3)), ("dead.weight", torch.zeros(8, 8, 3, 3)),
                         ("body.weight", torch.randn(8, 8, 3, 3))])
    torch.save(state, tmp_path / "m.pt")
    text = render(inspect_source(tmp_path / "m.pt"))
    assert _row(text, 1).rstrip().endswith("zdas")  # zero, default grid, approximate, assumed geometry
    assert _row(text, 0).rstrip().endswith("das")
    for line in ("! z all weights zero", "! d default grid", "! a approximate", "! s stride, groups and padding assumed"):
        assert line in text
    assert "! q" not in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_rows_without_anything_odd_have_no_marker_column(planted_path):
    text = render(inspect_source(planted_path))
    assert "! " not in text and " !" not in text.splitlines()[2]


def test_kept_degrees_are_never_cut_with_an_ellipsis(random_path):
    report = inspect_source(random_path)
    for width in (60, 80, 120):
        text = render(report, width, full_degrees=True)
        assert width < 80 or "…" not in text  # below 80 columns only the shape column may be cut
        for r in report.layers:
            whole = " ".join(f"{k}:{v}" for k, v in sorted(r.metrics.degree_counts["l1"].items()))
            assert whole in text  # in the row, or in the block under the table (--full-degrees)
        assert max(len(line) for line in text.splitlines()) <= width
        folded = render(report, width)  # by default: the rows cut to '+N', and one line saying how to see them
        if "kept degrees in full" in text:
            assert "kept degrees in full" not in folded and "--full-degrees" in folded


def test_long_layer_names_are_cut_in_the_middle_and_stay_distinct():
    from cbn_inspect.report.terminal import short_names

    names = [f"If_0.then_branch/If_0_then_branch__Inline_0__/encoder/{i}/reparam_conv/Conv" for i in range(4)]
    names += ["If_0.then_branch/If_0_then_branch__Inline_0__/stft/Conv", "stem"]
    short = short_names(names, 15)
    assert len(set(short)) == len(names) and all(len(s) <= 15 for s in short)
    assert short[-1] == "stem" and short[0].endswith("Conv") and "0" in short[0]
    blocks = [f"stages.3.blocks.{i}.conv_pw" for i in range(12)]
    assert len(set(short_names(blocks, 15))) == 12


def test_layers_listing_fits_80_columns(cli, planted_path):
    result = cli("layers", planted_path, env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "(m)" in result.stdout and "(m) from the file" in result.stdout
