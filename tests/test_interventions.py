"""The pure side of ``needs`` (cbn_inspect.analysis.interventions): masks, projections, metrics, searches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cbn_inspect.activations.gram import GramAccumulator
from cbn_inspect.analysis import interventions as iv
from cbn_inspect.interventions.records import OutputChange


def _change(value: float, tol: float = 0.05) -> OutputChange:
    return OutputChange(relative_l2=value, inputs=1, part="decide", holds=value <= tol)


@pytest.mark.parametrize("grid", [(8,), (7,), (8, 6), (5, 4), (4, 4, 6)])
def test_full_band_is_the_identity_and_band_zero_the_mean(grid):
    x = torch.randn(3, 2, *grid)
    levels = iv.box_levels(grid)
    assert levels[0] == 0.0 and levels[-1] <= 1.0
    assert torch.equal(iv.apply_mask(x, iv.box_mask(grid, levels[-1])), x)
    mean = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
    assert torch.allclose(iv.apply_mask(x, iv.box_mask(grid, 0.0)), mean.expand_as(x), atol=1e-6)
    assert torch.equal(iv.apply_mask(x, iv.ball_mask(grid, iv.max_degree(grid))), x)


def test_box_band_is_the_band_of_a_downsampling():
    """On 16x16 the box f = 1/4 keeps |m_j| <= 2 on both axes: 5 x 5 complex frequencies."""
    mask = iv.box_mask((16, 16), 0.25)
    assert iv.complex_count((16, 16), mask) == 25
    assert iv.complex_count((16, 16), iv.ball_mask((16, 16), 1)) == 5  # 0 and the 4 degree-1 frequencies
    assert iv.complex_count((16, 16), ~iv.ring_mask((16, 16), 2, 2)) == 8
    assert sum(iv.complex_count((8,), ~iv.ring_mask((8,), d, d)) for d in range(5)) == 8


def test_filtered_maps_keep_exactly_the_band():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    y = iv.apply_mask(x, iv.box_mask((16, 16), 0.25))
    spec = torch.fft.fftn(y, dim=(2, 3)).abs()
    m = np.minimum(np.arange(16), 16 - np.arange(16))
    outside = torch.from_numpy((m[:, None] > 2) | (m[None, :] > 2))
    assert spec[..., outside].max() < 1e-10
    inside = torch.fft.fftn(x, dim=(2, 3))[..., ~outside] - torch.fft.fftn(y, dim=(2, 3))[..., ~outside]
    assert inside.abs().max() < 1e-10


def test_rank_truncation_projects_onto_the_gram_directions_and_stays_real():
    torch.manual_seed(0)
    grid = (6, 5)
    x = torch.randn(10, 4, *grid, dtype=torch.float64)
    acc = GramAccumulator(4, grid)
    acc.add(x)
    d = iv.directions_from_gram(acc.gram, grid)
    assert d.total == 4 * 30  # 10 inputs > 4 channels: every direction of every frequency
    assert torch.allclose(d.project(x, len(d.units)), x, atol=1e-10)
    assert d.project(x, 0).abs().max() == 0
    # more kept units never lose energy; the projection is idempotent
    energies = [float((d.project(x, n) ** 2).sum()) for n in range(0, len(d.units) + 1, 7)]
    assert all(a <= b + 1e-9 for a, b in zip(energies, energies[1:]))
    p = d.project(x, 11)
    assert torch.allclose(d.project(p, 11), p, atol=1e-10)
    assert d.rank_of(len(d.units)) == 120 and sum(d.type_of(len(d.units)).values()) == 120


def test_rank_units_choose_conjugate_pairs_together():
    """A feature map living on frequency (1, 0) of an 8x8 grid, one channel direction: one unit, rank 2."""
    grid = (8, 8)
    p = torch.arange(8, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * p / 8)[:, None].expand(8, 8)
    direction = torch.tensor([1.0, 2.0, 0.0])
    x = torch.stack([torch.randn(1, dtype=torch.float64) * direction[:, None, None] * wave
                     + torch.randn(1, dtype=torch.float64) * direction[:, None, None] * torch.sin(2 * math.pi * p / 8)[:, None]
                     for _ in range(5)])
    acc = GramAccumulator(3, grid)
    acc.add(x)
    d = iv.directions_from_gram(acc.gram, grid)
    assert len(d.units) == 1 and d.rank_of(1) == 2 and d.type_of(1) == {1: 2}
    assert torch.allclose(d.project(x, 1), x, atol=1e-9)


def test_change_meter_metrics():
    ref = [torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])]
    new = [torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 2.0]])]
    meter = iv.ChangeMeter(iv.output_kind(ref))
    meter.add(ref, new)
    change = meter.result("held-out", 0.05, 0.99)
    assert change.relative_l2 == pytest.approx(2 / math.sqrt(5))
    assert change.top1_agreement == 0.5 and change.kl > 0 and not change.holds
    dense = [torch.randn(2, 4, 3, 3)]
    meter = iv.ChangeMeter(iv.output_kind(dense))
    meter.add(dense, [dense[0].clone()])
    same = meter.result("decide", 0.05, 0.99)
    assert same.relative_l2 == 0 and same.argmax_agreement == 1.0 and same.holds
    assert iv.output_kind([torch.randn(2, 1)]) == "other"


def test_bisection_finds_the_smallest_holding_band():
    values = [0.9, 0.8, 0.5, 0.2, 0.04, 0.03, 0.01, 0.0]
    calls = []
    found = iv.find_needed(len(values), lambda i: calls.append(i) or _change(values[i]))
    assert found.needed == 4 and found.search == "bisection" and found.monotone
    assert len(calls) < len(values)
    measured = dict(found.points)
    assert not measured[3].holds and measured[4].holds  # the band just below the needed one was measured


def test_a_non_monotone_curve_is_scanned_and_said():
    values = [0.9, 0.01, 0.5, 0.4, 0.02, 0.0]  # band 1 holds, bands 2-3 do not: a frequency shortcut
    # bisection alone never measures band 1 here; a seed (the box search seeds the down-sampling bands) does
    assert iv.find_needed(len(values), lambda i: _change(values[i])).monotone
    found = iv.find_needed(len(values), lambda i: _change(values[i]), seeds=[1, 3])
    assert not found.monotone and found.search == "scan" and found.needed == 4
    assert any("not monotone" in note for note in found.notes)


def test_no_band_holds():
    found = iv.find_needed(3, lambda i: _change(1.0))
    assert found.needed is None


def test_safe_factor_and_ring_groups():
    assert iv.safe_factor((16, 16), 0.125) == 8
    assert iv.safe_factor((16, 16), 0.2) == 4
    assert iv.safe_factor((12, 12), 0.3) == 3
    assert iv.safe_factor((7,), 0.1) == 7
    assert iv.safe_factor((1, 96), 0.25) == 4 and iv.safe_factor((3, 96), 0.3) == 3  # length-1 axes are left alone
    assert iv.safe_factor((14, 14), 0.25) == 2 or iv.safe_factor((14, 14), 0.25) == 4
    assert iv.safe_factor((1, 1), 0.0) == 1
    assert iv.safe_factor((16, 16), 1.0) == 1 and iv.safe_factor((16, 16), None) == 1
    assert iv.ring_groups(5, 32) == [(d, d) for d in range(6)]
    groups = iv.ring_groups(56, 32)
    assert groups[0][0] == 0 and groups[-1][1] == 56 and len(groups) <= 32
    assert all(b[0] == a[1] + 1 for a, b in zip(groups, groups[1:]))
    assert iv.format_type({0: 3, 1: 4, 2: 1}) == "3 @ deg 0, 4 @ deg 1, 1 @ deg 2"


def test_a_probe_whose_full_band_moves_the_outputs_gives_no_conclusion():
    from cbn_inspect.interventions.records import LayerNeeds, NeedCurve, NeedsSettings
    from cbn_inspect.interventions.summary import summarise
    from cbn_inspect.records import ActivationSettings

    def layer(full: float) -> LayerNeeds:
        curve = NeedCurve("box", (), None, 3, "bisection")
        return LayerNeeds(name="conv", grid=(8, 8), channels=4, reason="grid-change", box=curve, ball=curve,
                          rank=curve, rings=(), needed_band=None, needed_degree=None, needed_rank=None,
                          needed_rank_type={}, profile_rank=3, profile_type={}, directions=256, safe_factor=1,
                          safe_change=None, sanity_full=_change(full), sanity_zero=_change(0.9))

    settings = NeedsSettings(ActivationSettings("noise"))
    broken = summarise([layer(0.5)], (), settings, "other")
    assert broken[0].startswith("No conclusion at conv") and not any("Everything is needed" in s for s in broken)
    assert not layer(0.5).everything_needed and not layer(0.5).reliable
    fine = summarise([layer(1e-7)], (), settings, "other")
    assert fine[0].startswith("Everything is needed") and layer(1e-7).everything_needed


def test_default_probes_where_the_grid_changes_skipping_1x1_maps():
    from cbn_inspect.interventions.records import NeedsSettings
    from cbn_inspect.interventions.run import _choose
    from cbn_inspect.records import ActivationSettings

    order = ["stem", "a", "se.fc1", "se.fc2", "b", "down", "c"]
    shapes = {"stem": (3, 32, 32), "a": (8, 16, 16), "se.fc1": (8, 1, 1), "se.fc2": (4, 1, 1), "b": (8, 16, 16),
              "down": (8, 16, 16), "c": (16, 8, 8)}
    aliases = {"down.shortcut": "down"}
    base = NeedsSettings(ActivationSettings("noise"))
    assert _choose(order, aliases, shapes, base, []) == [("stem", "grid-change"), ("a", "grid-change"),
                                                         ("c", "grid-change")]
    with_bottleneck = _choose(order, aliases, shapes, base, ["b", "down.shortcut", "se.fc1"])
    assert with_bottleneck == [("stem", "grid-change"), ("a", "grid-change"), ("b", "bottleneck"),
                               ("down", "bottleneck"), ("c", "grid-change")]
    from dataclasses import replace

    assert len(_choose(order, aliases, shapes, replace(base, all_layers=True), [])) == len(order)
    assert _choose(order, aliases, shapes, replace(base, layer_filter=r"shortcut"), []) == [("down", "layers")]


def test_a_curve_that_rises_again_is_not_called_monotone():
    values = [0.9, 0.5, 0.04, 0.001, 0.03, 0.0]  # every hold/fail call agrees, but the change rises at band 4
    found = iv.find_needed(len(values), lambda i: _change(values[i]), seeds=[3, 4])
    assert not found.monotone and found.search == "scan" and found.needed == 2
    assert any("rises again" in note for note in found.notes)


def test_kl_is_never_negative():
    probs = [torch.softmax(torch.randn(64, 10, dtype=torch.float64), 1).float()]
    meter = iv.ChangeMeter(iv.output_kind(probs))
    meter.add(probs, [probs[0] * (1 + 1e-7)])  # equal distributions up to round-off
    assert meter.result("decide", 0.05, 0.99).kl >= 0.0
