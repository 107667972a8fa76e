"""Acceptance 2 (second half) and 3 of ``needs`` on the bundled samples (sample_checkpoints/SAMPLES.md).

The circular demos are trained on inputs holding a known set of frequencies (cbn_demo_1d: 0, 1, 2, 3 on a
64-grid; cbn_demo: 0, (1,0), (0,1), (1,1), (1,-1) on 16x16): a middle layer's input must keep the task's
highest degree (the low-pass keeping it holds, the one just below does not), and its needed directions are
the task's, one channel per complex frequency. The untrained control needs everything; the digits CNN gets
an answer with measured numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cbn_inspect import needs

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"


def _points(curve):
    return {round(p.value, 9): p.change for p in curve.points}


def test_cbn_demo_1d_middle_layer_needs_the_task_frequencies():
    report = needs(SAMPLES / "cbn_demo_1d.safetensors", "noise", layers=r"^layers\.5$", max_inputs=8, batch_size=4,
                   max_rings=4)
    (layer,) = report.layers
    assert layer.grid == (64,)
    ball = _points(layer.ball)
    assert layer.needed_degree == 3 and ball[3].holds and not ball[2].holds
    box = _points(layer.box)
    assert layer.needed_band == pytest.approx(3 / 32) and not box[round(2 / 32, 9)].holds
    assert layer.needed_rank == 7 and dict(layer.needed_rank_type) == {0: 1, 1: 2, 2: 2, 3: 2}
    assert layer.profile_rank == 7
    assert layer.safe_factor == 8 and layer.safe_change.holds  # 1/8 of Nyquist = |m| <= 4 keeps degree 3
    assert layer.sanity_full.relative_l2 <= 1e-6 and layer.sanity_zero.relative_l2 > 0.5


@pytest.mark.slow
def test_cbn_demo_middle_layer_needs_the_task_frequencies():
    report = needs(SAMPLES / "cbn_demo.safetensors", "noise", layers=r"^layers\.5$", max_inputs=16, batch_size=8,
                   max_rings=4)
    (layer,) = report.layers
    ball = _points(layer.ball)
    assert layer.needed_degree == 2 and ball[2].holds and not ball[1].holds  # (1, 1) is degree 2 in l1
    box = _points(layer.box)
    assert layer.needed_band == pytest.approx(1 / 8) and not box[0.0].holds  # |m_j| <= 1 on both axes
    assert layer.needed_rank == 9 and dict(layer.needed_rank_type) == {0: 1, 1: 4, 2: 4}
    assert layer.safe_factor == 8 and layer.safe_change.holds


def test_untrained_control_needs_everything():
    report = needs(SAMPLES / "cbn_demo_untrained.safetensors", "noise", layers=r"^layers\.5$", max_inputs=6,
                   batch_size=3, max_rings=2)
    (layer,) = report.layers
    assert layer.needed_band == 1.0 and layer.safe_factor == 1 and layer.everything_needed
    assert report.everything_needed
    assert report.summary[0].startswith("Everything is needed")
    assert report.joint[0].cuts == () and report.joint[0].change is None


def test_digits_cnn_gets_an_answer_with_numbers():
    report = needs(SAMPLES / "digits_cnn.safetensors", "noise", max_inputs=16, batch_size=8, max_rings=4)
    assert [layer.name for layer in report.layers] == ["features.0.conv", "features.2.conv"]  # where the grid changes
    assert report.output["kind"] == "class"
    for layer in report.layers:
        assert layer.needed_band is not None and layer.needed_rank is not None and layer.safe_factor >= 1
        assert layer.sanity_full.relative_l2 <= 1e-6 and layer.sanity_full.top1_agreement == 1.0
        assert layer.sanity_zero.relative_l2 > 0.1
        assert layer.box.held_out is not None and layer.box.held_out.part == "held-out"
    assert report.cost.forward_passes > 0 and report.cost.forward_passes <= report.cost.estimated
    assert report.summary
