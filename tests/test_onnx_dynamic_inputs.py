"""ONNX models with dynamic input axes: ``--input-size N`` (one number: every spatial axis, channels from the
model) gives real grids on both sides, and image inputs give the model their own size."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cbn_inspect import ActivationSettings, inspect_source, load, report_to_dict
from cbn_inspect.report.json_report import validate_report

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class Small(torch.nn.Module):
    def __init__(self, d=2):
        super().__init__()
        conv = torch.nn.Conv2d if d == 2 else torch.nn.Conv3d
        self.a = conv(3, 8, 3, padding=1, stride=2)
        self.b = conv(8, 8, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    """Batch, channel and both spatial axes dynamic, as a detector export declares them."""
    path = tmp_path_factory.mktemp("dyn") / "dyn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Small().eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "n", 1: "c", 2: "h", 3: "w"}})
    return path


@pytest.mark.parametrize("size", ["40", "3x40x40", "40x40"])
def test_input_size_fixes_every_spatial_axis_with_channels_from_the_model(dynamic_onnx, size):
    loaded = load(dynamic_onnx, input_size=size)
    assert [layer.grid for layer in loaded.layers] == [(40, 40), (20, 20)]
    assert {layer.grid_source for layer in loaded.layers} == {"metadata"}
    assert any("fixed to [1, 3, 40, 40]" in note for note in loaded.source.notes)
    assert not any("collapse" in note for note in loaded.source.notes)


def test_one_number_runs_both_sides_at_that_size(dynamic_onnx):
    report = inspect_source(dynamic_onnx, input_size="40",
                            activations=ActivationSettings("noise", max_inputs=3, batch_size=3))
    assert [r.layer.grid for r in report.layers] == [(40, 40), (20, 20)]
    assert [layer.grid for layer in report.activations.layers] == [(40, 40), (20, 20)]


def test_a_size_that_misses_spatial_axes_warns_that_grids_collapse(tmp_path):
    path = tmp_path / "vol.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Small(d=3).eval(), (torch.randn(1, 3, 8, 8, 8),), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "n", 2: "d", 3: "h", 4: "w"}})
    good = load(path, input_size="12")
    assert [layer.grid for layer in good.layers] == [(12, 12, 12), (6, 6, 6)]
    report = inspect_source(path, input_size="12x12")  # two numbers for three spatial axes
    assert any("collapse to 1x1" in w and "[2, 3, 4]" in w for w in report.warnings)


def _images(folder, sizes):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_an_image_folder_gives_a_dynamic_model_its_size_on_both_sides(dynamic_onnx, tmp_path):
    pytest.importorskip("PIL")
    folder = _images(tmp_path / "imgs", [(100, 150), (90, 200), (120, 120)])
    report = inspect_source(dynamic_onnx, activations=str(folder))
    assert [r.layer.grid for r in report.layers] == [(64, 96), (32, 48)]
    assert [layer.grid for layer in report.activations.layers] == [(64, 96), (32, 48)]
    data = report_to_dict(report)
    validate_report(data)
    prep = data["activations"]["inputs"]["preprocessing"]
    assert prep["input_shape"] == [3, 64, 96]
    assert "smallest height and width, 90x120, rounded down to a multiple of 32" in prep["size_from"]
    assert [w for w in data["warnings"] if "inputs sized from the 3 image(s)" in w] == [prep["size_from"]]
    # --input-size still wins
    forced = inspect_source(dynamic_onnx, input_size="32", activations=str(folder))
    assert [layer.grid for layer in forced.activations.layers] == [(32, 32), (16, 16)]
    assert "size_from" not in report_to_dict(forced)["activations"]["inputs"]["preprocessing"]


def test_the_bundled_samples_give_a_dynamic_model_their_size(dynamic_onnx):
    for package in ("PIL", "sklearn", "skimage"):
        pytest.importorskip(package)
    report = inspect_source(dynamic_onnx, activations=ActivationSettings("samples", max_inputs=4))
    data = report_to_dict(report)
    size = data["activations"]["inputs"]["preprocessing"]["input_shape"][1:]
    assert size[0] % 32 == 0 and size[1] % 32 == 0 and size[0] > 32
    assert list(report.layers[0].layer.grid) == size
