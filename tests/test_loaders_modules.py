"""Whole pickled modules (only with trust) and TorchScript programs (read statically; run only with trust)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

from cbn_inspect.errors import UnsafeContentError
from cbn_inspect.loaders import detect_format, load


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2, padding_mode="circular"), nn.ReLU(),
        nn.Conv2d(8, 4, 1),
    ).eval()


def test_pickled_module_refused_without_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(small_net(), path)
    with pytest.raises(UnsafeContentError, match="--trust-pickle|could run code"):
        load(path)


def test_pickled_module_traced_with_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(small_net(), path)
    loaded = load(path, trust_code=True, input_size="16")
    assert loaded.order_source == "trace"
    assert [layer.grid for layer in loaded.layers] == [(16, 16), (8, 8), (8, 8)]
    assert loaded.layers[0].batchnorm.name == "1"
    assert loaded.layers[1].groups == 2 and loaded.layers[1].padding_mode == "circular"
    untraced = load(path, trust_code=True)
    assert all(layer.grid is None for layer in untraced.layers)
    assert any("--input-size" in n for n in untraced.source.notes)
    assert untraced.layers[1].groups == 2  # declared by the module even without a trace


def test_checkpoint_dict_holding_a_module(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": small_net(), "epoch": 3}, path)
    loaded = load(path, trust_code=True, input_size="3x16x16")
    assert len(loaded.layers) == 3 and loaded.layers[2].grid == (8, 8)


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_is_recognised_and_traced(tmp_path, how):
    net = small_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.jit.script(net) if how == "script" else torch.jit.trace(net, torch.zeros(1, 3, 16, 16))
        path = tmp_path / "program.pt"
        torch.jit.save(program, str(path))
    assert detect_format(path) == "torchscript"
    loaded = load(path, input_size="16", trust_code=True)  # tracing runs the program: trusted only
    assert loaded.source.format == "torchscript" and loaded.order_source == "trace"
    assert [layer.name for layer in loaded.layers] == ["0", "3", "5"]
    assert [layer.grid for layer in loaded.layers] == [(16, 16), (8, 8), (8, 8)]
    assert loaded.layers[0].stride == (2, 2) and loaded.layers[1].groups == 2
    assert loaded.layers[0].batchnorm is not None and loaded.layers[0].batchnorm.name == "1"
    if how == "script":
        assert loaded.layers[1].padding_mode == "circular"
    bare = load(path)  # read statically: names, geometry and order from the archive, default grids
    assert len(bare.layers) == 3 and all(layer.grid is None for layer in bare.layers)
    assert [layer.name for layer in bare.layers] == ["0", "3", "5"] and bare.order_source == "metadata"
    assert [(la.stride, la.groups, la.padding_mode) for la in bare.layers] == \
        [(la.stride, la.groups, la.padding_mode) for la in loaded.layers]
    assert bare.layers[0].batchnorm is not None and bare.layers[0].batchnorm.name == "1"
