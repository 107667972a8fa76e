"""Figures (issue 11): the data each panel draws equals the report's numbers, and the files are real images."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (pillow comes with matplotlib)

from cbn_inspect import Settings, inspect_source  # noqa: E402
from cbn_inspect.records import Bottleneck, LayerMetrics  # noqa: E402
from cbn_inspect.report.figure_data import (degree_bins, degree_matrix, frequency_map, map_layers,  # noqa: E402
                                            profile_series, spectrum_points)
from cbn_inspect.report.figures import panel_names, plot_report, save_report_figure  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
SAMPLE_NAMES = ("cbn_demo", "cbn_demo_untrained", "cbn_demo_1d", "digits_cnn")


@pytest.fixture(scope="module")
def planted(planted_path):
    return inspect_source(planted_path, Settings(keep_spectra=True))


def check_png(path: Path, min_px: int = 600, max_px: int = 4000) -> tuple[int, int]:
    """A valid PNG of a sane size (decodes fully; neither a thumbnail nor a poster)."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.load()
        w, h = image.size
        extrema = image.convert("L").getextrema()
    assert min_px <= w <= max_px and min_px <= h <= max_px, (w, h)
    assert extrema[0] < 100 and extrema[1] > 200, "an image with no contrast: nothing drawn"
    return w, h


# --- the data behind the pictures --------------------------------------------------------------------------

def test_degree_bins_cover_every_degree_once():
    for top in (0, 3, 23, 24, 40, 112, 1000):
        bins = degree_bins(top, 24)
        assert len(bins) <= 24
        covered = [d for lo, hi in bins for d in range(lo, hi + 1)]
        assert covered == list(range(top + 1))
    assert degree_bins(10, 24) == tuple((d, d) for d in range(11))
    assert degree_bins(112, 24)[:12] == tuple((d, d) for d in range(12))


def test_heatmap_matrix_equals_the_reports_counts(planted):
    data = degree_matrix(planted)
    assert data.names == tuple(r.layer.name for r in planted.layers)
    for i, r in enumerate(planted.layers):
        counts = r.metrics.degree_counts["l1"]
        for j, (lo, hi) in enumerate(data.bins):
            assert data.counts[i, j] == sum(counts.get(d, 0) for d in range(lo, hi + 1))
        assert data.counts[i].sum() == r.metrics.mode_count
        assert data.energy[i].sum() == pytest.approx(1.0, abs=1e-3)
    b = planted.bottleneck
    assert data.inside.tolist() == [b.start_index <= i <= b.end_index for i in range(len(planted.layers))]
    linf = degree_matrix(planted, metric="linf")
    assert linf.counts[5, 0] == planted.layers[5].metrics.degree_counts["linf"][0]


def test_binned_heatmap_rows_still_sum_to_mode_counts(planted):
    data = degree_matrix(planted, limit=2)
    assert len(data.bins) <= 2
    assert data.counts.sum(axis=1).tolist() == [r.metrics.mode_count for r in planted.layers]


