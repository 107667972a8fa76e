"""cbn_inspect.analysis._threads: one switch for the analysis' threads."""

from __future__ import annotations

import os

import pytest
import torch

from cbn_inspect.analysis import available_cores, configure_threads
from cbn_inspect.analysis._threads import analysis_threads, parallel_map


def test_configure_threads_sets_one_thread_per_kernel():
    assert configure_threads(2) == 2
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert analysis_threads() == 2
    assert parallel_map(lambda x: x * x, range(5)) == [0, 1, 4, 9, 16]
    assert configure_threads(None) == available_cores()


def test_configure_threads_rejects_zero():
    with pytest.raises(ValueError):
        configure_threads(0)
