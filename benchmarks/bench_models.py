"""Regression check of the eigensolver routes on the timm models of the loader tests: time and results.

    PYTHONPATH=. python benchmarks/bench_models.py [--size 64] [--models resnet18 vgg11 ...]   # a few minutes

For each full-size model of tests/test_loaders_timm.py (``pretrained=False``, BatchNorm folded, traced at
``--size``), the analysis (``analyze_model``, default settings, one analysis thread) runs with the default
eigensolver choice and with ``CBN_EIGEN_ROUTE=numpy`` (the complex128 route used before issue 15),
alternating, one warm-up each, then the median of ``--repeat`` timed runs of process CPU time. Printed per
model: both CPU times and their ratio, whether every layer's mode count and the bottleneck call are
identical, and the largest relative difference of the singular values above 1e-3 of the layer's largest.
Loading and tracing are not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
MODELS = ["resnet18", "resnext26ts", "regnetx_002", "convnext_atto", "efficientnet_b0", "mobilenetv3_small_050",
          "densenet121", "vgg11", "ghostnet_050", "resnetv2_50x1_bit", "nf_resnet26", "mixnet_s",
          "efficientnet_cc_b0_4e"]


def _run(loaded, route: str | None):
    from cbn_inspect.inspect import analyze_model
    from cbn_inspect.records import Settings

    if route:
        os.environ["CBN_EIGEN_ROUTE"] = route
    else:
        os.environ.pop("CBN_EIGEN_ROUTE", None)
    start = time.process_time()
    report = analyze_model(loaded, Settings(keep_spectra=True))
    return time.process_time() - start, report


def _max_rel(a, b) -> float:
    import numpy as np

    worst = 0.0
    for x, y in zip(a.layers, b.layers):
        if x.spectrum is None:
            continue
        ref = y.spectrum.values
        mask = ref >= 1e-3 * ref.max() if ref.size and ref.max() > 0 else np.zeros(ref.shape, bool)
        if mask.any():
            worst = max(worst, float(np.max(np.abs(x.spectrum.values[mask] - ref[mask]) / ref[mask])))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=MODELS)
    args = parser.parse_args()
    from cbn_inspect.analysis import configure_threads
    from cbn_inspect.loaders._timm import load_timm

    configure_threads(1)
    print(f"load average {[round(v, 2) for v in os.getloadavg()]}; input {args.size}, one analysis thread, "
          f"process CPU seconds, median of {args.repeat}")
    print("model | layers | default | numpy route | default / numpy | counts and call identical | max rel diff")
    for name in args.models:
        loaded = load_timm(name, size=(args.size,), fold_batchnorm=True)
        times: dict = {None: [], "numpy": []}
        reports: dict = {}
        for route in (None, "numpy"):
            _run(loaded, route)  # warm-up
        for _ in range(args.repeat):
            for route in (None, "numpy"):
                spent, reports[route] = _run(loaded, route)
                times[route].append(spent)
        a, b = reports[None], reports["numpy"]
        same = [r.metrics.mode_count for r in a.layers if r.metrics] == [
            r.metrics.mode_count for r in b.layers if r.metrics]
        same = same and all(getattr(a.bottleneck, k) == getattr(b.bottleneck, k)
                            for k in ("found", "start", "end", "rank", "degree_counts", "frequencies"))
        t_new, t_old = statistics.median(times[None]), statistics.median(times["numpy"])
        print(f"{name} | {len(a.layers)} | {t_new:.2f} | {t_old:.2f} | {t_new / t_old:.2f} | "
              f"{'yes' if same else 'NO'} | {_max_rel(a, b):.1e}", flush=True)
    os.environ.pop("CBN_EIGEN_ROUTE", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