def test_frequency_map_equals_kept_on_full_grid(planted):
    b = planted.bottleneck
    picks = map_layers(planted)
    assert picks[0] == b.start_index and picks[-1] == b.end_index and len(picks) <= 6
    fmap = frequency_map(planted, picks[0])
    kept = dict(planted.layers[picks[0]].metrics.kept_on_full_grid())
    assert fmap.total == planted.layers[picks[0]].metrics.mode_count == sum(kept.values())
    assert int(fmap.counts.sum()) == fmap.total
    origin = np.asarray(fmap.origin)
    grid = np.asarray(fmap.grid)
    for freq, count in kept.items():  # centred: frequency m sits at origin + wrapped(m)
        f = np.asarray(freq)
        wrapped = np.where(f > (grid - 1) // 2, f - grid, f)  # fftshift puts n/2 at the start
        assert fmap.counts[tuple(origin + wrapped)] == count
    assert fmap.counts[tuple(origin)] == 3  # the planted rank at frequency 0


def test_spectrum_points_are_the_kept_spectra(planted):
    pts = spectrum_points(planted, per_layer=10_000)
    assert pts.from_spectra
    for i, r in enumerate(planted.layers):
        mine = pts.layer == i
        assert mine.sum() == r.spectrum.count  # every value, each complex frequency counted
        assert pts.kept[mine].sum() == r.metrics.mode_count
        assert (pts.degree[mine & pts.kept] == 0).sum() == r.metrics.degree_counts["l1"].get(0, 0)
    few = spectrum_points(planted, per_layer=8)
    assert np.bincount(few.layer).max() <= 8


def test_spectrum_points_fall_back_to_profiles(planted_path):
    report = inspect_source(planted_path)
    pts = spectrum_points(report)
    assert not pts.from_spectra and (pts.degree == -1).all()
    assert np.bincount(pts.layer).tolist() == [len(r.metrics.profile) for r in report.layers]


@dataclasses.dataclass(frozen=True)
class StandInLayer:
    name: str
    metrics: LayerMetrics


@dataclasses.dataclass(frozen=True)
class StandInActivations:
    """The interface h10's activation record provides: ``.layers`` (``.name``, ``.metrics``), ``.bottleneck``."""

    layers: tuple
    bottleneck: Bottleneck


@dataclasses.dataclass(frozen=True)
class ReportWithActivations:
    """A ModelReport's fields plus ``activations`` (until the real record lands)."""

    base: object
    activations: StandInActivations

    def __getattr__(self, name):
        return getattr(self.base, name)


def with_activations(report):
    layers = tuple(StandInLayer(r.layer.name, dataclasses.replace(r.metrics, mode_count=max(1, r.metrics.mode_count // 2)))
                   for r in report.layers)
    bottleneck = Bottleneck(found=True, reason="stand-in", start_index=2, end_index=6, start="layers.2",
                            end="layers.6")
    return ReportWithActivations(report, StandInActivations(layers, bottleneck))


def test_activation_profile_beside_the_weight_profile(planted, tmp_path):
    report = with_activations(planted)
    weights, acts = profile_series(report)
    assert weights.utilisation.tolist() == [r.metrics.utilisation for r in planted.layers]
    assert acts.mode_count.tolist() == [a.metrics.mode_count for a in report.activations.layers]
    assert (acts.start, acts.end) == (2, 6)
    assert panel_names(report) == ("heatmap", "spectra", "maps", "profiles")
    assert panel_names(planted) == ("heatmap", "spectra", "maps")
    path = save_report_figure(report, tmp_path / "acts.png")
    check_png(path)


# --- the files ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_plot_every_sample(cli, tmp_path, name):
    out = tmp_path / f"{name}.png"
    result = cli(SAMPLES / f"{name}.safetensors", "--plot", out)
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stderr
    check_png(out)


def test_svg_and_pdf_by_extension(cli, tmp_path):
    svg, pdf = tmp_path / "f.svg", tmp_path / "f.PDF"
    assert cli(SAMPLES / "cbn_demo_1d.safetensors", "--plot", svg).exit_code == 0
    assert cli(SAMPLES / "cbn_demo_1d.safetensors", "--plot", pdf).exit_code == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and "cbn_demo_1d.safetensors" in text
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_bad_plot_extension_is_a_usage_error(cli, tmp_path):
    result = cli(SAMPLES / "cbn_demo.safetensors", "--plot", tmp_path / "f.jpg")
    assert result.exit_code == 2
    assert ".png, .svg or .pdf" in result.stderr and not (tmp_path / "f.jpg").exists()


def test_plot_keeps_the_json_without_spectra(cli, tmp_path):
    data = cli.json(SAMPLES / "cbn_demo.safetensors", "--plot", tmp_path / "f.png")
    assert "spectrum" not in data["layers"][0]
    with_spectra = cli.json(SAMPLES / "cbn_demo.safetensors", "--plot", tmp_path / "g.png", "--spectra")
    assert with_spectra["layers"][0]["spectrum"]


def test_model_report_plot_returns_the_figure(planted, tmp_path):
    import matplotlib.figure

    fig = planted.plot(tmp_path / "p.png")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig._suptitle is not None and "planted.safetensors" in fig._suptitle.get_text()
    assert "rank 8" in fig._suptitle.get_text()
    check_png(tmp_path / "p.png")


def test_a_150_layer_report_stays_legible(planted, tmp_path):
    """Layer labels thinned, points per layer budgeted (real 150-layer models: the slow test below)."""
    big = dataclasses.replace(planted, layers=planted.layers * 13)
    fig = plot_report(big)
    heat = fig.subfigs[0].axes[0]
    assert len(heat.get_yticks()) <= 40
    pts = spectrum_points(big)
    assert np.bincount(pts.layer).max() <= pts.per_layer <= 40 + 1
    w, h = check_png(save_report_figure(big, tmp_path / "big.png"))
    assert h <= 2500


def test_timm_resnet18(cli, tmp_path):
    out = tmp_path / "r18.png"
    result = cli("timm:resnet18", "--input-size", "64", "--plot", out)
    assert result.exit_code == 0, result.stderr
    check_png(out)


@pytest.mark.slow
@pytest.mark.parametrize("source,size", [("timm:resnet18", None), ("timm:resnet152", "64")])
def test_timm_models_full(tmp_path, source, size):
    from cbn_inspect import analyze

    report = analyze(source, size, spectra=True)
    if source.endswith("152"):
        assert len(report.layers) >= 150
    out = save_report_figure(report, tmp_path / "f.png")
    check_png(out)
    data = degree_matrix(report)
    assert data.counts.sum(axis=1).tolist() == [r.metrics.mode_count for r in report.layers]


def _png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


def test_readme_figure_is_small_and_current(cli, tmp_path):
    """The committed picture is what the README's command draws today (pixels within rendering noise)."""
    path = Path(__file__).resolve().parent.parent / "docs" / "cbn_demo.png"
    assert path.stat().st_size < 300_000
    w, h = _png_size(path.read_bytes())
    assert 800 <= w <= 2000 and 600 <= h <= 2000
    readme = (path.parent.parent / "README.md").read_text()
    assert "](docs/cbn_demo.png)" in readme
    command = "cbn-inspect sample_checkpoints/cbn_demo.safetensors --plot docs/cbn_demo.png"
    assert command in readme
    fresh = tmp_path / "cbn_demo.png"
    assert cli(SAMPLES / "cbn_demo.safetensors", "--plot", fresh).exit_code == 0
    with Image.open(path) as old, Image.open(fresh) as new:
        assert old.size == new.size, "docs/cbn_demo.png is stale: rerun " + command
        diff = np.abs(np.asarray(old.convert("L"), dtype=float) - np.asarray(new.convert("L"), dtype=float))
    assert diff.mean() < 2.0, "docs/cbn_demo.png is stale: rerun " + command
