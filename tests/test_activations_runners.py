"""Runners not covered elsewhere: a file's weights in a timm architecture, whole modules, ONNX policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbn_inspect import inspect_source
from cbn_inspect.activations import open_runner
from cbn_inspect.errors import UnsafeContentError
from cbn_inspect.records import ActivationSettings

NOISE = ActivationSettings("noise", max_inputs=4, batch_size=4)


def test_file_weights_in_a_timm_architecture(tmp_path):
    """--arch: the file's weights run (not timm's random ones): changing a weight changes the activations."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = timm.create_model("test_resnet", pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    report = inspect_source(path, arch="timm:test_resnet", input_size="32", activations=NOISE)
    acts = report.activations
    assert acts.runner == "timm" and report.source.architecture == "timm:test_resnet"
    assert [layer.name for layer in acts.layers][:1] == [report.layers[0].layer.name]
    first = next(layer for layer in acts.layers if layer.name == report.layers[1].layer.name)
    state[f"{report.layers[0].layer.name}.weight"] = torch.zeros_like(state[f"{report.layers[0].layer.name}.weight"])
    save_file(state, str(path))
    zeroed = inspect_source(path, arch="timm:test_resnet", input_size="32", activations=NOISE).activations
    after = next(layer for layer in zeroed.layers if layer.name == first.name)
    assert first.metrics.spectral_norm > 0 and after.metrics.spectral_norm != pytest.approx(first.metrics.spectral_norm)


def test_whole_pickled_module_needs_trust_and_an_input_size(tmp_path):
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Conv2d(4, 4, 3, stride=2, padding=1))
    path = tmp_path / "whole.pt"
    torch.save(module, path)
    with pytest.raises(UnsafeContentError):
        inspect_source(path, activations=NOISE)
    report = inspect_source(path, trust_code=True, input_size="10", activations=NOISE)
    acts = report.activations
    assert acts.runner == "module"
    assert [(layer.name, layer.channels, layer.grid) for layer in acts.layers] == [("0", 2, (10, 10)), ("2", 4, (10, 10))]
    output = open_runner(path, trust_code=True, side="output")
    from cbn_inspect.activations import profile_activations

    out = profile_activations(output, ActivationSettings("noise", max_inputs=3, input_size=(10,), side="output"))
    assert [layer.grid for layer in out.layers] == [(10, 10), (5, 5)]


def test_onnx_custom_domain_is_refused_without_trust(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), dtype=np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mystery", ["y"], ["z"], domain="com.example.ops")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2, 8, 8])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.ops", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsafeContentError) as refused:
        open_runner(path)
    assert "com.example.ops" in refused.value.one_line() and "--trust-code" in refused.value.one_line()


def test_onnx_static_batch_of_one_and_pad_nodes(tmp_path):
    """A model exported with batch 1 runs input by input; an explicit Pad in front of a conv is looked through."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((3, 1, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 3, 3, 3)).astype(np.float32), "w2")
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads")
    nodes = [helper.make_node("Pad", ["x", "pads"], ["xp"], mode="reflect"),
             helper.make_node("Conv", ["xp", "w1"], ["h"], name="c1"),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="c2", strides=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w1, w2, pads])
    path = tmp_path / "pad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    report = inspect_source(path, activations=ActivationSettings("noise", max_inputs=5, batch_size=4))
    acts = report.activations
    assert [(layer.name, layer.grid, layer.inputs_seen) for layer in acts.layers] == [("c1", (9, 9), 5), ("c2", (9, 9), 5)]
    assert acts.inputs["preprocessing"]["input_shape"] == [1, 9, 9]
