"""Loaders for files holding tensors: safetensors (plain, sharded), PyTorch files and their wrappers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cbn_inspect import Settings, inspect_source, load
from cbn_inspect.errors import UsageError
from cbn_inspect.loaders import natural_key, parse_grid


def conv_state(prefix="", n=3):
    torch.manual_seed(0)
    state = {f"{prefix}features.{i}.weight": torch.randn(4, 4 if i else 3, 3, 3) for i in range(n)}
    state[f"{prefix}features.0.bias"] = torch.zeros(4)
    state[f"{prefix}fc.weight"] = torch.randn(10, 4)
    return state


def test_natural_sort():
    names = ["layer10.conv", "layer9.conv", "layer1.conv", "layer2.conv"]
    assert sorted(names, key=natural_key) == ["layer1.conv", "layer2.conv", "layer9.conv", "layer10.conv"]


@pytest.mark.parametrize("text,grid", [("32", (32,)), ("14x14", (14, 14)), ("8X4", (8, 4)), ("4x4x4", (4, 4, 4))])
def test_parse_grid(text, grid):
    assert parse_grid(text) == grid


@pytest.mark.parametrize("text", ["", "0", "ax3", "1x2x3x4", "-3"])
def test_parse_grid_rejects(text):
    with pytest.raises(ValueError):
        parse_grid(text)


def test_safetensors_reads_header_only(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_file(conv_state(), str(path))
    import safetensors

    calls = []
    original = safetensors.safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.inner = original(*a, **k)

        def __enter__(self):
            handle = self.inner.__enter__()

            class H:
                def __getattr__(_, name):
                    if name == "get_tensor":
                        calls.append(name)
                    return getattr(handle, name)

            return H()

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    monkeypatch.setattr(safetensors, "safe_open", Spy)
    loaded = load(path)
    assert [layer.name for layer in loaded.layers] == ["features.0", "features.1", "features.2"]
    assert loaded.layers[0].shape == (4, 3, 3, 3) and loaded.layers[0].dtype == "float32"
    assert calls == []  # shapes and dtypes came from the header alone
    loaded.layers[1].weight.load()
    assert calls == ["get_tensor"]


def test_sharded_safetensors(tmp_path):
    state = conv_state()
    names = sorted(state)
    save_file({k: state[k] for k in names[:2]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: state[k] for k in names[2:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: ("model-00001-of-00002.safetensors" if k in names[:2] else "model-00002-of-00002.safetensors")
                  for k in names}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"cbn_inspect.grid": "16"}, "weight_map": weight_map}))
    for source in (index, tmp_path):  # the index, or the folder holding it
        loaded = load(source)
        assert loaded.source.format == "safetensors-sharded"
        assert len(loaded.layers) == 3 and all(layer.grid == (16, 16) for layer in loaded.layers)


def test_sharded_index_cannot_point_outside_its_folder(tmp_path):
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a.weight": "../../etc/passwd"}}))
    from cbn_inspect.errors import UnreadableInputError

    with pytest.raises(UnreadableInputError, match="outside"):
        load(index)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "model_ema", "lightning", "dataparallel", "compiled"])
def test_pytorch_wrappers_and_prefixes(tmp_path, wrap):
    state = conv_state()
    obj = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 3, "optimizer": {"state": {0: {"exp_avg": torch.randn(4, 3, 3, 3)}}}},
        "model": {"model": state, "args": {"lr": 0.1}},
        "model_ema": {"model_ema": state},
        "lightning": {"state_dict": state, "pytorch-lightning_version": "2.0.0", "global_step": 10},
        "dataparallel": {f"module.{k}": v for k, v in state.items()},
        "compiled": {"state_dict": {f"_orig_mod.module.{k}": v for k, v in state.items()}},
    }[wrap]
    path = tmp_path / "m.pt"
    torch.save(obj, path)
    loaded = load(path)
    assert [layer.name for layer in loaded.layers] == ["features.0", "features.1", "features.2"]


def test_both_raw_and_ema_picks_raw_and_says_so(tmp_path):
    path = tmp_path / "m.pth"
    ema = {k: v * 2 for k, v in conv_state().items()}
    torch.save({"state_dict": conv_state(), "state_dict_ema": ema}, path)
    loaded = load(path)
    assert any("state_dict_ema" in note for note in loaded.source.notes)
    chosen = load(path, key="state_dict_ema")
    assert torch.equal(chosen.layers[0].weight.load(), ema["features.0.weight"])
    with pytest.raises(UsageError):
        load(path, key="nope")


def test_legacy_pickle_format(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(conv_state(), path, _use_new_zipfile_serialization=False)
    assert len(load(path).layers) == 3


def test_skipped_tensors_have_reasons(tmp_path):
    state = conv_state()
    state["pos_embed"] = torch.randn(1, 16, 8)
    state["q.weight"] = torch.randint(0, 5, (4, 4, 3, 3), dtype=torch.int8)
    path = tmp_path / "m.safetensors"
    save_file(state, str(path))
    loaded = load(path)
    skipped = dict(loaded.skipped)
    assert "weight" in skipped["pos_embed"] and "floating" in skipped["q.weight"]
    assert len(loaded.layers) == 3


def test_batchnorm_is_paired_and_folded(tmp_path):
    torch.manual_seed(1)
    state = {
        "block.conv.weight": torch.randn(4, 3, 3, 3),
        "block.bn.weight": torch.rand(4) + 0.5,
        "block.bn.bias": torch.zeros(4),
        "block.bn.running_mean": torch.zeros(4),
        "block.bn.running_var": torch.rand(4) + 0.5,
        "features.0.weight": torch.randn(4, 4, 3, 3),
        "features.1.weight": torch.rand(4) + 0.5,
        "features.1.running_var": torch.rand(4) + 0.5,
        "conv2.weight": torch.randn(4, 4, 3, 3),
        "bn2.running_var": torch.rand(4) + 0.5,
        "bn2.weight": torch.rand(4) + 0.5,
        "head.weight": torch.randn(4, 4, 3, 3),
        "head_BN.running_var": torch.rand(4) + 0.5,
    }
    path = tmp_path / "bn.safetensors"
    save_file(state, str(path))
    loaded = load(path)
    pairs = {layer.name: layer.batchnorm.name for layer in loaded.layers}
    assert pairs == {"block.conv": "block.bn", "conv2": "bn2", "features.0": "features.1", "head": "head_BN"}
    folded = inspect_source(path, Settings(grid=(6, 6), precision="float64"))
    plain = inspect_source(path, Settings(grid=(6, 6), precision="float64", fold_batchnorm=False))
    layer = next(r for r in folded.layers if r.layer.name == "block.conv")
    assert "batchnorm-folded" in layer.flags
    # the folded spectral norm equals that of the explicitly scaled kernel
    scale = state["block.bn.weight"] / torch.sqrt(state["block.bn.running_var"] + 1e-5)
    scaled = (state["block.conv.weight"] * scale[:, None, None, None]).double()
    spec = torch.fft.fft2(scaled, s=(6, 6)).permute(2, 3, 0, 1)
    assert layer.metrics.spectral_norm == pytest.approx(float(torch.linalg.matrix_norm(spec, 2).max()), rel=1e-6)
    assert next(r for r in plain.layers if r.layer.name == "block.conv").layer.batchnorm is None


def test_metadata_declares_geometry_and_order(tmp_path):
    state = {"b.weight": torch.randn(4, 3, 3, 3), "a.weight": torch.randn(8, 2, 3, 3), "c.weight": torch.randn(3, 4, 3, 3)}
    meta = {
        "cbn_inspect.layers": json.dumps({
            "b": {"grid": [16, 16], "stride": [2, 2], "padding_mode": "zeros"},
            "a": {"grid": [8, 8], "groups": 2, "padding_mode": "circular"},
            "c": {"grid": [8, 8], "transposed": True, "stride": 2, "padding_mode": "circular"},
        }),
        "cbn_inspect.order": json.dumps(["b", "a", "c"]),
        "note": "free text is kept verbatim",
    }
    path = tmp_path / "meta.safetensors"
    save_file(state, str(path), metadata=meta)
    loaded = load(path)
    assert loaded.order_source == "metadata"
    b, a, c = loaded.layers
    assert (b.name, b.stride, b.grid, b.padding_mode) == ("b", (2, 2), (16, 16), "zeros")
    assert (a.groups, a.in_channels, a.out_channels) == (2, 4, 8)
    assert c.transposed and c.kind == "conv_transpose2d" and (c.in_channels, c.out_channels) == (3, 4)
    report = inspect_source(path)
    assert report.source.metadata["note"] == "free text is kept verbatim"
    assert [r.spectrum_grid for r in report.layers] == [(8, 8), (8, 8), (8, 8)]
    assert [r.exact for r in report.layers] == [False, True, True]


def test_malformed_metadata_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "bad-meta.safetensors"
    save_file({"a.weight": torch.randn(2, 2, 3, 3)}, str(path), metadata={"cbn_inspect.layers": "{not json"})
    report = inspect_source(path)
    assert any("malformed" in w for w in report.warnings)
    assert report.layers[0].layer.grid_source == "default"


def test_default_grid_and_flag(tmp_path):
    path = tmp_path / "m.safetensors"
    state = conv_state()
    state["big.weight"] = torch.randn(2, 2, 40, 40)
    save_file(state, str(path))
    default = {r.layer.name: r.layer.grid for r in inspect_source(path).layers}
    assert default["features.0"] == (32, 32) and default["big"] == (40, 40)
    flagged = inspect_source(path, Settings(grid=(12,)))
    assert all(r.layer.grid == (12, 12) and r.layer.grid_source == "flag" for r in flagged.layers)
    assert any("wrapped" in note for r in flagged.layers for note in r.notes)
    assert np.all([not r.exact for r in flagged.layers])  # padding not declared: approximate
