"""The command line: report, JSON contract, options, layout (80 columns, NO_COLOR)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from cbn_inspect import __version__
from cbn_inspect.report import validate_report

from conftest import PLANTED_GRID, PLANTED_RANGE


def test_report_shows_layers_and_bottleneck(cli, planted_path):
    result = cli(planted_path)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Bottleneck: layers.3 → layers.8" in out
    assert "rank 8 = 3 @ deg 0, 4 @ deg 1, 1 @ deg 2" in out
    for i in range(12):
        assert f"layers.{i} " in out
    assert out.count("▸") == PLANTED_RANGE[1] - PLANTED_RANGE[0] + 1  # rows inside the bottleneck are marked


def test_report_fits_80_columns_and_honours_no_color(cli, planted_path):
    result = cli(planted_path, env={"COLUMNS": "80", "NO_COLOR": "1", "TERM": "xterm-256color"})
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "\x1b[" not in result.stdout


def test_report_in_colour_when_forced(cli, planted_path):
    result = cli(planted_path, env={"COLUMNS": "80", "FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert "\x1b[" in result.stdout


def test_no_bottleneck_on_random(cli, random_path):
    result = cli(random_path)
    assert result.exit_code == 0 and "No bottleneck" in result.stdout


def test_json_stdout_is_only_json_and_valid(cli, planted_path):
    result = cli(planted_path, "--json", "-")
    assert result.exit_code == 0
    data = json.loads(result.stdout)  # nothing but JSON on stdout
    validate_report(data)
    assert data["schema_version"] == "1.2"
    b = data["bottleneck"]
    assert b["found"] and (b["start"], b["end"], b["rank"]) == ("layers.3", "layers.8", 8)
    assert b["degree_counts"] == {"0": 3, "1": 4, "2": 1}
    assert b["type"] == "3 @ deg 0, 4 @ deg 1, 1 @ deg 2"
    layer = data["layers"][5]
    assert layer["mode_count"] == 8 and layer["grid"] == list(PLANTED_GRID) and layer["grid_source"] == "metadata"
    assert layer["degree_counts"] == {"0": 3, "1": 4, "2": 1}
    assert layer["pair_degree_counts"]["l1"] == {"0": 3, "1": 2, "2": 1}
    assert data["settings"]["tolerance"] == {"rule": "relative", "value": 0.1,
                                             "description": "sigma > 0.1 x the layer's largest"}
    assert "spectrum" not in layer


def test_json_spectra_cover_the_full_grid(cli, planted_path):
    data = cli.json(planted_path, "--spectra")
    validate_report(data)
    for layer in data["layers"]:
        freqs = [tuple(row["frequency"]) for row in layer["spectrum"]]
        assert sorted(freqs) == sorted(np.ndindex(*layer["spectrum_grid"]))
        total = sum(len(row["singular_values"]) for row in layer["spectrum"])
        assert total == layer["capacity"]
        kept = sum(v > layer["threshold"] for row in layer["spectrum"] for v in row["singular_values"])
        assert kept == layer["mode_count"]


def test_json_to_file_and_report_to_terminal(cli, planted_path, tmp_path):
    out = tmp_path / "r.json"
    result = cli(planted_path, "--json", out)
    assert result.exit_code == 0 and "Bottleneck" in result.stdout
    validate_report(json.loads(out.read_text()))


def test_layers_filter(cli, planted_path):
    data = cli.json(planted_path, "--layers", r"layers\.[2-5]$")
    assert [layer["name"] for layer in data["layers"]] == ["layers.2", "layers.3", "layers.4", "layers.5"]
    result = cli(planted_path, "--layers", "nothing-matches")
    assert result.exit_code == 4


@pytest.mark.parametrize("args", [["--tolerance", "gap"], ["--tolerance", "energy", "--tol-value", "0.999"],
                                  ["--tolerance", "absolute", "--tol-value", "0.5"], ["--degree", "linf"],
                                  ["--precision", "float64"], ["--no-fold-bn"], ["--threads", "1"]])
def test_options_keep_the_planted_call(cli, planted_path, args):
    data = cli.json(planted_path, *args)
    validate_report(data)
    assert data["bottleneck"]["found"] and data["bottleneck"]["rank"] == 8


def test_linf_degrees(cli, planted_path):
    data = cli.json(planted_path, "--degree", "linf")
    assert data["bottleneck"]["degree_counts"] == {"0": 3, "1": 4, "2": 1}  # (0,2) has l-inf degree 2 too
    assert data["settings"]["degree_metric"] == "linf"


def test_json_has_no_nan(cli, tmp_path):
    import torch
    from safetensors.torch import save_file

    state = {f"l{i}.weight": torch.randn(3, 3, 3, 3) for i in range(4)}
    state["l1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "n.safetensors"
    save_file(state, str(path))
    text = cli(path, "--json", "-").stdout

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads(text, parse_constant=refuse)
    validate_report(data)


def test_version_and_help(cli):
    assert cli("--version").stdout.strip() == f"cbn-inspect {__version__}"
    help_text = cli("report", "--help").stdout
    assert "Examples" in help_text and "--json" in help_text and "Exit codes" in help_text
    assert "report" in cli("--help").stdout


def test_console_script_runs(planted_path):
    """The installed entry point (python -m, as `cbn-inspect` does) routes SOURCE to `report`."""
    result = subprocess.run([sys.executable, "-m", "cbn_inspect", str(planted_path), "--json", "-"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bottleneck"]["found"]
    bad = subprocess.run([sys.executable, "-m", "cbn_inspect", "/nonexistent.pt"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_report_numbers_are_finite(cli, planted_path):
    data = cli.json(planted_path)
    for layer in data["layers"]:
        assert layer["route"] == "full"  # the default: every value, so every number is known
        for key in ("spectral_norm", "stable_rank", "effective_rank", "utilisation"):
            assert math.isfinite(layer[key])


def test_architecture_is_in_the_json(cli, tmp_path):
    data = cli.json("timm:resnet18", "--input-size", "64")
    validate_report(data)
    assert (data["source"]["architecture"], data["source"]["architecture_source"]) == ("timm:resnet18", "source")
    assert data["order_source"] == "trace" and data["layers"][0]["grid"] == [64, 64]
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    model = timm.create_model("resnet18", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    data = cli.json(path, "--arch", "timm:resnet18", "--input-size", "64")
    assert (data["source"]["architecture"], data["source"]["architecture_source"]) == ("timm:resnet18", "flag")


def test_memory_budget_changes_nothing_but_memory(cli, planted_path):
    default = json.loads(cli(planted_path, "--json", "-").stdout)
    tight = cli(planted_path, "--memory-budget", "1", "--threads", "2", "--json", "-")
    assert tight.exit_code == 0, tight.stderr
    tight = json.loads(tight.stdout)
    for key in ("bottleneck", "layers"):
        a, b = json.dumps(default[key], sort_keys=True), json.dumps(tight[key], sort_keys=True)
        assert a == b or key == "layers" and [x["metrics"] for x in default[key]] == [x["metrics"] for x in tight[key]]
    assert cli(planted_path, "--memory-budget", "0").exit_code == 2
