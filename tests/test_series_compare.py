"""``cbn-inspect compare A B``: nothing changes against itself; untrained -> trained demo changes every middle
layer; layers are paired by name and the unpaired ones named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cbn_inspect.report.series_json import comparison_to_dict, validate_series
from cbn_inspect.series import compare_reports

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_checkpoints"
MIDDLE = [f"layers.{i}" for i in range(1, 11)]


def words(text: str) -> str:
    """The terminal text with panel borders and line wrapping undone."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """JSON reports of the trained and untrained 2-D demo, written once by ``cbn-inspect X --json FILE``."""
    from typer.testing import CliRunner

    from cbn_inspect.cli import app, route

    tmp = tmp_path_factory.mktemp("compare")
    out = {}
    for name in ("cbn_demo", "cbn_demo_untrained"):
        out[name] = tmp / f"{name}.json"
        result = CliRunner().invoke(app, route([str(SAMPLES / f"{name}.safetensors"), "--json", str(out[name])]))
        assert result.exit_code == 0, result.output
    return out


def test_a_checkpoint_against_itself_reports_no_change(tmp_path, cli):
    copy = tmp_path / "copy.safetensors"
    shutil.copy(SAMPLES / "cbn_demo_1d.safetensors", copy)  # analysed twice, from two files
    result = cli("compare", str(SAMPLES / "cbn_demo_1d.safetensors"), str(copy), "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    validate_series(data)
    assert data["unchanged"] is True
    assert data["changed_layers"] == [] and data["bottleneck_changed"] == []
    assert data["only_a"] == data["only_b"] == []
    assert all(layer["changed"] == [] and layer["mode_count_change"] == 0 for layer in data["layers"])
    text = words(cli("compare", str(SAMPLES / "cbn_demo_1d.safetensors"), str(copy)).stdout)
    assert "no change: every layer's mode count, kept degrees, spectral norm and gap agree" in text


def test_untrained_to_trained_changes_every_middle_layer(reports, cli):
    result = cli("compare", str(reports["cbn_demo_untrained"]), str(reports["cbn_demo"]), "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    validate_series(data)
    assert data["unchanged"] is False
    layers = {layer["name"]: layer for layer in data["layers"]}
    for name in MIDDLE:
        change = layers[name]
        assert {"mode_count", "degree_counts", "spectral_norm", "gap_ratio"} <= set(change["changed"]), name
        assert change["a"]["mode_count"] > 1700 and change["b"]["mode_count"] <= 12
        assert change["mode_count_change"] == change["b"]["mode_count"] - change["a"]["mode_count"]
    assert set(MIDDLE) <= set(data["changed_layers"])
    assert data["a"]["bottleneck"]["found"] is False
    assert (data["b"]["bottleneck"]["start"], data["b"]["bottleneck"]["end"]) == ("layers.1", "layers.10")
    assert "found" in data["bottleneck_changed"]
    text = words(cli("compare", str(reports["cbn_demo_untrained"]), str(reports["cbn_demo"])).stdout)
    assert "12 of 12 paired layers changed" in text
    assert "A: no bottleneck" in text and "B: layers.1 → layers.10, rank 10" in text
    assert "1767 → 10" in text  # layers.1


def test_the_same_from_checkpoints_directly(cli):
    data = json.loads(cli("compare", str(SAMPLES / "cbn_demo_untrained.safetensors"),
                          str(SAMPLES / "cbn_demo.safetensors"), "--json", "-").stdout)
    assert set(MIDDLE) <= set(data["changed_layers"])


def test_layers_are_paired_by_name(reports):
    a = json.loads(reports["cbn_demo"].read_text())
    b = json.loads(reports["cbn_demo"].read_text())
    b["layers"] = [dict(layer, name="renamed.0") if layer["name"] == "layers.0" else layer
                   for layer in reversed(b["layers"])]  # order does not matter, names do
    comparison = compare_reports(a, b)
    assert comparison.only_a == ("layers.0",) and comparison.only_b == ("renamed.0",)
    assert comparison.changed_layers == ()
    data = comparison_to_dict(comparison)
    validate_series(data)
    entries = {layer["name"]: layer for layer in data["layers"]}
    assert entries["layers.0"]["in"] == "a" and entries["renamed.0"]["in"] == "b"
    assert data["unchanged"] is False


def test_rtol_decides_what_counts_as_a_change(reports):
    a = json.loads(reports["cbn_demo"].read_text())
    b = json.loads(reports["cbn_demo"].read_text())
    b["layers"][3]["spectral_norm"] *= 1 + 1e-4
    assert [c.name for c in compare_reports(a, b).changed_layers] == ["layers.3"]
    assert compare_reports(a, b, rtol=1e-3).unchanged


def test_a_json_file_that_is_not_a_report(tmp_path, cli):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    result = cli("compare", str(bad), str(bad))
    assert result.exit_code == 3
    assert "not a cbn-inspect report" in result.stderr


def test_readme_shows_what_compare_prints(cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    command = ("cbn-inspect compare sample_checkpoints/cbn_demo_untrained.safetensors "
               "sample_checkpoints/cbn_demo.safetensors")
    block = (ROOT / "README.md").read_text().split(f"$ {command}\n", 1)[1].split("```", 1)[0]
    result = cli(*command.split()[1:])
    assert result.exit_code == 0, result.output
    assert block.splitlines() == [line.rstrip() for line in result.stdout.splitlines()]
