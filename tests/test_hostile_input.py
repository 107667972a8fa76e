"""Hostile and malformed input (issue 13): each case class a fuzz run or an attacker found, one test each.

Every failure is a documented exit code with exactly one line on stderr and no traceback; names read from a
file reach the terminal as data (no rich markup, no control characters); odd numbers in a file are analysed
or flagged, never an internal error. Exit 70 (a bug) is one line too, with the traceback only under --debug.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace as dataclasses_replace
import struct
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cbn_inspect.report._text import clean, safe

MARKUP = "[/x]"
LINK = "[link=https://example.invalid]click[/link]"
ESC = "\x1b[31mred\x1b[0m"


def one_error_line(result, code: int) -> str:
    """Assert the documented exit code, one stderr line, no traceback; return that line."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def convs(n: int = 4, scale: float = 1.0, dtype=torch.float32, names=None) -> dict:
    g = torch.Generator().manual_seed(0)
    names = names or [f"l{i}" for i in range(n)]
    return {f"{name}.weight": (torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64) * scale).to(dtype)
            for name in names}


# ---- names are data -----------------------------------------------------------------------------------

def test_clean_spells_out_control_characters():
    assert clean("a\x1b[31mb\r\n\t\x9b\u202e\udcff") == "a\\x1b[31mb\\x0d\\x0a\\x09\\x9b\\u202e\\udcff"
    assert clean("[/x] ok :smile:") == "[/x] ok :smile:"
    assert safe(LINK).plain == LINK and not safe(LINK).spans


@pytest.mark.parametrize("command", ["report", "layers"])
def test_markup_and_escapes_in_names_are_printed_as_data(cli, tmp_path, command):
    names = [f"a{MARKUP}", "b[link=x]y[/link]", f"c{ESC}", "d:smile:"]  # short: the report cuts at 24
    path = tmp_path / "names.safetensors"
    save_file(convs(names=names), str(path))
    result = cli(command, path, env={"COLUMNS": "200", "FORCE_COLOR": "1"})
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert f"a{MARKUP}" in out and "b[link=x]y[/link]" in out
    assert "\\x1b[31mred\\x1b[0m" in out  # spelled out, not obeyed
    assert "\x1b[31mred" not in out and "\x1b]8;" not in out  # no raw escape from the name, no hyperlink
    assert "d:smile:" in out and "😄" not in out


def test_markup_in_paths_and_errors_reaches_the_audit_summary_as_data(cli, tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    state = convs(n=6, names=[f"x{MARKUP}{i}" for i in range(6)])  # markup in the bottleneck's layer names
    save_file(state, str(zoo / "ok[red]x.safetensors"))
    (zoo / "bad[link=file:x]y\x1b[2J.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{[/x]}   ")
    result = cli("audit", zoo, "--jobs", "1", "--out", tmp_path / "a.jsonl", env={"COLUMNS": "200"})
    assert result.exit_code == 8, result.stderr
    assert "ok[red]x.safetensors" in result.stdout
    assert "bad[link=file:x]y" in result.stdout and "bad[link=file:x]y" in result.stderr
    assert "\x1b[2J" not in result.stdout + result.stderr and "\\x1b[2J" in result.stdout
    assert "Traceback" not in result.stderr


def test_error_lines_quote_file_names_as_data(cli, tmp_path):
    path = tmp_path / "[red]x[link=file:y]z\x1b[2J.safetensors"
    path.write_bytes(b"not a checkpoint at all")
    line = one_error_line(cli(path), 3)
    assert "[red]x[link=file:y]z\\x1b[2J" in line and "\x1b" not in line


# ---- numbers in files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layers_meta", [
    '{"l0": {"grid": [NaN, 4]}, "l1": {"stride": Infinity}, "l2": {"dilation": -Infinity}}',
    '{"l0": {"grid": 1e999}, "l1": {"groups": NaN}, "l2": {"stride": [4, 4, 4, 4]}}',
    '{"l0": {"grid": [1099511627776, 1099511627776]}, "l1": {"dilation": 9223372036854775807}}',
])
def test_nonfinite_or_absurd_geometry_in_metadata_is_ignored_with_a_warning(cli, tmp_path, layers_meta):
    path = tmp_path / "meta.safetensors"
    save_file(convs(), str(path), metadata={"cbn_inspect.layers": layers_meta, "cbn_inspect.grid": "NaN"})
    result = cli(path)
    assert result.exit_code == 0, result.stderr
    assert "ignored malformed" in result.stdout
    data = cli.json(path)
    assert all(layer["mode_count"] is not None for layer in data["layers"])


