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


def test_nested_maps_from_pool_threads_finish_in_order():
    """Layers on the pool that map their own chunks on the same pool: no deadlock, order kept, <= n at once."""
    import threading
    import time

    from cbn_inspect.analysis._threads import submit

    configure_threads(2)
    running = {"now": 0, "most": 0}
    lock = threading.Lock()

    def chunk(x):
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        time.sleep(0.002)
        with lock:
            running["now"] -= 1
        return x * x

    def layer(base):
        return parallel_map(chunk, range(base, base + 6))

    try:
        futures = [submit(layer, 10 * k) for k in range(8)]
        results = [f.result(timeout=30) for f in futures]
    finally:
        configure_threads(None)
    assert results == [[(10 * k + i) ** 2 for i in range(6)] for k in range(8)]
    assert running["most"] <= 2


def test_errors_reach_the_caller():
    from cbn_inspect.analysis._threads import submit

    def boom(x):
        if x == 3:
            raise RuntimeError("bad chunk")
        return x

    for threads in (1, 2):
        configure_threads(threads)
        try:
            with pytest.raises(RuntimeError, match="bad chunk"):
                submit(parallel_map, boom, range(6)).result(timeout=30)
        finally:
            configure_threads(None)


def test_pipelined_model_equals_layer_by_layer(tmp_path):
    """analyze_model keeps `threads` layers in flight; the report must not depend on it."""
    from safetensors.numpy import save_file

    from cbn_inspect.analysis import analyze_layer, resolve_grid
    from cbn_inspect.inspect import analyze_model
    from cbn_inspect.loaders import load
    from cbn_inspect.records import Settings
    from cbn_inspect.synthetic import planted_network

    state, meta = planted_network(depth=7, channels=8, grid=(8, 8), seed=4)
    save_file(state, str(tmp_path / "p.safetensors"), metadata=meta)
    loaded = load(tmp_path / "p.safetensors")
    one = Settings(threads=1)
    serial = [analyze_layer(resolve_grid(layer, one), layer.weight.load(), one) for layer in loaded.layers]
    try:
        report = analyze_model(loaded, Settings(threads=2))
    finally:
        configure_threads(None)
    assert [r.layer.name for r in report.layers] == [r.layer.name for r in serial]
    for got, want in zip(report.layers, serial):
        if got.route != want.route:  # a layer the bottleneck call completed on the full route
            want = analyze_layer(got.layer, got.layer.weight.load(), one, route=got.route)
        assert got.metrics == want.metrics
    assert report.bottleneck.found
