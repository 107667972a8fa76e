"""cbn_inspect.analysis.counting: the profile of a weighted spectrum."""

from __future__ import annotations

import numpy as np

from cbn_inspect.analysis.counting import PROFILE_POINTS, _profile


def test_profile_equals_sampling_the_repeated_sorted_values():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        values = rng.random(n).round(2)
        weights = rng.integers(1, 3, n).astype(np.float64)
        ordered = np.sort(np.repeat(values, weights.astype(int)))[::-1]
        picks = np.linspace(0, len(ordered) - 1, PROFILE_POINTS).round().astype(int)
        assert _profile(values, weights) == tuple(float(ordered[i]) for i in picks)


def test_profile_of_nothing_is_empty():
    assert _profile(np.zeros(0), np.zeros(0)) == ()
