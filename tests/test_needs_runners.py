"""Acceptance 1 and 2 of ``needs``: interventions are real, and known answers come out exactly, per runner.

The planted network (``synthetic.planted_linear_network``): full-size circular convs on an 8x8 grid, no
nonlinearity; layer 0 maps the input onto 2 directions at frequency 0 and 1 at each of (1, 0) and (0, 1) (and
their mirrors), later layers keep exactly these; every layer also carries a 1e-2 full-rank floor at every
frequency, so the feature map entering layers.2 spans 136 directions of the decide inputs, 6 of them planted. So the
feature map entering layers.2 needs rank 6 (2 @ deg 0, 4 @ deg 1) of its 512 directions, the l1 ball of degree 1,
the box band 1/4 of Nyquist (|m_j| <= 1), hence a 4x down-sampling. The same network runs as a rebuilt sample
file, an in-memory module, a TorchScript archive and an ONNX model.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from cbn_inspect import needs
from cbn_inspect.activations import open_runner
from cbn_inspect.activations.runners import CircularStack
from cbn_inspect.errors import AnalysisError
from cbn_inspect.interventions.torch_driver import TorchDriver
from cbn_inspect.synthetic import planted_linear_network

RANKS = {(0, 0): 2, (1, 0): 1, (0, 1): 1}
DEPTH = 4
OPTIONS = dict(layers=r"^(layers\.2|/layers\.2/Conv)$", max_inputs=24, batch_size=12, max_rings=4)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from safetensors.numpy import save_file

    state, meta = planted_linear_network(grid=(8, 8), channels=8, in_channels=4, depth=DEPTH, ranks=RANKS, seed=5,
                                         noise=1e-2)
    folder = tmp_path_factory.mktemp("needs")
    path = folder / "planted.safetensors"
    save_file(state, str(path), metadata=meta)
    module = CircularStack([torch.from_numpy(state[f"layers.{i}.weight"]) for i in range(DEPTH)], relu=False)
    script = folder / "planted_ts.pt"
    onnx_path = folder / "planted.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(module, torch.zeros(1, 4, 8, 8)).save(str(script))
        torch.onnx.export(module, (torch.zeros(2, 4, 8, 8),), str(onnx_path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return {"sample": path, "module": module, "torchscript": script, "onnx": onnx_path}


def _check(report, runner):
    assert report.runner == runner
    (layer,) = report.layers
    assert layer.grid == (8, 8) and layer.channels == 8 and layer.directions == 512
    # acceptance 1: the full band is the identity up to float32 round-off, frequency 0 alone is a large change
    assert layer.sanity_full.relative_l2 <= 1e-6
    assert layer.sanity_zero.relative_l2 > 0.3 and not layer.sanity_zero.holds
    # acceptance 2: the planted answers, exactly
    assert layer.needed_rank == 6 and dict(layer.needed_rank_type) == {0: 2, 1: 4}
    assert layer.needed_degree == 1 and layer.needed_band == 0.25 and layer.safe_factor == 4
    assert layer.safe_change.holds and layer.safe_change.part == "held-out" and layer.safe_change.relative_l2 < 0.01
    assert layer.rank.candidates > 100  # the 6 were found among every direction the decide inputs span
    ranks = {p.value: p.change.holds for p in layer.rank.points}
    assert ranks[6.0] and not ranks[max(v for v in ranks if v < 6)]  # one direction fewer does not hold
    assert layer.profile_rank == 6 and dict(layer.profile_type) == {0: 2, 1: 4}
    assert report.split.decide == 12 and report.split.held_out == 12
    assert report.joint[0].cuts == ((layer.name, 4),) and report.joint[0].change.holds
    assert report.joint[1].kind == "rank" and report.joint[1].cuts == ((layer.name, 6),) and report.joint[1].change.holds


def test_planted_answers_through_the_rebuilt_file(planted):
    _check(needs(planted["sample"], "noise", **OPTIONS), "sample")


def test_planted_answers_through_a_module_in_memory(planted):
    _check(needs(planted["module"], "noise", input_size=(4, 8, 8), **OPTIONS), "module")


def test_planted_answers_through_torchscript(planted):
    _check(needs(planted["torchscript"], "noise", trust_code=True, input_size=(8, 8), **OPTIONS), "torchscript")


def test_planted_answers_through_onnx(planted):
    pytest.importorskip("onnxruntime")
    _check(needs(planted["onnx"], "noise", **OPTIONS), "onnxruntime")


def test_timm_runner_interventions_are_real():
    report = needs("timm:test_resnet", "noise", input_size=(3, 32, 32), layers=r"^conv1\.0$", max_inputs=4,
                   batch_size=4, max_rings=2)
    (layer,) = report.layers
    assert report.runner == "timm" and report.output["kind"] == "class"
    assert layer.sanity_full.relative_l2 <= 1e-6 and layer.sanity_full.top1_agreement == 1.0
    assert layer.sanity_zero.relative_l2 > 0.1


class _Residual(torch.nn.Module):
    """x -> conv(x) + x: the probed tensor also feeds the shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.conv(h) + h


def test_every_consumer_of_the_probed_tensor_sees_the_filtered_copy():
    from cbn_inspect.activations import ModuleRunner
    from cbn_inspect.activations.inputs import ModelInput

    torch.manual_seed(0)
    model = _Residual().eval()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()  # the output is h itself: only the shortcut carries it
    driver = TorchDriver(ModuleRunner(model, ModelInput(channels=2, spatial=(6, 6)), side="input", device="cpu"))
    x = torch.randn(2, 2, 6, 6)
    driver.record(x)
    assert driver.order == ["stem", "conv"]
    (out,) = driver.run(x, {"conv": lambda t: torch.zeros_like(t)})
    assert out.abs().max() == 0  # the shortcut saw the zeroed tensor too


def test_an_intervention_that_does_not_take_place_is_an_error():
    """The hook cannot silently do nothing: a site the run never reaches raises."""
    from dataclasses import replace

    runner = open_runner("sample_checkpoints/cbn_demo_1d.safetensors")
    driver = TorchDriver(runner)
    x = torch.randn(2, 1, 64)
    driver.record(x)
    ref = driver.reference(x, lambda *_: None)
    changed = driver.run(x, {"layers.3": lambda t: t * 0})
    assert (changed[0] - ref[0]).abs().max() > 0.1
    driver.sites["layers.3"] = replace(driver.sites["layers.3"], call=driver.calls + 5)
    with pytest.raises(AnalysisError):
        driver.run(x, {"layers.3": lambda t: t * 0})
