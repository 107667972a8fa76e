"""The shipped sample checkpoints: what the tool reports on each (issue 3), read from its JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbn_inspect.report import validate_report

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"


@pytest.fixture(scope="module")
def reports():
    from typer.testing import CliRunner
    import json

    from cbn_inspect.cli import app, route

    out = {}
    for name in ("cbn_demo", "cbn_demo_untrained", "cbn_demo_1d", "digits_cnn"):
        result = CliRunner().invoke(app, route([str(SAMPLES / f"{name}.safetensors"), "--json", "-"]))
        assert result.exit_code == 0, result.stderr
        out[name] = json.loads(result.stdout)
        validate_report(out[name])
    return out


def test_samples_are_small():
    assert sum(p.stat().st_size for p in SAMPLES.glob("*.safetensors")) < 5 * 2**20


def test_every_sample_declares_its_grids(reports):
    for data in reports.values():
        assert all(layer["grid_source"] == "metadata" for layer in data["layers"])
        assert data["order_source"] == "metadata"


def test_cbn_demo_weak_bottleneck_in_the_middle(reports):
    b = reports["cbn_demo"]["bottleneck"]
    assert b["found"] and (b["start"], b["end"]) == ("layers.1", "layers.10")
    assert b["rank"] == 10 and b["degree_counts"] == {"0": 2, "1": 4, "2": 4}
    assert not b["clean"] and b["strength_label"] == "weak" and b["clean_layers"] == 5
    assert b["utilisation"] < 0.01
    # the 8 non-constant frequencies the task uses, one channel each, and the constant one
    kept = {tuple(f["frequency"]): f["count"] for f in b["frequencies"]}
    assert {f: c for f, c in kept.items() if f != (0, 0)} == {
        (1, 0): 1, (15, 0): 1, (0, 1): 1, (0, 15): 1, (1, 1): 1, (15, 15): 1, (1, 15): 1, (15, 1): 1}
    layers = reports["cbn_demo"]["layers"]
    assert layers[0]["mode_count"] == 9 and layers[11]["mode_count"] == 25


def test_untrained_control_has_no_bottleneck(reports):
    data = reports["cbn_demo_untrained"]
    assert not data["bottleneck"]["found"]
    assert all(layer["utilisation"] > 0.8 for layer in data["layers"][1:11])


def test_cbn_demo_1d_clean_bottleneck(reports):
    b = reports["cbn_demo_1d"]["bottleneck"]
    assert b["found"] and b["clean"] and (b["start"], b["end"]) == ("layers.1", "layers.10")
    assert b["rank"] == 7 and b["degree_counts"] == {"0": 1, "1": 2, "2": 2, "3": 2}
    assert b["consistent_type"] and b["strength_label"] in ("strong", "moderate")


def test_digits_cnn_is_reported_honestly(reports):
    data = reports["digits_cnn"]
    assert len(data["layers"]) == 4 and all(layer["batchnorm"] for layer in data["layers"])
    assert not data["bottleneck"]["found"]
    assert [layer["mode_count"] for layer in data["layers"]] == [64, 509, 366, 191]
