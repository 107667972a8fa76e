"""``cbn-inspect needs``: the table and summary, the JSON and its schema, and acceptance 6 (bad input: one line,
a documented exit code, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cbn_inspect.report.needs_json import validate_needs

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
DEMO_1D = str(SAMPLES / "cbn_demo_1d.safetensors")
FAST = ("--activations", "noise", "--max-inputs", "4", "--batch-size", "2", "--layers", r"^layers\.(5|6)$",
        "--max-rings", "3", "--quiet")


def test_terminal_table_summary_and_json_file(cli, tmp_path):
    out = tmp_path / "needs.json"
    result = cli("needs", DEMO_1D, *FAST, "--json", str(out), env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for word in ("layers.5", "layers.6", "band", "rank/profile", "down", "its change", "rank change", "Joint check",
                 "frequency-channel directions", "forward passes"):
        assert word in text
    data = json.loads(out.read_text())
    validate_needs(data)
    assert data["schema_version"] == "1.2" and data["kind"] == "needs"
    needs = data["needs"]
    assert [layer["name"] for layer in needs["layers"]] == ["layers.5", "layers.6"]
    middle = needs["layers"][1]
    assert middle["needed_degree"] == 3 and middle["needed_rank"] == 7
    assert middle["needed_rank_type"] == {"0": 1, "1": 2, "2": 2, "3": 2}
    assert middle["sanity"]["full_band"]["relative_l2"] <= 1e-6
    assert needs["split"] == {"rule": needs["split"]["rule"], "decide": 2, "held_out": 2}
    assert needs["settings"]["max_change"] == 0.05 and needs["settings"]["min_agreement"] == 0.99
    assert needs["cost"]["forward_passes"] > 0 and needs["cost"]["cpu_seconds"] > 0


def test_json_on_stdout_only_and_the_schema_rejects_a_broken_document(cli):
    import jsonschema

    result = cli("needs", DEMO_1D, *FAST, "--layers", r"^layers\.6$", "--json", "-")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    validate_needs(data)
    data["needs"]["layers"][0]["needed_band"] = 2.0
    with pytest.raises(jsonschema.ValidationError):
        validate_needs(data)


# --- acceptance 6: bad input ---------------------------------------------------------------------------------

def _refused(cli, tmp_path, *args, code):
    out = tmp_path / "out.json"
    result = cli("needs", *args, "--json", str(out))
    assert result.exit_code == code, (result.exit_code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("cbn-inspect: error:"), result.stderr
    assert "Traceback" not in result.stderr and not out.exists()  # nothing written half-way
    return lines[0]


def test_a_model_that_cannot_be_run(cli, tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "bare.safetensors"
    save_file({"conv.weight": np.zeros((4, 3, 3, 3), np.float32)}, str(path))
    line = _refused(cli, tmp_path, str(path), "--activations", "noise", code=11)
    assert "architecture" in line


def test_inputs_of_the_wrong_shape(cli, tmp_path):
    path = tmp_path / "wrong.npy"
    np.save(path, np.zeros((4, 3, 64), np.float32))  # the 1-D demo takes 1 channel
    line = _refused(cli, tmp_path, DEMO_1D, "--activations", str(path), code=2)
    assert "shape" in line


def test_zero_inputs(cli, tmp_path):
    path = tmp_path / "empty.npy"
    np.save(path, np.zeros((0, 1, 64), np.float32))
    _refused(cli, tmp_path, DEMO_1D, "--activations", str(path), code=2)


def test_one_input_cannot_be_split(cli, tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.zeros((1, 1, 64), np.float32))
    line = _refused(cli, tmp_path, DEMO_1D, "--activations", str(path), code=2)
    assert "at least 2" in line


@pytest.mark.parametrize("flags", [("--max-change", "-0.1"), ("--max-change", "0"), ("--max-change", "nan"),
                                   ("--min-agreement", "1.5"), ("--min-agreement", "-1"), ("--held-out-every", "1"),
                                   ("--max-forward-passes", "0"), ("--layers", "(")])
def test_tolerance_out_of_range(cli, tmp_path, flags):
    _refused(cli, tmp_path, DEMO_1D, "--activations", "noise", *flags, code=2)


def test_more_forward_passes_than_allowed(cli, tmp_path):
    line = _refused(cli, tmp_path, DEMO_1D, "--activations", "noise", "--max-inputs", "4",
                    "--max-forward-passes", "10", code=7)
    assert "--max-forward-passes 10" in line


def test_trust_code_needed_for_torchscript(cli, tmp_path):
    import warnings

    import torch

    path = tmp_path / "tiny_ts.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(torch.nn.Conv2d(1, 2, 3), torch.zeros(1, 1, 8, 8)).save(str(path))
    _refused(cli, tmp_path, str(path), "--activations", "noise", "--input-size", "8", code=5)


def test_needs_help_lists_the_options(cli):
    result = cli("needs", "--help")
    assert result.exit_code == 0
    for flag in ("--max-change", "--min-agreement", "--all-layers", "--max-forward-passes", "--device", "--json"):
        assert flag in result.stdout