def test_deeply_nested_metadata_json_is_ignored(cli, tmp_path):
    path = tmp_path / "deep.safetensors"
    save_file(convs(), str(path), metadata={"cbn_inspect.layers": '{"a":' * 5000 + "1" + "}" * 5000})
    result = cli(path)
    assert result.exit_code == 0 and "ignored malformed cbn_inspect metadata" in result.stdout


@pytest.mark.parametrize("scale,dtype", [(1e200, torch.float64), (1e-250, torch.float64), (None, torch.float32)])
def test_huge_and_tiny_weights_are_analysed_by_scaling(cli, tmp_path, scale, dtype):
    """Singular values are linear in the weight: 1e200 x W has the modes of W and 1e200 x its values."""
    plain = convs(dtype=torch.float64)
    if scale is None:  # float32's largest finite value, with signs
        big = {k: (torch.sign(v) * torch.finfo(torch.float32).max).to(torch.float32) for k, v in plain.items()}
        plain = {k: torch.sign(v).to(torch.float64) for k, v in plain.items()}
        scale = float(torch.finfo(torch.float32).max)
    else:
        big = {k: (v * scale).to(dtype) for k, v in plain.items()}
    save_file(plain, str(tmp_path / "plain.safetensors"))
    save_file(big, str(tmp_path / "big.safetensors"))
    result = cli(tmp_path / "big.safetensors")
    assert result.exit_code == 0, result.stderr
    ref, got = cli.json(tmp_path / "plain.safetensors"), cli.json(tmp_path / "big.safetensors")
    for a, b in zip(ref["layers"], got["layers"]):
        assert a["mode_count"] == b["mode_count"] and a["degree_counts"] == b["degree_counts"]
        assert b["spectral_norm"] == pytest.approx(a["spectral_norm"] * scale, rel=1e-5)


def test_weights_beyond_float64_after_scaling_are_flagged_overflow(tmp_path):
    from cbn_inspect import inspect_source

    state = convs(dtype=torch.float64)
    state["l1.weight"] = torch.full((4, 4, 3, 3), 1.7e308, dtype=torch.float64)
    save_file(state, str(tmp_path / "edge.safetensors"))
    report = inspect_source(tmp_path / "edge.safetensors")
    flags = {r.layer.name: r.flags for r in report.layers}
    assert flags["l1"] == ("overflow",) and report.layers[1].metrics is None
    assert all(r.metrics is not None for r in report.layers if r.layer.name != "l1")


def test_batchnorm_with_negative_variance_is_not_folded(cli, tmp_path):
    state = convs(names=["a.conv", "b.conv", "c.conv", "d.conv"])
    state["b.bn.weight"] = torch.ones(4)
    state["b.bn.running_var"] = torch.tensor([1.0, -1.0, 1.0, 1.0])
    path = tmp_path / "bn.safetensors"
    save_file(state, str(path))
    result = cli(path)
    assert result.exit_code == 0, result.stderr
    layer = next(layer for layer in cli.json(path)["layers"] if layer["name"] == "b.conv")
    assert "batchnorm-folded" not in layer["flags"] and layer["mode_count"] is not None
    assert any("not folded" in note and "not positive" in note for note in layer["notes"])


