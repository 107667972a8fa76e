"""Layer order of state dicts: the file's own order (PyTorch), a chain of channel counts (safetensors)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from safetensors.torch import save_file

from cbn_inspect import Settings, inspect_source, load, report_to_dict
from cbn_inspect.report.json_report import validate_report


def _w(cout, cin, k=3):
    return torch.randn(cout, cin, k, k)


def test_pytorch_state_dict_keeps_registration_order(tmp_path):
    # {conv, conv2}: a natural sort lists conv2 first; a front end named stft_conv lands last by name
    torch.manual_seed(0)
    state = OrderedDict([("stft_conv.weight", _w(8, 1)), ("conv.weight", _w(8, 8)), ("conv2.weight", _w(4, 8))])
    torch.save(state, tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt")
    assert [layer.name for layer in loaded.layers] == ["stft_conv", "conv", "conv2"]
    assert loaded.order_source == "file" and loaded.order_confidence == "high"


def test_pytorch_file_order_that_breaks_the_channel_chain_is_medium(tmp_path):
    torch.manual_seed(0)
    state = OrderedDict([("b.weight", _w(8, 8)), ("a.weight", _w(8, 3))])
    torch.save(state, tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt")
    assert [layer.name for layer in loaded.layers] == ["b", "a"]
    assert loaded.order_source == "file" and loaded.order_confidence == "medium"


def test_safetensors_order_recovered_from_channel_counts(tmp_path):
    torch.manual_seed(0)
    # sorted keys: conv, conv2, prefilter, z_head; data flow: prefilter (1 ch) -> conv -> conv2 -> z_head
    state = {"conv.weight": _w(16, 8), "conv2.weight": _w(32, 16), "prefilter.weight": _w(8, 1, 5),
             "z_head.weight": _w(2, 32, 1)}
    save_file(state, str(tmp_path / "m.safetensors"))
    loaded = load(tmp_path / "m.safetensors")
    assert [layer.name for layer in loaded.layers] == ["prefilter", "conv", "conv2", "z_head"]
    assert loaded.order_source == "shapes" and loaded.order_confidence == "high"
    report = inspect_source(tmp_path / "m.safetensors", Settings(grid=(8, 8)))
    data = report_to_dict(report)
    validate_report(data)
    assert data["order_source"] == "shapes" and data["order_confidence"] == "high"
    assert [layer["name"] for layer in data["layers"]][0] == "prefilter"


def test_safetensors_ties_are_broken_by_name_with_medium_confidence(tmp_path):
    torch.manual_seed(0)
    # after stem both 8 -> 8 layers fit: the tie goes by name, the rest is forced
    state = {"mid_b.weight": _w(8, 8), "mid_a.weight": _w(8, 8), "stem.weight": _w(8, 3), "a_out.weight": _w(1, 8)}
    save_file(state, str(tmp_path / "m.safetensors"))
    loaded = load(tmp_path / "m.safetensors")
    names = [layer.name for layer in loaded.layers]
    assert names[0] == "stem" and loaded.order_confidence == "medium"
    # a branch (two heads after one trunk) breaks the chain: low
    state = {"trunk.weight": _w(8, 3), "head_a.weight": _w(2, 8, 1), "head_b.weight": _w(4, 8, 1)}
    save_file(state, str(tmp_path / "h.safetensors"))
    loaded = load(tmp_path / "h.safetensors")
    assert [layer.name for layer in loaded.layers] == ["trunk", "head_a", "head_b"]
    assert loaded.order_confidence == "low"


def test_safetensors_without_a_chain_falls_back_to_names_with_low_confidence(tmp_path):
    torch.manual_seed(0)
    state = {"layer10.weight": _w(8, 8), "layer9.weight": _w(5, 6)}
    save_file(state, str(tmp_path / "m.safetensors"))
    loaded = load(tmp_path / "m.safetensors")
    assert [layer.name for layer in loaded.layers] == ["layer9", "layer10"]
    assert loaded.order_source == "shapes" and loaded.order_confidence == "low"
