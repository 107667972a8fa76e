"""``--activations`` end to end: the bundled demo, timm:resnet18 grids, errors and exit codes, audit, schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cbn_inspect import inspect_source, report_to_dict
from cbn_inspect.records import ActivationSettings
from cbn_inspect.report.json_report import validate_report

DEMO = "sample_checkpoints/cbn_demo.safetensors"


def test_demo_json_has_both_bottlenecks_and_validates(cli):
    data = cli.json(DEMO, "--activations", "noise", "--center", "--max-inputs", "32", "--spectra")
    validate_report(data)
    assert data["schema_version"] == "1.2"
    acts = data["activations"]
    assert acts["runner"] == "sample"
    assert acts["inputs"]["kind"] == "noise" and acts["inputs"]["count"] == 32
    assert acts["inputs"]["centering"]["frequency_0_mean_removed"] is True
    assert acts["inputs"]["preprocessing"]["input_shape"] == [1, 16, 16]
    assert [layer["name"] for layer in acts["layers"]] == [layer["name"] for layer in data["layers"]]
    layer = acts["layers"][3]
    assert layer["grid"] == [16, 16] and layer["channels"] == 8 and layer["capacity"] == 256 * 8
    assert len(layer["spectrum"]) == 256 and len(layer["spectrum"][0]["singular_values"]) == 8
    # the same bottleneck fields as the weights', from the same serialiser
    # (``basis``, what the weight call rests on, belongs to the weight side only)
    assert list(acts["bottleneck"]) == [k for k in data["bottleneck"] if k != "basis"]
    # measured: the activations keep the task's 1 @ deg 0, 4 @ deg 1, 4 @ deg 2 through the middle
    assert acts["bottleneck"]["found"] and acts["bottleneck"]["degree_counts"] == {"0": 1, "1": 4, "2": 4}
    assert data["bottleneck"]["found"] and data["bottleneck"]["rank"] == 10


def test_without_activations_the_field_is_null(cli):
    data = cli.json(DEMO)
    validate_report(data)
    assert data["activations"] is None


def test_terminal_shows_weights_and_activations_side_by_side(cli):
    result = cli(DEMO, "--activations", "noise", "--max-inputs", "16")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "W modes" in out and "A modes" in out and "ν/νN" in out
    assert "CBN summary · weights" in out and "CBN summary · activations" in out
    assert "16 inputs (noise (seed 0), 1×16×16)" in " ".join(out.split())


def test_source_without_an_architecture_is_exit_11(cli, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bare.safetensors"
    save_file({"a.weight": torch.randn(4, 3, 3, 3), "b.weight": torch.randn(4, 4, 3, 3)}, str(path))
    result = cli(path, "--activations", "noise")
    assert result.exit_code == 11
    line = result.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("cbn-inspect: error:")
    assert "--arch" in line and "ONNX" in line and "TorchScript" in line


def test_torchscript_needs_trust_code(cli, tmp_path):
    path = tmp_path / "net.pt"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))).save(str(path))
    refused = cli(path, "--activations", "noise", "--input-size", "12")
    assert refused.exit_code == 5 and "--trust-code" in refused.stderr
    data = cli.json(path, "--activations", "noise", "--input-size", "12", "--trust-code", "--max-inputs", "8")
    assert data["activations"]["runner"] == "torchscript"
    assert [layer["grid"] for layer in data["activations"]["layers"]] == [[12, 12], [10, 10]]


def test_options_without_activations_are_usage_errors(cli):
    result = cli(DEMO, "--center")
    assert result.exit_code == 2 and "--activations" in result.stderr


def test_folder_with_a_non_image_file_is_noted(cli, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((20, 20), 128, dtype=np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20)).save(tmp_path / "ramp.jpg")
    (tmp_path / "labels.csv").write_text("a,b\n")
    data = cli.json(DEMO, "--activations", str(tmp_path))
    inputs = data["activations"]["inputs"]
    assert inputs["kind"] == "folder" and inputs["count"] == 2
    assert any("labels.csv" in note for note in inputs["notes"])


def test_resnet18_grids_match_the_real_feature_maps():
    """Every layer's grid and channels are those a forward hook sees on the same model and input size."""
    import timm

    report = inspect_source("timm:resnet18", input_size="64",
                            activations=ActivationSettings("noise", max_inputs=3, batch_size=3))
    acts = report.activations
    validate_report(report_to_dict(report))
    model = timm.create_model("resnet18", pretrained=False).eval()
    seen: dict[str, tuple[int, ...]] = {}

    def hook(name):
        def record(module, args):
            seen.setdefault(name, tuple(args[0].shape[1:]))
        return record

    hooks = [m.register_forward_pre_hook(hook(name)) for name, m in model.named_modules()
             if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 64))
    for handle in hooks:
        handle.remove()
    assert [layer.name for layer in acts.layers] == list(seen)
    for layer in acts.layers:
        assert (layer.channels, *layer.grid) == seen[layer.name]
    assert {layer.name for layer in acts.layers} == {r.layer.name for r in report.layers}
    assert acts.layers[0].grid == (64, 64) and acts.layers[-1].grid == (2, 2)
    # a downsample reads the block's input: profiled once, reported for both
    shared = {layer.name: layer.shared_with for layer in acts.layers if layer.shared_with}
    assert shared == {f"layer{i}.0.downsample.0": f"layer{i}.0.conv1" for i in (2, 3, 4)}
    assert acts.inputs["preprocessing"]["config_source"] == "timm pretrained_cfg"


def test_audit_with_activations(cli, tmp_path):
    out = tmp_path / "audit.jsonl"
    result = cli("audit", DEMO, "--out", out, "--activations", "noise", "--max-inputs", "8", "--jobs", "1", "--quiet")
    assert result.exit_code == 0, result.stderr
    row = json.loads(out.read_text().splitlines()[0])
    assert row["status"] == "ok"
    assert row["activations"]["inputs"]["count"] == 8 and row["activations"]["bottleneck"]["found"] in (True, False)


def test_golden_side_by_side(tmp_path, golden):
    """Weights and activations of the planted linear network, on an 80-column console."""
    import dataclasses
    import io

    from rich.console import Console
    from safetensors.numpy import save_file

    from cbn_inspect.report import TerminalReport
    from cbn_inspect.synthetic import planted_linear_network

    state, meta = planted_linear_network(depth=5, seed=3, noise=1e-3)  # a floor: gaps independent of round-off
    path = tmp_path / "planted_linear.safetensors"
    save_file(state, str(path), metadata=meta)
    report = inspect_source(path, activations=ActivationSettings("noise", max_inputs=24, batch_size=8))
    report = dataclasses.replace(report, source=dataclasses.replace(report.source, path="planted_linear.safetensors"))
    console = Console(file=io.StringIO(), width=80, color_system=None, legacy_windows=False)
    console.print(TerminalReport(report))
    golden("planted_linear_side_by_side.txt", console.file.getvalue())
