"""The bottleneck call: planted networks (acceptance 2), random controls, and the rules on their own."""

from __future__ import annotations

import pytest
from safetensors.numpy import save_file

from cbn_inspect import Settings, inspect_source
from cbn_inspect.analysis import locate_bottleneck
from cbn_inspect.records import LayerMetrics
from cbn_inspect.synthetic import planted_network, random_network

from conftest import PLANTED_RANGE


def test_planted_bottleneck_is_found_exactly(planted_path):
    report = inspect_source(planted_path)
    b = report.bottleneck
    assert b.found, b.reason
    assert (b.start, b.end) == (f"layers.{PLANTED_RANGE[0]}", f"layers.{PLANTED_RANGE[1]}")
    assert b.rank == 8
    assert dict(b.degree_counts) == {0: 3, 1: 4, 2: 1}
    assert b.consistent_type and b.strength_label == "strong"
    assert b.gap_ratio > 100 and b.utilisation < 0.1
    assert {f for f, _ in b.frequencies} == {(0, 0), (1, 0), (3, 0), (0, 1), (0, 3), (0, 2)}


def test_random_initialisation_is_no_bottleneck(random_path):
    b = inspect_source(random_path).bottleneck
    assert not b.found
    assert b.start is None and b.rank is None and b.strength_label == "none"
    assert "capacity" in b.reason


@pytest.mark.parametrize("seed", range(4))
def test_random_controls_of_other_shapes_are_never_called(tmp_path, seed):
    grid = [(8, 8), (16,), (6, 6), (4, 4, 4)][seed]
    state, meta = random_network(grid=grid, channels=6, depth=9, seed=seed)
    path = tmp_path / "r.safetensors"
    save_file(state, str(path), metadata=meta)
    assert not inspect_source(path).bottleneck.found


def test_planted_1d_bottleneck(tmp_path):
    state, meta = planted_network(grid=(16,), channels=6, depth=8, planted=(2, 5),
                                  ranks={(0,): 2, (1,): 1, (3,): 2}, seed=5)
    path = tmp_path / "p1d.safetensors"
    save_file(state, str(path), metadata=meta)
    b = inspect_source(path).bottleneck
    assert b.found and (b.start, b.end) == ("layers.2", "layers.5")
    assert b.rank == 2 + 2 + 4 and dict(b.degree_counts) == {0: 2, 1: 2, 3: 4}


def test_relative_rule_and_gap_rule_agree_on_planted(planted_path):
    for rule in ("relative", "gap", "absolute"):
        from cbn_inspect.records import ToleranceRule

        value = {"relative": 0.1, "gap": 10.0, "absolute": 0.1}[rule]
        b = inspect_source(planted_path, Settings(tolerance=ToleranceRule(rule, value))).bottleneck
        assert b.found and b.rank == 8, rule


def _metrics(count, capacity=512, gap=100.0, degrees=None):
    degrees = degrees or {0: count}
    return LayerMetrics(mode_count=count, capacity=capacity, threshold=0.1, spectral_norm=1.0, stable_rank=1.0,
                        effective_rank=1.0, smallest_kept=1.0, largest_discarded=1 / gap, gap_ratio=gap,
                        degree_counts={"l1": degrees, "linf": degrees}, pair_degree_counts={"l1": degrees},
                        energy_by_degree={"l1": {}}, kept_frequencies=())


def test_first_and_last_layers_cannot_be_the_bottleneck():
    counts = [2, 40, 9, 9, 9, 40, 3]
    b = locate_bottleneck([f"l{i}" for i in range(7)], [_metrics(c) for c in counts], Settings())
    assert b.found and (b.start_index, b.end_index, b.rank) == (2, 4, 9)


def test_a_single_low_layer_is_not_a_plateau():
    counts = [40, 40, 9, 40, 40]
    b = locate_bottleneck([f"l{i}" for i in range(5)], [_metrics(c) for c in counts], Settings())
    assert not b.found and "persist" in b.reason


def test_weak_gap_is_reported_as_no_bottleneck():
    counts = [40, 20, 20, 20, 40]
    b = locate_bottleneck([f"l{i}" for i in range(5)], [_metrics(c, gap=1.8) for c in counts], Settings())
    assert not b.found and "1.8x" in b.reason and b.strength < 0.2


def test_unanalysed_layer_breaks_a_run():
    metrics = [_metrics(40), _metrics(9), None, _metrics(9), _metrics(9), _metrics(40)]
    b = locate_bottleneck([f"l{i}" for i in range(6)], metrics, Settings())
    assert b.found and (b.start_index, b.end_index) == (3, 4)


def test_too_few_layers():
    b = locate_bottleneck(["a", "b"], [_metrics(3), _metrics(3)], Settings())
    assert not b.found and "too few" in b.reason


def test_strength_grows_with_gap():
    names = [f"l{i}" for i in range(6)]
    weak = locate_bottleneck(names, [_metrics(40)] + [_metrics(9, gap=12)] * 4 + [_metrics(40)], Settings())
    strong = locate_bottleneck(names, [_metrics(40)] + [_metrics(9, gap=500)] * 4 + [_metrics(40)], Settings())
    assert weak.found and strong.found and weak.strength < strong.strength
    assert 0 <= weak.strength <= 1 and strong.strength_label == "strong"


def test_a_plateau_with_some_fuzzy_layers_is_a_weak_bottleneck():
    gaps = [12, 2.0, 15, 20, 4.0]
    metrics = [_metrics(40)] + [_metrics(9, gap=g) for g in gaps] + [_metrics(40)]
    b = locate_bottleneck([f"l{i}" for i in range(7)], metrics, Settings())
    assert b.found and not b.clean and b.strength_label == "weak"
    assert (b.start_index, b.end_index, b.clean_layers) == (1, 5, 3)
    assert b.gap_ratio == 2.0 and b.typical_gap_ratio == 12
    assert "clean" in b.reason and "3 of 5" in b.reason


def test_clean_bottleneck_needs_every_layer_above_min_gap():
    metrics = [_metrics(40)] + [_metrics(9, gap=g) for g in (12, 30, 11)] + [_metrics(40)]
    b = locate_bottleneck([f"l{i}" for i in range(5)], metrics, Settings())
    assert b.found and b.clean and b.clean_layers == 3 and b.strength_label in ("strong", "moderate")


def test_all_zero_layers_are_not_candidates():
    zero = _metrics(0, gap=1.0)
    zero = LayerMetrics(**{**zero.__dict__, "spectral_norm": 0.0, "gap_ratio": None, "smallest_kept": None})
    metrics = [_metrics(40), zero, _metrics(9), _metrics(9), zero, _metrics(40)]
    b = locate_bottleneck([f"l{i}" for i in range(6)], metrics, Settings())
    assert b.found and (b.start_index, b.end_index, b.rank) == (2, 3, 9)


def test_zero_layer_is_flagged(tmp_path):
    import torch
    from safetensors.torch import save_file

    state = {f"l{i}.weight": torch.randn(4, 4, 3, 3) for i in range(4)}
    state["l2.weight"].zero_()
    path = tmp_path / "z.safetensors"
    save_file(state, str(path))
    report = inspect_source(path)
    assert "zero" in report.layers[2].flags and report.layers[2].metrics.mode_count == 0