@pytest.mark.parametrize("variance,eps", [(0.0, 0.0), (0.0, -1e-5), (float("nan"), 1e-5), (1.0, float("inf"))])
def test_batchnorm_without_an_inference_scale_is_not_folded(variance, eps):
    """Zero variance with eps 0 (an ONNX file may say so), a negative eps, NaN: no scale to fold; with eps > 0
    a zero variance is a valid (large) scale and is folded, as PyTorch does at inference."""
    from cbn_inspect.analysis import analyze_layer, resolve_grid
    from cbn_inspect.records import BatchNormParams, ConvLayer, InMemoryWeight, Settings

    weight = torch.randn(4, 4, 3, 3)
    bn = BatchNormParams(name="bn", weight=torch.ones(4), running_var=torch.tensor([1.0, variance, 1.0, 1.0]), eps=eps)
    layer = resolve_grid(ConvLayer(name="c", shape=(4, 4, 3, 3), dtype="float32", weight=InMemoryWeight(weight),
                                   batchnorm=bn), Settings(grid=(4, 4)))
    report = analyze_layer(layer, weight, Settings(grid=(4, 4)))
    assert "batchnorm-folded" not in report.flags and report.metrics is not None
    assert any("not folded" in note for note in report.notes)
    ok = dataclasses_replace(layer, batchnorm=dataclasses_replace(bn, running_var=torch.tensor([1.0, 0.0, 1.0, 1.0]), eps=1e-5))
    assert "batchnorm-folded" in analyze_layer(ok, weight, Settings(grid=(4, 4))).flags


# ---- malformed containers -------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    (1, "not a file name"), (None, "not a file name"), (["a"], "not a file name"),
    ("missing.safetensors", "missing"), ("../../etc/passwd", "refused"), ("/etc/passwd", "refused"),
    ("sub/../../x.safetensors", "refused"), ("a\x00b", "not a file name"),
])
def test_malformed_index_values_are_refused(cli, tmp_path, value, expected):
    save_file(convs(), str(tmp_path / "shard.safetensors"))
    index = {"weight_map": {"l0.weight": "shard.safetensors", "l1.weight": value}}
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    assert expected in one_error_line(cli(path), 3)


@pytest.mark.parametrize("index", [[], {"weight_map": []}, {"weight_map": {}}, {"weight_map": {"a": "s"}, "metadata": 3}])
def test_malformed_index_structure(cli, tmp_path, index):
    save_file(convs(), str(tmp_path / "s"))
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    result = cli(path)
    if result.exit_code != 0:
        one_error_line(result, 3)


def test_meta_tensors_are_not_weights(cli, tmp_path):
    state = {f"l{i}.weight": torch.empty(4, 4, 3, 3, device="meta") for i in range(3)}
    path = tmp_path / "meta.pt"
    torch.save(state, path)
    one_error_line(cli(path), 4)
    mixed = dict(state, **convs(names=["m0", "m1", "m2"]))
    torch.save(mixed, tmp_path / "mixed.pt")
    data = cli.json(tmp_path / "mixed.pt")
    assert [layer["name"] for layer in data["layers"]] == ["m0", "m1", "m2"]


def test_deeply_nested_dicts_in_a_pickle_are_unreadable(cli, tmp_path):
    nested: dict = {"a.weight": torch.randn(2, 2, 3, 3)}
    for _ in range(3000):
        nested = {"x": nested}
    path = tmp_path / "deep.pt"
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        torch.save(nested, path)
    finally:
        sys.setrecursionlimit(limit)
    assert "nested too deeply" in one_error_line(cli(path), 3)


def test_non_utf8_zip_member_names_are_unreadable(cli, tmp_path):
    buffer = io.BytesIO()
    torch.save({"a.weight": torch.randn(2, 2, 3, 3)}, buffer)
    data = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        name = archive.namelist()[0].encode()
    bad = name[:-1] + b"\xff"
    path = tmp_path / "names.pt"
    raw = bytearray(data.replace(name, bad))
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        start = 0
        while (start := raw.find(signature, start)) >= 0:
            raw[start + flags_at + 1] |= 0x08  # general purpose bit 11: "names are UTF-8", so decoding fails
            start += 4
    path.write_bytes(bytes(raw))
    line = one_error_line(cli(path), 3)
    assert "\udcff" not in line


