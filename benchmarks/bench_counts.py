"""Benchmark (issue 20): the counts route, the full route and the bare LAPACK floor, in one run.

    PYTHONPATH=. python benchmarks/bench_counts.py                 # ResNet-50 at 224, 3 repeats, 1 thread
    PYTHONPATH=. python benchmarks/bench_counts.py --repeat 5 --threads 2
    PYTHONPATH=. python benchmarks/bench_counts.py --model timm:resnet18 --size 64   # a quick look
    PYTHONPATH=. python benchmarks/bench_counts.py --per-layer     # also each multi-tap layer, both routes

What is measured, in this process, each repeat in turn (process CPU time and wall time; medians printed):

- **full**: ``analyze_model`` with the default ``spectrum_route="full"``: every per-frequency singular value of
  every conv layer, counts, metrics and the bottleneck call, default rule (relative 0.1).
- **counts**: ``analyze_model`` with ``spectrum_route="auto"`` (``--counts-route``), which takes the counts
  route (analysis/counts.py) wherever it applies and pays: LDL^T inertia counts, the certified largest value,
  traces; the layers the bottleneck call needs are completed on the full route, and that is included.
- **floor**: the bare LAPACK eigensolves of the same matrices the full route solves, and nothing else: per
  layer the float64 Gram matrices H(m) (built untimed through the full route's own layout), then one batched
  ``eigvalsh`` (complex128; the one-tap layers' real Gram matrix) by torch (MKL) and by numpy (OpenBLAS),
  the faster of the two per layer. Depthwise layers (vector norms, no solve) count zero.

Ratios: counts / full (issue 20 target: at most 0.4) and full / floor (target: at most 1.15). Model
construction and tracing are not timed. ``--json FILE`` writes the numbers. ``--per-layer`` adds, for every
layer with more than one tap, the CPU time of the full route and of the counts route forced on it (best of
``--repeat``), with its Gram side n and frequencies: where the route pays (counts.MIN_SIDE, MIN_FREQUENCIES).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_COUNTS, TARGET_FLOOR = 0.4, 1.15


def timed(func):
    cpu, wall = time.process_time(), time.perf_counter()
    result = func()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def floor_seconds(loaded, settings) -> tuple[float, int]:
    """Process CPU seconds of the bare eigensolves of every layer's matrices (faster library per layer)."""
    import numpy as np
    import torch

    from cbn_inspect.analysis import plan_kernel, resolve_grid
    from cbn_inspect.analysis.spectrum import _drop_zero_channels, gram_layout

    total, matrices = 0.0, 0
    for layer in loaded.layers:
        layer = resolve_grid(layer, settings)
        weight = layer.weight.load().detach().double()
        plan = plan_kernel(weight, layer.grid, groups=layer.groups, stride=layer.stride, dilation=layer.dilation,
                           transposed=layer.transposed)
        layout = gram_layout(plan, "cpu", settings.memory_budget_mb)
        if layout is not None:
            mats = [layout.source(a, b).numpy() for a, b in layout.chunks()]
        else:  # one tap: the tool solves one real Gram matrix; one row or column: vector norms, no solve
            kernel = _drop_zero_channels(plan.kernel)
            g, co, ci = kernel.shape[:3]
            if min(co, ci) <= 1 or int(np.prod(kernel.shape[3:])) != 1:
                continue
            w = kernel.reshape(g, co, ci).numpy()
            w = w if co <= ci else w.transpose(0, 2, 1)
            mats = [(w @ w.transpose(0, 2, 1))[None]]
        best = float("inf")
        for solver in (lambda m: torch.linalg.eigvalsh(torch.from_numpy(m)), np.linalg.eigvalsh):
            start = time.process_time()
            for m in mats:
                solver(m)
            best = min(best, time.process_time() - start)
        total += best
        matrices += sum(int(np.prod(m.shape[:-2])) for m in mats)
    return total, matrices


