"""timm architectures: timm:NAME, --arch for a file, config.json folders, the awkward conv kinds."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from safetensors.torch import save_file

from cbn_inspect.errors import UsageError
from cbn_inspect.inspect import analyze_model
from cbn_inspect.loaders import load
from cbn_inspect.loaders._timm import load_timm
from cbn_inspect.records import Settings

timm = pytest.importorskip("timm")


def _conv_modules(name: str, **kwargs) -> int:
    from torch.nn.modules.conv import _ConvNd

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **kwargs)
    return sum(isinstance(m, _ConvNd) for m in model.modules()) + sum(
        m.num_experts for m in model.modules() if type(m).__name__ == "CondConv2d")


def test_resnet50_grids_strides_and_order():
    loaded = load("timm:resnet50")
    layers = loaded.layers
    assert len(layers) == 53 and loaded.order_source == "trace"
    assert layers[0].name == "conv1" and layers[0].grid == (224, 224) and layers[0].stride == (2, 2)
    assert [layer.order for layer in layers] == list(range(53))
    assert Counter(layer.grid[0] for layer in layers) == {224: 1, 56: 13, 28: 13, 14: 19, 7: 7}
    by_name = {layer.name: layer for layer in layers}
    assert by_name["layer2.0.conv2"].grid == (56, 56) and by_name["layer2.0.conv2"].stride == (2, 2)
    assert by_name["layer2.0.conv3"].grid == (28, 28)
    assert by_name["layer4.2.conv3"].grid == (7, 7)
    assert by_name["layer1.0.downsample.0"].batchnorm.name == "layer1.0.downsample.1"
    assert all(layer.grid_source == "trace" and layer.geometry_source == "trace" for layer in layers)
    assert all(layer.padding_mode == "zeros" for layer in layers)


# Small variants of each family (same code paths, narrower or shallower), so the default run stays quick;
# the full-size models run with -m slow.
SMALL = [
    ("resnet18", dict(channels=(16, 32, 64, 128))),
    ("resnext50_32x4d", dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), cardinality=4)),
    ("regnetx_002", {}),
    ("convnext_atto", dict(dims=(16, 32, 64, 128))),
    ("efficientnet_b0", {}),
    ("mobilenetv3_small_050", {}),
    ("densenet121", dict(growth_rate=8, block_config=(2, 2, 2, 2))),
    ("vgg11", dict(mlp_ratio=1 / 64)),
    ("ghostnet_050", {}),
    ("resnetv2_50x1_bit", dict(channels=(256, 256, 256, 256))),  # StdConv2d
    ("nf_resnet26", dict(channels=(32, 64, 128, 256))),  # ScaledStdConv2d
    ("mixnet_s", {}),  # MixedConv2d
    ("efficientnet_cc_b0_4e", {}),  # CondConv2d
]
FULL = ["resnet18", "resnext26ts", "regnetx_002", "convnext_atto", "efficientnet_b0", "mobilenetv3_small_050",
        "densenet121", "vgg11", "ghostnet_050", "resnetv2_50x1_bit", "nf_resnet26", "mixnet_s",
        "efficientnet_cc_b0_4e"]


def _check(name: str, kwargs: dict) -> None:
    loaded = load_timm(name, size=(32,), fold_batchnorm=True, model_kwargs=kwargs)
    report = analyze_model(loaded, Settings())
    assert len(report.layers) == _conv_modules(name, **kwargs)
    assert all(r.metrics is not None for r in report.layers)
    assert report.order_source == "trace"
    assert all(r.layer.grid_source == "trace" for r in report.layers)


@pytest.mark.parametrize("name,kwargs", SMALL, ids=[m[0] for m in SMALL])
def test_model_list_loads_and_analyses(name, kwargs):
    _check(name, kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_model_list(name):
    _check(name, {})


def test_standardised_kernel_is_analysed():
    loaded = load("timm:resnetv2_50x1_bit", input_size="32")
    stem = loaded.layers[0]
    assert any("standardised" in n for n in stem.notes)
    kernel = stem.weight.load().reshape(stem.shape[0], -1)
    assert torch.allclose(kernel.mean(dim=1), torch.zeros(stem.shape[0]), atol=1e-4)
    assert torch.allclose(kernel.var(dim=1, unbiased=False), torch.ones(stem.shape[0]), atol=1e-2)


def test_condconv_experts_and_mixed_splits_are_named():
    cond = load("timm:efficientnet_cc_b0_4e", input_size="32")
    experts = [layer for layer in cond.layers if ".expert" in layer.name]
    assert experts and all("CondConv2d" in " ".join(layer.notes) for layer in experts)
    assert experts[0].weight.load().shape == experts[0].shape
    mixed = load("timm:mixnet_s", input_size="32")
    assert any("split 1 of MixedConv2d" in " ".join(layer.notes) for layer in mixed.layers)


def test_file_weights_in_a_timm_architecture(tmp_path):
    model = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load(path, arch="timm:resnet18", input_size="3x64x64")
    assert len(loaded.layers) == 20 and loaded.layers[0].grid == (64, 64)
    assert loaded.layers[-1].grid == (2, 2)
    assert torch.equal(loaded.layers[3].weight.load(), model.state_dict()[loaded.layers[3].name + ".weight"])
    assert loaded.layers[0].batchnorm is not None
    with pytest.raises(UsageError, match="do not fit"):
        load(path, arch="timm:resnet34")
    with pytest.raises(UsageError, match="no architecture"):
        load(path, arch="timm:not_a_model_xyz")


def test_folder_with_config_json(tmp_path):
    model = timm.create_model("resnet18", pretrained=False).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "architecture": "resnet18", "num_classes": 1000,
        "pretrained_cfg": {"input_size": [3, 96, 96]},
    }))
    loaded = load(tmp_path)
    assert loaded.order_source == "trace" and loaded.layers[0].grid == (96, 96)
    assert any("config.json" in n for n in loaded.source.notes)
