"""Acceptance 1: activation counts are exact on a planted linear network, through every runner.

The network (``synthetic.planted_linear_network``): full-size circular convs, no nonlinearity, layer 0
projecting onto 3 @ deg 0, 4 @ deg 1, 1 @ deg 2 and every later layer keeping exactly that. With more
random inputs than kept directions, the feature map entering every layer after the first has exactly these
ranks. The same network runs as a rebuilt module (from its safetensors metadata), as a TorchScript archive
and as an ONNX model; all three give the same counts.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from cbn_inspect import inspect_source
from cbn_inspect.activations import ModuleRunner, open_runner, profile_activations
from cbn_inspect.activations.inputs import ModelInput
from cbn_inspect.activations.runners import CircularStack
from cbn_inspect.errors import UnsafeContentError
from cbn_inspect.records import ActivationSettings
from cbn_inspect.synthetic import planted_linear_network

PLANTED = {0: 3, 1: 4, 2: 1}
DEPTH = 5
SETTINGS = ActivationSettings("noise", max_inputs=24, batch_size=8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from safetensors.numpy import save_file

    state, meta = planted_linear_network(depth=DEPTH, seed=3)
    folder = tmp_path_factory.mktemp("planted")
    path = folder / "planted.safetensors"
    save_file(state, str(path), metadata=meta)
    module = CircularStack([torch.from_numpy(state[f"layers.{i}.weight"]) for i in range(DEPTH)], relu=False)
    return path, module, folder


def _middle_counts(activations):
    return [dict(layer.metrics.degree_counts["l1"]) for layer in activations.layers[1:]]


def _check(activations):
    assert [layer.name for layer in activations.layers] == [f"layers.{i}" for i in range(DEPTH)]
    assert all(layer.grid == (4, 4) for layer in activations.layers)
    assert _middle_counts(activations) == [PLANTED] * (DEPTH - 1)
    assert all(layer.metrics.mode_count == 8 for layer in activations.layers[1:])
    # the input itself is Gaussian noise: every frequency full (4 channels, 24 inputs)
    assert activations.layers[0].metrics.mode_count == 16 * 4
    # discarded values are round-off: the split is clean by orders of magnitude
    assert all(layer.metrics.gap_ratio > 1e4 for layer in activations.layers[1:])


def test_planted_counts_from_the_rebuilt_file(planted):
    path, _, _ = planted
    report = inspect_source(path, activations=SETTINGS)
    assert report.activations.runner == "sample"
    _check(report.activations)
    b = report.activations.bottleneck
    assert b.found and b.rank == 8 and dict(b.degree_counts) == PLANTED
    # the weights say the same on this network
    assert [dict(r.metrics.degree_counts["l1"]) for r in report.layers] == [PLANTED] * DEPTH


def test_planted_counts_exact_with_few_inputs_per_direction(planted):
    """4 inputs: still more than the 3 directions at frequency 0, so the counts stay exact."""
    _, module, _ = planted
    runner = ModuleRunner(module, ModelInput(channels=4, spatial=(4, 4)), side="input", device="cpu")
    report = profile_activations(runner, ActivationSettings("noise", max_inputs=4, batch_size=3))
    assert _middle_counts(report) == [PLANTED] * (DEPTH - 1)
    assert report.layers[0].metrics.capacity == 16 * 4


def test_planted_counts_through_torchscript(planted):
    path, module, folder = planted
    archive = folder / "planted_ts.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(module, torch.zeros(1, 4, 4, 4)).save(str(archive))
    with pytest.raises(UnsafeContentError) as refused:
        open_runner(archive, side="input")
    assert "--trust-code" in refused.value.one_line() and refused.value.exit_code == 5
    runner = open_runner(archive, side="input", trust_code=True)
    assert runner.kind == "torchscript"
    report = profile_activations(runner, ActivationSettings("noise", max_inputs=24, batch_size=8,
                                                            input_size=(4, 4)))
    _check(report)


def test_planted_counts_through_onnx(planted):
    pytest.importorskip("onnxruntime")
    path, module, folder = planted
    model = folder / "planted.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, 4, 4, 4),), str(model), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    runner = open_runner(model, side="input")
    assert runner.kind == "onnxruntime"
    report = profile_activations(runner, SETTINGS)
    # the exporter writes circular padding as Concat(x, Slice(x)): the runner profiles x, on the 4x4 grid
    assert [layer.grid for layer in report.layers] == [(4, 4)] * DEPTH
    assert _middle_counts(report) == [PLANTED] * (DEPTH - 1)
    assert report.layers[0].metrics.mode_count == 64


def test_output_side_counts_are_the_planted_ones_at_every_layer(planted):
    """On the output side even layer 0's feature map is the projection: every layer keeps exactly the plant."""
    _, module, _ = planted
    runner = ModuleRunner(module, ModelInput(channels=4, spatial=(4, 4)), side="output", device="cpu")
    report = profile_activations(runner, SETTINGS)
    assert [dict(layer.metrics.degree_counts["l1"]) for layer in report.layers] == [PLANTED] * DEPTH
