"""Bare state dicts: a timm model's state_dict() is identified by its key/shape signature, without --arch."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from cbn_inspect.loaders import load
from cbn_inspect.loaders._identify import cache_dir, identify

timm = pytest.importorskip("timm")


def _save(model, path):
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def test_timm_state_dict_is_identified_without_arch(tmp_path):
    model = timm.create_model("resnet18", pretrained=False).eval()
    path = tmp_path / "weights.safetensors"  # a neutral name: no hint
    _save(model, path)
    loaded = load(path)
    assert loaded.order_source == "trace"
    assert any("identified as timm:resnet18" in n for n in loaded.source.notes)
    assert (loaded.source.architecture, loaded.source.architecture_source) == ("timm:resnet18", "identified")
    assert loaded.layers[0].grid == (224, 224) and loaded.layers[-1].grid == (7, 7)
    assert all(layer.grid_source == "trace" for layer in loaded.layers)
    cached = json.loads(next(cache_dir().glob("timm-*-signatures.json")).read_text())
    assert "resnet18" in cached  # the signature index is kept for next time


def test_fine_tuned_head_still_matches(tmp_path):
    model = timm.create_model("resnet18", pretrained=False, num_classes=5)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert identify(shapes).arch == "resnet18"


def test_unknown_state_dict_falls_back_to_the_default_grid(tmp_path):
    path = tmp_path / "custom.safetensors"
    save_file({"conv1.weight": torch.randn(4, 3, 3, 3), "fc.weight": torch.randn(2, 4),
               "layer9.weight": torch.randn(4, 4, 3, 3)}, str(path))
    loaded = load(path)
    assert loaded.order_source == "shapes"  # safetensors sorts its keys: a chain of channel counts (issue 12)
    assert all(layer.grid is None for layer in loaded.layers)
    assert any("architecture not identified" in n for n in loaded.source.notes)
    assert loaded.source.architecture is None
    assert not any("architecture" in n for n in load(path, identify=False).source.notes)
