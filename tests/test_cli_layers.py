"""The CLI: `layers` lists without computing (or reading safetensors weights); report takes --arch/--input-size."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from cbn_inspect.cli import app, route
from cbn_inspect.loaders import _safetensors

timm = pytest.importorskip("timm")
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, route(list(args)))


def test_layers_lists_timm_model():
    result = _invoke("layers", "timm:resnet50")
    assert result.exit_code == 0, result.output
    assert "53 conv layers" in result.output and "order: trace" in result.output
    assert "224×224" in result.output and "7×7" in result.output


def test_layers_json_for_safetensors_reads_no_weights(tmp_path, monkeypatch):
    model = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))

    def refuse(self):
        raise AssertionError(f"layers read the weight {self.name}")

    monkeypatch.setattr(_safetensors.SafetensorsWeight, "load", refuse)
    result = _invoke("layers", str(path), "--arch", "timm:resnet18", "--input-size", "64", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["layers"]) == 20 and data["order_source"] == "trace"
    first = data["layers"][0]
    assert first["name"] == "conv1" and first["grid"] == [64, 64] and first["stride"] == [2, 2]
    assert set(first) >= {"name", "kind", "shape", "groups", "stride", "grid", "dtype", "notes"}
    bare = _invoke("layers", str(path), "--json", "-")  # identified, still without reading weights
    assert bare.exit_code == 0, bare.output
    assert json.loads(bare.stdout)["layers"][0]["grid"] == [224, 224]


def test_report_with_arch_and_input_size(tmp_path):
    model = timm.create_model("resnet18", pretrained=False, channels=(8, 16, 32, 64))
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    # the narrow variant is not a registered architecture: --arch with a mismatch is a usage error
    result = _invoke(str(path), "--arch", "timm:resnet18", "--json", "-")
    assert result.exit_code == 2 and "do not fit" in result.output
    result = _invoke("timm:test_resnet", "--input-size", "32", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["order_source"] == "trace" and data["layers"][0]["grid"] == [32, 32]
    assert data["layers"][0]["grid_source"] == "trace"


def test_pickled_module_refused_with_exit_code_5(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)), path)
    result = _invoke("layers", str(path))
    assert result.exit_code == 5 and "--trust-pickle" in result.output
    result = _invoke("layers", str(path), "--trust-pickle", "--input-size", "1x8x8")
    assert result.exit_code == 0 and "8×8" in result.output


def test_bad_input_size_is_a_usage_error():
    result = _invoke("layers", "timm:test_resnet", "--input-size", "big")
    assert result.exit_code == 2