def _onnx_model(tmp_path, mutate) -> str:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3 if i == 0 else 4, 3, 3)).astype(np.float32), f"w{i}")
             for i in range(4)]
    nodes, prev = [], "x"
    for i in range(4):
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        prev = f"c{i}"
    mutate(nodes, helper)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


def test_onnx_nodes_with_missing_inputs_and_outputs(cli, tmp_path):
    def cut(nodes, helper):
        del nodes[1].input[1:]  # a conv without its weight input
        del nodes[2].output[:]  # a conv without outputs
        nodes.append(helper.make_node("BatchNormalization", ["c3"], ["n"], name="bn"))  # 1 of 5 inputs
    path = _onnx_model(tmp_path, cut)
    result = cli(path)
    assert result.exit_code == 0, result.stderr
    data = cli.json(path)
    assert [layer["name"] for layer in data["layers"]] == ["conv0", "conv2", "conv3"]
    assert any(s["name"] == "conv1" for s in data["skipped"])


@pytest.mark.parametrize("key,value", [("strides", "ab"), ("dilations", [1.5, 2.5]), ("group", "x"),
                                       ("pads", 7), ("strides", [1, 1, 1])])
def test_onnx_attributes_of_the_wrong_type_are_unreadable(cli, tmp_path, key, value):
    def wrong(nodes, helper):
        kept = [a for a in nodes[1].attribute if a.name != key]
        del nodes[1].attribute[:]
        nodes[1].attribute.extend(kept + [helper.make_attribute(key, value)])
    line = one_error_line(cli(_onnx_model(tmp_path, wrong)), 3)
    assert f"attribute {key}" in line and "conv1" in line


def test_scripted_model_with_batchnorm_under_input_size(cli, tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4)).eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    data = cli.json(path, "--input-size", "3x8x8", "--trust-code")
    assert ["batchnorm-folded" in layer["flags"] for layer in data["layers"]] == [True, True]


# ---- the error boundary --------------------------------------------------------------------------------

def test_memory_error_is_a_resource_limit_not_a_bug(cli, planted_path, monkeypatch):
    import cbn_inspect.analysis.layer as layer_module

    def boom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(layer_module, "compute_spectrum", boom)
    line = one_error_line(cli(planted_path), 7)
    assert "out of memory" in line


def test_memory_error_outside_the_analysis_is_caught_by_the_boundary(cli, planted_path, monkeypatch):
    import cbn_inspect.inspect as report_module  # the command imports inspect_source from here when it runs

    def boom(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(report_module, "inspect_source", boom)
    assert "ran out of memory" in one_error_line(cli(planted_path), 7)


def test_internal_error_is_one_line_and_debug_shows_the_traceback(cli, planted_path, monkeypatch):
    import cbn_inspect.inspect as report_module  # the command imports inspect_source from here when it runs

    def bug(*args, **kwargs):
        raise RuntimeError("first line\n  C++ backtrace line 1\n  line 2\n[/x]")

    monkeypatch.setattr(report_module, "inspect_source", bug)
    line = one_error_line(cli(planted_path), 70)
    assert "internal error: RuntimeError: first line" in line and "--debug" in line
    for args, env in (([planted_path, "--debug"], {}), (["--debug", planted_path], {}),
                      ([planted_path], {"CBN_INSPECT_DEBUG": "1"})):
        result = cli(*args, env={"COLUMNS": "80", **env})
        assert result.exit_code != 0
        assert isinstance(result.exception, RuntimeError)  # re-raised: typer prints the traceback


def test_debug_flag_shows_the_traceback_of_a_documented_error(cli, tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 64)
    result = cli(path, "--debug")
    assert result.exit_code == 3 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("cbn-inspect: error: ")


def test_unwritable_layers_json_is_a_usage_error(cli, planted_path, tmp_path):
    one_error_line(cli("layers", planted_path, "--json", tmp_path / "no" / "such" / "dir.json"), 2)
