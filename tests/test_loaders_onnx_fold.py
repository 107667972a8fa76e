"""ONNX conv weights reached through constant-foldable nodes (Identity, Cast, Reshape, Unsqueeze, Squeeze,
Transpose, DequantizeLinear): every conv analysed, each fold equal to what onnxruntime computes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cbn_inspect import ActivationSettings, Settings, inspect_source, load, report_to_dict
from cbn_inspect.report.json_report import validate_report

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SETTINGS = Settings(keep_spectra=True, precision="float64")


def _model(nodes, inits, x_shape=(1, 2, 8, 8), outputs=("y",), opset=17):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "g", inputs, outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ort_value(model, name):
    """What onnxruntime itself computes for the value ``name`` (exposed as an extra graph output)."""
    extra = onnx.ModelProto()
    extra.CopyFrom(model)
    extra.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(extra.SerializeToString(), providers=["CPUExecutionProvider"])
    x_dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return session.run([name], {"x": np.zeros(x_dims, np.float32)})[0]


rng = np.random.default_rng(3)
W = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
CASES = {
    # kind: (nodes in front of the conv, initializers); the conv reads the value "w"
    "Identity": ([helper.make_node("Identity", ["w0"], ["w"], name="id")], [numpy_helper.from_array(W, "w0")]),
    "Cast": ([helper.make_node("Cast", ["w0"], ["w"], to=TensorProto.FLOAT, name="cast")],
             [numpy_helper.from_array(W.astype(np.float64) * 1.0000001, "w0")]),
    "Reshape": ([helper.make_node("Reshape", ["w0", "shape"], ["w"], name="reshape")],
                [numpy_helper.from_array(W.reshape(4, 18), "w0"),  # 0 copies the input's axis, -1 is inferred
                 numpy_helper.from_array(np.array([0, 2, -1, 3], np.int64), "shape")]),
    "Unsqueeze": ([helper.make_node("Unsqueeze", ["w0", "axes"], ["w"], name="unsq")],
                  [numpy_helper.from_array(W[:, :, 1, :], "w0"), numpy_helper.from_array(np.array([2], np.int64), "axes")]),
    "Squeeze": ([helper.make_node("Squeeze", ["w0", "axes"], ["w"], name="sq")],
                [numpy_helper.from_array(W[None], "w0"), numpy_helper.from_array(np.array([0], np.int64), "axes")]),
    "Transpose": ([helper.make_node("Transpose", ["w0"], ["w"], perm=[0, 3, 1, 2], name="tr")],
                  [numpy_helper.from_array(np.ascontiguousarray(W.transpose(0, 2, 3, 1)), "w0")]),
    "DequantizeLinear": (
        [helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["dq"], axis=0, name="dq"),
         helper.make_node("Identity", ["dq"], ["w"], name="after_dq")],
        [numpy_helper.from_array(rng.integers(-128, 127, (4, 2, 3, 3)).astype(np.int8), "q"),
         numpy_helper.from_array(np.array([0.013, 0.02, 0.007, 0.1], np.float32), "scale"),
         numpy_helper.from_array(np.array([1, -3, 0, 5], np.int8), "zp")]),
    "Constant+Cast(float16)": (
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(W.astype(np.float16), "c")),
         helper.make_node("Cast", ["c"], ["w"], to=TensorProto.FLOAT, name="up")], []),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_node_kind_folds_to_what_onnxruntime_computes(tmp_path, kind):
    front, inits = CASES[kind]
    nodes = front + [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    model = _model(nodes, inits)
    onnx.save(model, str(tmp_path / "m.onnx"))
    loaded = load(tmp_path / "m.onnx")
    assert not loaded.skipped and [layer.name for layer in loaded.layers] == ["conv"]
    layer = loaded.layers[0]
    expected = _ort_value(model, "w")
    assert layer.shape == expected.shape == ((4, 2, 1, 3) if kind == "Unsqueeze" else (4, 2, 3, 3))
    assert layer.grid == (8, 8)
    weight = layer.weight.load()
    assert weight.dtype == torch.from_numpy(expected).dtype
    np.testing.assert_array_equal(weight.numpy(), expected)  # bit for bit: the runtime's numerics
    assert any("weight folded from constant" in note for note in layer.notes)
    assert (layer.flags == ("quantised",)) == (kind == "DequantizeLinear")
    if kind == "DequantizeLinear":
        assert layer.dtype == "int8"
    report = inspect_source(tmp_path / "m.onnx", SETTINGS)
    assert [r.layer.name for r in report.layers if r.metrics is not None] == ["conv"]


def test_a_weight_computed_at_run_time_is_still_skipped_with_its_reason(tmp_path):
    nodes = [helper.make_node("Shape", ["w0"], ["s"]),
             helper.make_node("Reshape", ["w0", "s"], ["w"], name="dyn"),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["y", "w1"], ["z"], name="conv2", pads=[1, 1, 1, 1])]
    onnx.save(_model(nodes, [numpy_helper.from_array(W, "w0"), numpy_helper.from_array(W[:, :2] * 0 + 1, "w1")],
                     outputs=("z",)), str(tmp_path / "m.onnx"))
    loaded = load(tmp_path / "m.onnx")
    assert dict(loaded.skipped)["conv"] == "weight cannot be folded from its constant: Reshape dyn to a shape computed at run time"


def test_a_squeeze_of_a_real_axis_is_refused_not_guessed(tmp_path):
    nodes = [helper.make_node("Squeeze", ["w0", "axes"], ["w"], name="sq"),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(W[None], "w0"), numpy_helper.from_array(np.array([1], np.int64), "axes")]
    onnx.save(_model(nodes, inits), str(tmp_path / "m.onnx"))
    assert "Squeeze sq of axes [1]" in dict(load(tmp_path / "m.onnx").skipped)["conv"]


class Tied(torch.nn.Module):
    """Middle convs b, c, d with identical weights: d's is b's Parameter (tied), c's an equal copy, which the
    TorchScript exporter de-duplicates into an Identity of b's initializer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.c = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.d = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.e = torch.nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.c.weight.copy_(self.b.weight)
            self.c.bias.copy_(self.b.bias)
        self.d.weight = self.b.weight

    def forward(self, x):
        for conv in (self.a, self.b, self.c, self.d):
            x = torch.relu(conv(x))
        return self.e(x)


