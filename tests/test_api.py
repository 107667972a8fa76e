"""The notebook face (issue 11): analyze() on paths, timm names and nn.Modules; to_frame() against the JSON."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import cbn_inspect
from cbn_inspect import Settings, analyze, inspect_source, report_to_dict
from cbn_inspect.api import make_settings
from cbn_inspect.report.frame import DICTS, SCALARS, TUPLES

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_checkpoints"


def small_sequential():
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


def test_analyze_a_small_sequential_traces_its_grids():
    report = analyze(small_sequential(), (3, 16, 16))
    assert [r.layer.name for r in report.layers] == ["0", "2", "5"]
    assert [r.layer.grid for r in report.layers] == [(16, 16), (16, 16), (8, 8)]
    assert all(r.layer.grid_source == "trace" for r in report.layers)
    assert report.order_source == "trace"
    assert report.layers[1].layer.stride == (2, 2) and "batchnorm-folded" in report.layers[1].flags
    assert report.source.format == "in-memory-module" and report.source.path == "<Sequential>"
    assert analyze(small_sequential(), 16).layers[2].layer.grid == (8, 8)  # N alone: channels from the first conv
    assert analyze(small_sequential(), [3, 16, 16]).layers[0].layer.grid == (16, 16)


def test_inspect_source_accepts_a_module():
    """Before issue 11 this raised a TypeError (a Path was made of the module)."""
    report = inspect_source(small_sequential(), input_size=(3, 16, 16))
    assert len(report.layers) == 3
    untraced = inspect_source(small_sequential())
    assert untraced.order_source == "natural-sort"
    assert any("--input-size" in n for n in untraced.warnings)
    with pytest.raises(cbn_inspect.CbnError, match="nn.Module"):
        inspect_source(12345)


def test_analyze_a_timm_model_built_in_the_test():
    import timm

    model = timm.create_model("resnet18", pretrained=False).eval()
    report = analyze(model, (3, 64, 64))
    assert len(report.layers) == 20
    assert report.layers[0].layer.grid == (64, 64) and report.layers[-1].layer.grid[0] == 2
    same = analyze("timm:resnet18", (3, 64, 64))
    assert [r.layer.grid for r in same.layers] == [r.layer.grid for r in report.layers]


def test_analyze_settings_as_keywords():
    report = analyze(SAMPLES / "cbn_demo_1d.safetensors", tolerance="gap", spectra=True, min_gap=5.0)
    assert report.settings.tolerance.name == "gap" and report.settings.tolerance.value == 10.0
    assert report.settings.keep_spectra and report.layers[0].spectrum is not None
    assert make_settings(tolerance="relative", tol_value=0.2).tolerance.value == 0.2
    assert make_settings(grid=14).grid == (14,) and make_settings(grid="14x12").grid == (14, 12)
    with pytest.raises(TypeError, match="unknown setting"):
        analyze(SAMPLES / "cbn_demo.safetensors", tolerence="gap")
    with pytest.raises(TypeError):
        analyze(SAMPLES / "cbn_demo.safetensors", settings=Settings(), min_gap=3.0)


def _same(frame_value, json_value) -> bool:
    if json_value is None:
        return frame_value is None or (isinstance(frame_value, float) and math.isnan(frame_value))
    if isinstance(json_value, list):
        return frame_value == tuple(json_value)
    if isinstance(json_value, dict):
        return frame_value == {int(k): v for k, v in json_value.items()}
    return frame_value == json_value


@pytest.mark.parametrize("name", ["cbn_demo", "digits_cnn"])
def test_to_frame_equals_the_json(name):
    report = analyze(SAMPLES / f"{name}.safetensors")
    frame = report.to_frame()
    data = report_to_dict(report)
    assert len(frame) == len(data["layers"])
    degrees = sorted({int(d) for layer in data["layers"] for d in layer["degree_counts"]})
    assert list(frame.columns) == [*SCALARS, *TUPLES, *DICTS, "in_bottleneck", *[f"deg_{d}" for d in degrees]]
    b = data["bottleneck"]
    for (_, row), layer in zip(frame.iterrows(), data["layers"]):
        for column in (*SCALARS, *TUPLES, *DICTS):
            assert _same(row[column], layer[column]), (column, row[column], layer[column])
        assert row["in_bottleneck"] == bool(b["found"] and b["start_index"] <= layer["index"] <= b["end_index"])
        for d in degrees:
            assert row[f"deg_{d}"] == layer["degree_counts"].get(str(d), 0)
    assert frame["mode_count"].sum() == sum(layer["mode_count"] for layer in data["layers"])


def test_frame_columns_are_documented():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Notebooks"):]
    section = section[: section.index("\n## ", 4)]
    for column in (*SCALARS, *TUPLES, *DICTS, "in_bottleneck", "deg_"):
        assert f"`{column}" in section, column


def test_readme_notebook_example_runs(monkeypatch):
    """The README's notebook example, executed as written (from the repository root)."""
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Notebooks"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(code, "README.md#notebooks", "exec"), namespace)
    assert namespace["report"].bottleneck.found
    assert len(namespace["frame"]) == 12
    assert type(namespace["fig"]).__name__ == "Figure"
