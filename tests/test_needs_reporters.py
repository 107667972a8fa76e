"""Reporters of the needs record (figure, HTML, DataFrame; ``NeedsReport.plot/to_html/to_frame``) on a hand-built
report (tests/needs_example.py): every number drawn or written is the record's own."""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape

import numpy as np
import pytest

from cbn_inspect.errors import UsageError
from cbn_inspect.report.needs_figures import (FLOOR, curve_series, highest_degree, plot_needs, ring_series,
                                              save_needs_figure)
from cbn_inspect.report.needs_html import needs_fragment, needs_html

from needs_example import HOSTILE, MAX_CHANGE, example_report


@pytest.fixture(scope="module")
def report():
    return example_report()


def test_curve_series_are_the_records_points(report):
    box = curve_series(report, "box")
    assert [s.name for s in box] == [layer.name for layer in report.layers]
    first = report.layers[0]
    np.testing.assert_allclose(box[0].x, [p.value for p in first.box.points])
    np.testing.assert_allclose(box[0].y, [p.change.relative_l2 for p in first.box.points])
    assert box[0].needed == first.needed_band
    assert list(box[0].holds) == [p.change.holds for p in first.box.points]
    # ball: degree over the grid's highest l1 degree (16x16 -> 16); rank: over |N| * C
    ball = curve_series(report, "ball")[0]
    np.testing.assert_allclose(ball.x, np.array([1, 2, 4, 8, 16]) / 16)
    assert ball.needed == 8 / 16
    rank = curve_series(report, "rank")[0]
    np.testing.assert_allclose(rank.x, np.array([1, 4, 8, 32, 2048]) / 2048)
    assert rank.needed == 8 / 2048


def test_ring_series(report):
    rings = ring_series(report)
    first = rings[0]
    assert first.labels == ("0", "1", "2", "3-4", "5-16")
    np.testing.assert_allclose(first.x, np.array([0, 1, 2, 3.5, 10.5]) / highest_degree((16, 16), "l1"))
    np.testing.assert_allclose(first.y, [r.change.relative_l2 for r in report.layers[0].rings])
    assert highest_degree((16, 16), "linf") == 8 and highest_degree((1,), "l1") == 1


def test_figure_lines_and_tolerance(report):
    fig = plot_needs(report)
    curves_axes = fig.subfigs[0].axes
    assert len(curves_axes) == 3
    box_ax = curves_axes[0]
    lines = box_ax.get_lines()
    tolerance = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(tolerance) == 1 and tolerance[0].get_ydata()[0] == pytest.approx(MAX_CHANGE)
    data = [ln for ln in lines if ln.get_linestyle() == "-"]
    assert len(data) == len(report.layers)  # one line per probed layer
    np.testing.assert_allclose(data[0].get_ydata(), np.maximum([p.change.relative_l2 for p in report.layers[0].box.points], FLOOR))
    rings_ax = fig.subfigs[1].axes[0]
    assert len([ln for ln in rings_ax.get_lines() if ln.get_linestyle() == "-"]) == len(report.layers)
    legend_texts = [t.get_text() for leg in fig.subfigs[0].legends for t in leg.get_texts()]
    assert any("\\x1b" in t for t in legend_texts)  # control characters spelled out, never raw
    assert not any("\x1b" in t for t in legend_texts)


def test_many_layers_get_a_colour_bar_not_a_legend(report):
    import dataclasses

    many = dataclasses.replace(report, layers=report.layers * 7)  # 14 probes: past the legend's 12
    fig = plot_needs(many)
    assert not fig.subfigs[0].legends
    labels = [ax.get_ylabel() for ax in fig.subfigs[0].axes]
    assert any("probed layer" in label for label in labels)  # the colour bar's axis
    colours = {tuple(ln.get_color()) for ln in fig.subfigs[0].axes[0].get_lines() if ln.get_linestyle() == "-"}
    assert len(colours) == 14  # one colour per probe position, even where names repeat


def test_plot_writes_png_and_refuses_bad_extension(report, tmp_path):
    path = tmp_path / "needs.png"
    fig = report.plot(path)
    assert fig is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(UsageError):
        report.plot(tmp_path / "needs.gif")
    assert not (tmp_path / "needs.gif").exists()
    save_needs_figure(report, tmp_path / "needs.svg")
    assert (tmp_path / "needs.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(UsageError):
        report.plot(panels=("nope",))


def test_html_section_numbers_and_escaping(report):
    page = report.to_html(figures=False)
    assert page.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in page
    assert "<b>\x1b" not in page and "stage&lt;b&gt;\\x1b[31m" in page  # escaped, control spelled out
    text = unescape(re.sub(r"<[^>]+>", " ", page))
    assert "needs 1,032 of 3,072 frequency-channel directions" in text
    assert "3.10%" in text and "2×" in text  # the safe down-sampling's held-out change and factor
    assert "relative change 3.30%, top-1 agreement 100.0%" in text and "holds" in text
    assert "3 @ deg 0, 4 @ deg 1, 1 @ deg 2" in text
    assert "120 forward passes (estimated 130)" in text
    assert "max_change" in text and "0.05" in text
    rows = re.findall(r"<tr class=\"[^\"]*\"><td", page)
    assert len(rows) == len(report.layers)


def test_html_long_type_is_cut_with_the_whole_in_a_tooltip(report):
    import dataclasses

    wide = dataclasses.replace(report.layers[0], needed_rank_type={d: d + 1 for d in range(10)})
    page = needs_fragment(dataclasses.replace(report, layers=(wide,)), figures=False)
    assert "5 @ deg 4, 6 @ deg 5, +4 more degrees" in page
    assert 'title="1 @ deg 0, 2 @ deg 1' in page and "10 @ deg 9" in page


def test_html_figures_embedded(report):
    fragment = needs_fragment(report, figures=True)
    assert fragment.count("data:image/png;base64,") == 2
    assert "<html" not in fragment
    assert "data:image/png" not in report._repr_html_()


def test_frames(report):
    layers = report.to_frame()
    assert list(layers["name"]) == [layer.name for layer in report.layers]
    first = layers.iloc[0]
    assert first["needed_band"] == 0.5 and first["safe_factor"] == 2 and first["safe_change"] == 0.031
    assert first["rank_share"] == 8 / 2048 and first["rings_that_matter"] == 3
    assert first["needed_rank_type"] == {0: 3, 1: 4, 2: 1}
    assert bool(layers.iloc[1]["everything_needed"]) and np.isnan(layers.iloc[1]["safe_change"])
    curves = report.to_frame("curves")
    expected = sum(len(getattr(layer, k).points) for layer in report.layers for k in ("box", "ball", "rank"))
    assert len(curves) == expected
    needed = curves[curves["needed"]]
    assert sorted(needed[needed["layer"] == "layer1.0.conv1"]["kind"]) == ["ball", "box", "rank"]
    rings = report.to_frame("rings")
    assert len(rings) == sum(len(layer.rings) for layer in report.layers)
    assert rings.iloc[4][["low", "high", "frequencies"]].tolist() == [5, 16, 215]
    with pytest.raises(UsageError):
        report.to_frame("nope")


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no chromium")
def test_html_renders_in_a_browser(report, tmp_path):
    page = tmp_path / "needs.html"
    page.write_text(needs_html(report, figures=False))
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--no-first-run", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "layer1.0.conv1" in out.stdout
    assert 'data-sort="ready"' in out.stdout  # the sorting script ran
