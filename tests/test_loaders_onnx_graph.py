"""ONNX graphs as a third-party exporter writes them: If bodies, explicit padding, dynamic inputs, quantised convs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cbn_inspect import Settings, inspect_source, load, report_to_dict
from cbn_inspect.report.json_report import validate_report

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _f32(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _i64(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _save(path, nodes, inits, inputs, opset=17, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                   for o in outputs], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))


def _branch(name, tag, n, rng):
    nodes, inits, value = [], [], "x"
    for i in range(n):
        inits.append(_f32(f"{tag}w{i}", rng.standard_normal((4, 4 if i else 1, 3))))
        nodes.append(helper.make_node("Conv", [value, f"{tag}w{i}"], [f"{tag}c{i}"], name=f"{tag}{i}", pads=[1, 1]))
        value = f"{tag}c{i}"
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(value, TensorProto.FLOAT, None)],
                             initializer=inits)


def test_if_bodies_are_alternatives_not_one_chain(tmp_path):
    rng = np.random.default_rng(0)
    then_g, else_g = _branch("then", "t", 3, rng), _branch("else", "e", 2, rng)
    nodes = [helper.make_node("If", ["cond"], ["y"], name="sr_switch", then_branch=then_g, else_branch=else_g)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16]),
              helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    _save(tmp_path / "if.onnx", nodes, [], inputs)
    loaded = load(tmp_path / "if.onnx")
    assert [layer.name.rsplit("/", 1)[1] for layer in loaded.layers] == ["t0", "t1", "t2"]
    assert {layer.branch for layer in loaded.layers} == {"sr_switch.then_branch"}
    assert any("else_branch (2 conv layers) is an alternative" in n for n in loaded.source.notes)
    other = load(tmp_path / "if.onnx", onnx_branch="else")
    assert [layer.name.rsplit("/", 1)[1] for layer in other.layers] == ["e0", "e1"]
    assert other.order_source == "graph" and other.order_confidence == "high"
    data = report_to_dict(inspect_source(tmp_path / "if.onnx", onnx_branch="else"))
    validate_report(data)
    assert data["layers"][0]["branch"] == "sr_switch.else_branch"


def test_onnx_order_is_execution_order_even_when_nodes_are_listed_out_of_order(tmp_path):
    rng = np.random.default_rng(1)
    inits = [_f32("we", rng.standard_normal((4, 1, 3, 3))), _f32("wd", rng.standard_normal((1, 4, 3, 3)))]
    nodes = [helper.make_node("Conv", ["h", "wd"], ["y"], name="decoder", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "we"], ["h"], name="encoder", pads=[1, 1, 1, 1])]
    _save(tmp_path / "o.onnx", nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])])
    assert [layer.name for layer in load(tmp_path / "o.onnx").layers] == ["encoder", "decoder"]


def _dense_circular_singular_values(weight: torch.Tensor, n: int) -> np.ndarray:
    conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], padding=weight.shape[-1] // 2,
                           padding_mode="circular", bias=False).double()
    conv.weight.data = weight.double()
    eye = torch.eye(weight.shape[1] * n * n, dtype=torch.float64).reshape(-1, weight.shape[1], n, n)
    with torch.no_grad():
        matrix = conv(eye).reshape(eye.shape[0], -1).T
    return np.sort(np.linalg.svd(matrix.numpy(), compute_uv=False))[::-1]


def _spectrum_values(report_layer) -> np.ndarray:
    values = [v for _, vals in report_layer.spectrum.full() for v in vals]
    return np.sort(np.asarray(values))[::-1]


def test_pytorch_circular_padding_export_is_a_circular_conv_on_the_unpadded_grid(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 4, 7, padding=3, padding_mode="circular"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, 7, 7), str(tmp_path / "circ.onnx"), dynamo=False)
    report = inspect_source(tmp_path / "circ.onnx", Settings(keep_spectra=True, precision="float64"))
    for layer, module in zip(report.layers, (model[0], model[2])):
        assert layer.layer.grid == (7, 7) and layer.layer.padding_mode == "circular"  # not 7 + 6 = 13
        assert layer.exact and "approximate" not in layer.flags
        dense = _dense_circular_singular_values(module.weight.detach(), 7)
        np.testing.assert_allclose(_spectrum_values(layer), dense, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mode,expected", [("wrap", "circular"), ("reflect", "reflect"), ("edge", "replicate"),
                                           ("constant", "zeros")])
def test_pad_node_in_front_of_a_conv_is_folded_in(tmp_path, mode, expected):
    rng = np.random.default_rng(2)
    inits = [_f32("w", rng.standard_normal((4, 2, 7, 7))), _i64("pads", [0, 0, 3, 3, 0, 0, 3, 3])]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode=mode),
             helper.make_node("Conv", ["p", "w"], ["y"], name="conv")]
    _save(tmp_path / "pad.onnx", nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 7, 7])],
          opset=19)
    report = inspect_source(tmp_path / "pad.onnx")
    layer = report.layers[0]
    assert layer.layer.grid == (7, 7) and layer.layer.padding_mode == expected
    assert layer.exact == (expected == "circular")


def test_circular_pad_that_does_not_match_the_kernel_stays_on_the_padded_grid(tmp_path):
    rng = np.random.default_rng(3)
    inits = [_f32("w", rng.standard_normal((4, 2, 3, 3))), _i64("pads", [0, 0, 2, 2, 0, 0, 2, 2])]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="wrap"),
             helper.make_node("Conv", ["p", "w"], ["y"], name="conv")]
    _save(tmp_path / "pad.onnx", nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 7, 7])],
          opset=19)
    layer = inspect_source(tmp_path / "pad.onnx").layers[0]
    assert layer.layer.grid == (11, 11) and not layer.exact
    assert any("not the kernel's extent" in n for n in layer.notes)


def _strided_detector(path, dims):
    rng = np.random.default_rng(4)
    inits = [_f32("w1", rng.standard_normal((8, 3, 3, 3))), _f32("w2", rng.standard_normal((8, 8, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1", strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", strides=[2, 2], pads=[1, 1, 1, 1])]
    _save(path, nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)])


def test_dynamic_onnx_input_takes_its_size_from_the_flag(tmp_path):
    _strided_detector(tmp_path / "dyn.onnx", ["batch", 3, "height", "width"])
    assert all(layer.grid is None for layer in load(tmp_path / "dyn.onnx").layers)
    loaded = load(tmp_path / "dyn.onnx", input_size="64x48")
    assert [layer.grid for layer in loaded.layers] == [(64, 48), (32, 24)]
    assert {layer.grid_source for layer in loaded.layers} == {"metadata"}
    assert any("--input-size" in n for n in loaded.source.notes)
    _strided_detector(tmp_path / "static.onnx", [1, 3, 40, 40])  # a static input needs no flag
    assert [layer.grid for layer in load(tmp_path / "static.onnx").layers] == [(40, 40), (20, 20)]


def _quant_weight(rng, shape):
    w = rng.integers(-100, 100, size=shape).astype(np.int8)
    return w, numpy_helper.from_array(w, "wq")


def test_quantised_convs_are_dequantised_and_flagged(tmp_path):
    rng = np.random.default_rng(5)
    w, wq = _quant_weight(rng, (4, 2, 3, 3))
    scale = np.array([0.5, 0.25, 0.125, 1.0], np.float32)
    real = (w.astype(np.float64) - 3) * scale.reshape(-1, 1, 1, 1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    cases = {
        "dequantize": ([helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], axis=0),
                        helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])],
                       [wq, _f32("s", scale), numpy_helper.from_array(np.full(4, 3, np.int8), "z")], [x]),
        "qlinear": ([helper.make_node("QLinearConv", ["xq", "xs", "xz", "wq", "s", "z", "ys", "yz"], ["y"],
                                      name="conv", pads=[1, 1, 1, 1])],
                    [wq, _f32("s", scale), numpy_helper.from_array(np.full(4, 3, np.int8), "z"), _f32("xs", 1.0),
                     numpy_helper.from_array(np.array(0, np.uint8), "xz"), _f32("ys", 1.0),
                     numpy_helper.from_array(np.array(0, np.uint8), "yz")],
                    [helper.make_tensor_value_info("xq", TensorProto.UINT8, [1, 2, 8, 8])]),
        "integer": ([helper.make_node("ConvInteger", ["xq", "wq", "xz", "z"], ["ci"], name="conv", pads=[1, 1, 1, 1]),
                     helper.make_node("Cast", ["ci"], ["cf"], to=TensorProto.FLOAT),
                     helper.make_node("Mul", ["cf", "s4"], ["y"])],
                    [wq, numpy_helper.from_array(np.full(4, 3, np.int8), "z"),
                     numpy_helper.from_array(np.array(0, np.uint8), "xz"), _f32("s4", scale.reshape(1, 4, 1, 1))],
                    [helper.make_tensor_value_info("xq", TensorProto.UINT8, [1, 2, 8, 8])]),
    }
    for name, (nodes, inits, inputs) in cases.items():
        path = tmp_path / f"{name}.onnx"
        _save(path, nodes, inits, inputs)
        loaded = load(path)
        assert not loaded.skipped, name
        (layer,) = loaded.layers
        assert layer.flags == ("quantised",) and layer.dtype == "int8" and layer.grid == (8, 8)
        np.testing.assert_allclose(layer.weight.load().numpy(), real, rtol=1e-6, err_msg=name)
        report = inspect_source(path)
        assert "quantised" in report.layers[0].flags and report.layers[0].metrics.mode_count > 0
        validate_report(report_to_dict(report))