def test_an_exported_network_with_tied_middle_convs_reports_every_conv_on_both_sides(tmp_path):
    path = tmp_path / "tied.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tied().eval(), (torch.randn(1, 3, 12, 12),), str(path), dynamo=False, opset_version=17)
    graph = onnx.load(str(path)).graph
    assert any(n.op_type == "Identity" for n in graph.node)  # the exporter did de-duplicate
    report = inspect_source(path, SETTINGS, activations=ActivationSettings("noise", max_inputs=6, batch_size=6))
    names = ["/a/Conv", "/b/Conv", "/c/Conv", "/d/Conv", "/e/Conv"]
    assert [r.layer.name for r in report.layers] == names and not report.skipped
    assert all(r.metrics is not None for r in report.layers)
    assert [layer.name for layer in report.activations.layers] == names
    spectra = {r.layer.name: r.spectrum.values for r in report.layers}
    for tied in ("/c/Conv", "/d/Conv"):
        np.testing.assert_array_equal(spectra[tied], spectra["/b/Conv"])
    assert not np.allclose(spectra["/a/Conv"][:, :3], spectra["/b/Conv"][:, :3])
    data = report_to_dict(report)
    validate_report(data)
    notes = {row["name"]: row["notes"] for row in data["layers"]}
    assert any(n.startswith("shares_weight_with: /c/Conv, /d/Conv") for n in notes["/b/Conv"])
    assert any("through Identity" in n for n in notes["/c/Conv"])