def per_layer(loaded, settings, repeat: int) -> None:
    """CPU seconds (best of ``repeat``) of each multi-tap layer on the full route and on the forced counts route."""
    from cbn_inspect.analysis import analyze_layer, plan_kernel, resolve_grid
    from cbn_inspect.analysis.spectrum import gram_layout

    print(f"{'layer':<28}{'n':>5}{'freqs':>7}{'eigensolver':>12}{'full s':>9}{'counts s':>10}{'ratio':>7}")
    for layer in loaded.layers:
        layer = resolve_grid(layer, settings)
        weight = layer.weight.load()
        plan = plan_kernel(weight.detach().double(), layer.grid, groups=layer.groups, stride=layer.stride,
                           dilation=layer.dilation, transposed=layer.transposed)
        layout = gram_layout(plan, "cpu", settings.memory_budget_mb)
        if layout is None:
            continue
        best = {}
        for route in ("full", "counts"):
            times = []
            for _ in range(repeat):
                start = time.process_time()
                analyze_layer(layer, weight, settings, route=route)
                times.append(time.process_time() - start)
            best[route] = min(times)
        print(f"{layer.name[:27]:<28}{layout.side:>5}{layout.n_freq:>7}{layout.route:>12}{best['full']:>9.3f}"
              f"{best['counts']:>10.3f}{best['counts'] / best['full']:>7.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="timm:resnet50")
    parser.add_argument("--size", default="224")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--per-layer", action="store_true", help="also time each multi-tap layer on both routes")
    args = parser.parse_args()

    from cbn_inspect.analysis import configure_threads
    from cbn_inspect.inspect import analyze_model
    from cbn_inspect.loaders import load
    from cbn_inspect.records import Settings

    configure_threads(args.threads)
    loaded = load(args.model, input_size=args.size, fold_batchnorm=False)
    auto = Settings(threads=args.threads, spectrum_route="auto")
    full = dataclasses.replace(auto, spectrum_route="full")
    analyze_model(loaded, auto)  # warm-up: imports, the plain-route choice
    runs: dict[str, list[tuple[float, float]]] = {"full": [], "counts": [], "floor": []}
    matrices = layers_counts = 0
    same = True
    for _ in range(args.repeat):
        cpu, wall, report_full = timed(lambda: analyze_model(loaded, full))
        runs["full"].append((cpu, wall))
        cpu, wall, report_counts = timed(lambda: analyze_model(loaded, auto))
        runs["counts"].append((cpu, wall))
        cpu, wall, (floor, matrices) = timed(lambda: floor_seconds(loaded, auto))
        runs["floor"].append((floor, wall))
        layers_counts = sum(r.route == "counts" for r in report_counts.layers)
        same &= report_full.bottleneck == report_counts.bottleneck and all(
            a.metrics is None and b.metrics is None or (a.metrics.mode_count, a.metrics.spectral_norm)
            == (b.metrics.mode_count, b.metrics.spectral_norm) for a, b in zip(report_full.layers, report_counts.layers))
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in runs.items()}
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.model} at {args.size}: {len(loaded.layers)} conv layers, {matrices} matrices solved by the full "
          f"route; {args.threads} analysis thread(s); {platform.processor() or platform.machine()}; "
          f"load average {load_avg:.2f} after the run")
    print(f"{'what':<34}{'CPU s (median)':>16}{'wall s':>10}   runs (CPU)")
    for key, label in (("full", "tool, full route (default)"), ("counts", "tool, --counts-route"),
                       ("floor", "bare LAPACK floor (eigvalsh only)")):
        print(f"{label:<34}{med[key][0]:>16.2f}{med[key][1]:>10.2f}   "
              + ", ".join(f"{c:.2f}" for c, _ in runs[key]))
    ratio_counts = med["counts"][0] / med["full"][0]
    ratio_floor = med["full"][0] / med["floor"][0]
    print(f"counts / full route, CPU:  {ratio_counts:.2f}  (target <= {TARGET_COUNTS}: "
          f"{'met' if ratio_counts <= TARGET_COUNTS else 'NOT met'})")
    print(f"full route / floor, CPU:   {ratio_floor:.2f}  (target <= {TARGET_FLOOR}: "
          f"{'met' if ratio_floor <= TARGET_FLOOR else 'NOT met'})")
    print(f"counts / floor, CPU:       {med['counts'][0] / med['floor'][0]:.2f}")
    print(f"layers on the counts route: {layers_counts} of {len(loaded.layers)}; counts, largest values and the "
          f"bottleneck call identical to the full route's: {same}")
    if args.per_layer:
        per_layer(loaded, auto, args.repeat)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "size": args.size, "threads": args.threads,
                                         "runs": runs, "median": med, "counts_over_full": ratio_counts,
                                         "full_over_floor": ratio_floor, "identical": same,
                                         "load_average": load_avg}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
