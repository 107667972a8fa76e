"""ONNX: Conv/ConvTranspose with initializers or Constant weights, subgraphs, grids, BN, quantised skips."""

from __future__ import annotations

import numpy as np
import pytest

from cbn_inspect.loaders import detect_format, load

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _init(name: str, array: np.ndarray):
    return numpy_helper.from_array(array.astype(np.float32), name)


def write_model(path, *, declare_shapes: bool = True) -> None:
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3))
    w2 = rng.standard_normal((8, 4, 3, 3))  # groups=2
    wt = rng.standard_normal((8, 4, 2, 2))  # ConvTranspose (C_in, C_out/groups, k, k)
    w_sub = rng.standard_normal((4, 4, 1, 1))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="stem", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"], name="bn", epsilon=1e-3),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Constant", [], ["w2"], value=numpy_helper.from_array(w2.astype(np.float32), "w2c")),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="grouped", group=2, pads=[1, 1, 1, 1],
                         dilations=[1, 1]),
        helper.make_node("ConvTranspose", ["c2", "wt"], ["c3"], name="up", strides=[2, 2]),
        helper.make_node("QLinearConv", ["q", "qs", "qz", "qw", "qs", "qz", "qs", "qz"], ["qout"], name="quant"),
    ]
    then_branch = helper.make_graph(
        [helper.make_node("Conv", ["c3_4", "w_sub"], ["s_out"], name="inner")], "then", [],
        [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, None)], initializer=[_init("w_sub", w_sub)])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["c3_4"], ["e_out"])], "else", [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    nodes += [
        helper.make_node("Slice", ["c3", "st", "en", "ax"], ["c3_4"]),
        helper.make_node("If", ["cond"], ["out"], name="branch", then_branch=then_branch, else_branch=else_branch),
    ]
    shape = [1, 3, 16, 16] if declare_shapes else None
    inits = [_init("w1", w1), _init("wt", wt), _init("g", np.ones(8)), _init("b", np.zeros(8)),
             _init("m", np.zeros(8)), _init("v", np.full(8, 4.0)),
             numpy_helper.from_array(np.array([0], np.int64), "st"), numpy_helper.from_array(np.array([4], np.int64), "en"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(np.array(True), "cond")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                                           helper.make_tensor_value_info("q", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    onnx.save(model, str(path))


def test_onnx_layers_geometry_grids_and_skips(tmp_path):
    path = tmp_path / "model.onnx"
    write_model(path)
    assert detect_format(path) == "onnx"
    loaded = load(path)
    names = [layer.name for layer in loaded.layers]
    assert names == ["stem", "grouped", "up", "branch.then_branch/inner"]
    stem, grouped, up, inner = loaded.layers
    assert stem.stride == (2, 2) and stem.grid == (16, 16) and stem.grid_source == "metadata"
    assert stem.batchnorm is not None and stem.batchnorm.eps == pytest.approx(1e-3)
    assert grouped.groups == 2 and grouped.grid == (8, 8) and grouped.in_channels == 8
    assert up.transposed and up.grid == (8, 8) and up.kind == "conv_transpose2d"
    assert inner.shape == (4, 4, 1, 1)
    assert grouped.weight.load().shape == (8, 4, 3, 3)
    assert [name for name, _ in loaded.skipped] == ["quant"]
    assert "quantised" in loaded.skipped[0][1]


def test_onnx_without_declared_shapes_uses_the_default_grid(tmp_path):
    path = tmp_path / "noshape.onnx"
    write_model(path, declare_shapes=False)
    loaded = load(path)
    assert all(layer.grid is None for layer in loaded.layers)
    assert any("default grid" in n for n in loaded.source.notes)
