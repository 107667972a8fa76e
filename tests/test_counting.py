"""Tolerance rules, degree classes and soft measures on spectra with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from cbn_inspect.analysis import count_modes, frequency_degrees, representative_frequencies
from cbn_inspect.records import Spectrum, ToleranceRule


def spectrum_from(grid, fill):
    """A spectrum on ``grid`` whose row for frequency f is ``fill(f)`` (a descending list)."""
    freqs, mult = representative_frequencies(grid)
    values = np.array([fill(tuple(int(x) for x in f)) for f in freqs], dtype=np.float64)
    return Spectrum(grid=grid, frequencies=freqs, multiplicity=mult, values=values)


def planted(f):
    # 3 values of 1 at frequency 0, 1 value at the degree-1 frequencies, tiny elsewhere
    if f == (0, 0):
        return [1.0, 1.0, 1.0, 1e-4]
    if sorted(f) in ([0, 1], [0, 7]):
        return [1.0, 1e-4, 1e-4, 1e-4]
    return [1e-4] * 4


GRID = (8, 8)


@pytest.mark.parametrize("rule", [ToleranceRule("relative", 0.1), ToleranceRule("absolute", 0.1),
                                  ToleranceRule("gap"), ToleranceRule("energy", 0.99)])
def test_every_rule_recovers_planted_counts(rule):
    metrics = count_modes(spectrum_from(GRID, planted), rule)
    assert metrics.mode_count == 7
    assert metrics.degree_counts["l1"] == {0: 3, 1: 4}
    assert metrics.degree_counts["linf"] == {0: 3, 1: 4}
    assert metrics.pair_degree_counts["l1"] == {0: 3, 1: 2}  # conjugate pairs merged
    assert metrics.gap_ratio == pytest.approx(1e4)


def test_capacity_utilisation_and_soft_measures():
    metrics = count_modes(spectrum_from(GRID, planted), ToleranceRule())
    assert metrics.capacity == 64 * 4
    assert metrics.utilisation == pytest.approx(7 / 256)
    assert metrics.spectral_norm == 1.0
    assert metrics.stable_rank == pytest.approx(7 + 249 * 1e-8)
    assert 7 <= metrics.effective_rank < 8
    assert sum(metrics.energy_by_degree["l1"].values()) == pytest.approx(1.0)
    assert dict(metrics.kept_on_full_grid()) == {(0, 0): 3, (0, 1): 1, (0, 7): 1, (1, 0): 1, (7, 0): 1}


def test_degrees_l1_and_linf():
    freqs = np.array([[0, 0], [1, 0], [7, 7], [4, 3], [2, 6]])
    assert frequency_degrees(freqs, GRID, "l1").tolist() == [0, 1, 2, 7, 4]
    assert frequency_degrees(freqs, GRID, "linf").tolist() == [0, 1, 1, 4, 2]


def test_l1_has_four_degree_one_frequencies_in_2d():
    freqs = np.array(list(np.ndindex(*GRID)))
    assert int((frequency_degrees(freqs, GRID, "l1") == 1).sum()) == 4
    assert int((frequency_degrees(freqs, GRID, "linf") == 1).sum()) == 8


def test_gap_rule_picks_largest_log_gap():
    spec = spectrum_from((4,), lambda f: [10.0, 5.0, 0.01] if f == (0,) else [4.0, 2.0, 0.02])
    metrics = count_modes(spec, ToleranceRule("gap", 10.0))
    assert metrics.mode_count == 2 + 2 * 2 + 2  # frequencies 0, +-1, 2: two values each above the gap
    assert metrics.threshold == pytest.approx(0.02)


def test_energy_rule_counts_fewest_modes():
    spec = spectrum_from((1,), lambda f: [3.0, 1.0, 1.0])
    assert count_modes(spec, ToleranceRule("energy", 0.8)).mode_count == 1  # 9 of 11 > 0.8
    assert count_modes(spec, ToleranceRule("energy", 0.9)).mode_count == 3  # ties kept together


def test_all_zero_layer_keeps_nothing():
    metrics = count_modes(spectrum_from((4, 4), lambda f: [0.0, 0.0]), ToleranceRule())
    assert metrics.mode_count == 0 and metrics.spectral_norm == 0 and metrics.gap_ratio is None


def test_nothing_discarded_has_no_gap():
    metrics = count_modes(spectrum_from((3,), lambda f: [1.0, 0.9]), ToleranceRule())
    assert metrics.mode_count == 6 and metrics.largest_discarded is None and metrics.gap_ratio is None


def test_gap_rule_without_a_real_gap_keeps_everything():
    spec = spectrum_from((4,), lambda f: [3.0, 2.0, 1.0])
    metrics = count_modes(spec, ToleranceRule("gap", 10.0))
    assert metrics.mode_count == metrics.capacity == 12


def test_profile_equals_sampling_the_repeated_sorted_values():
    from cbn_inspect.analysis.counting import PROFILE_POINTS, _profile

    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        values = rng.random(n).round(2)
        weights = rng.integers(1, 3, n).astype(np.float64)
        ordered = np.sort(np.repeat(values, weights.astype(int)))[::-1]
        picks = np.linspace(0, len(ordered) - 1, PROFILE_POINTS).round().astype(int)
        assert _profile(values, weights) == tuple(float(ordered[i]) for i in picks)
    assert _profile(np.zeros(0), np.zeros(0)) == ()
