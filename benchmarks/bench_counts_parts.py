"""Benchmark (issue 20): where the counts route's time goes on one layer, part by part, against the eigensolve.

    PYTHONPATH=. python benchmarks/bench_counts_parts.py                       # ResNet-50 at 224, four 3x3 layers
    PYTHONPATH=. python benchmarks/bench_counts_parts.py --layers conv1 layer4.1.conv2 --repeat 5

For each layer, on its own Gram matrices H(m) (built once, through the full route's layout), process CPU
seconds, best of ``--repeat``, one thread:

- **build**: the Gram matrices of every chunk (tap products are built with the layout and not counted);
- **eigensolve**: the full route's own call on every chunk (its route: plain complex128 or mixed);
- **inertia**: ``counts.inertia`` at the relative-0.1 threshold of the probe's largest value (LDL^T and the
  tie check by inverse iteration);
- **certify**: ``counts._not_below`` at that largest value (the complex64 Cholesky test of every frequency);
- **bounds**: ``counts._bounds`` (traces, Frobenius norms, power steps);
- **whole**: ``counts.compute_counts`` forced on the layer (relative 0.1, the layout already built), and the
  frequencies it solved exactly and of those the ties.

The ratios (part / eigensolve) are what bound the counts route's gain on such a layer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_LAYERS = ("layer1.0.conv2", "layer2.1.conv2", "layer3.1.conv2", "layer4.1.conv2")


def best(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        func()
        times.append(time.process_time() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="timm:resnet50")
    parser.add_argument("--size", default="224")
    parser.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from cbn_inspect.analysis import configure_threads, plan_kernel, resolve_grid
    from cbn_inspect.analysis import counts
    from cbn_inspect.analysis.spectrum import gram_layout
    from cbn_inspect.loaders import load
    from cbn_inspect.records import Settings, ToleranceRule

    configure_threads(1)
    loaded = load(args.model, input_size=args.size, fold_batchnorm=False)
    settings = Settings(threads=1)
    by_name = {layer.name: layer for layer in loaded.layers}
    print(f"{args.model} at {args.size}, one thread, process CPU s (best of {args.repeat})")
    print(f"{'layer':<18}{'n':>5}{'freqs':>7}{'route':>7}{'build':>8}{'eigensolve':>12}{'inertia':>9}"
          f"{'certify':>9}{'bounds':>8}{'whole':>8}{'solved':>8}{'ties':>6}   inertia/eig  certify/eig")
    for name in args.layers:
        layer = resolve_grid(by_name[name], settings)
        weight = layer.weight.load().detach().double()
        plan = plan_kernel(weight, layer.grid, groups=layer.groups, stride=layer.stride, dilation=layer.dilation,
                           transposed=layer.transposed)
        layout = gram_layout(plan, "cpu", settings.memory_budget_mb)
        if layout is None:
            print(f"{name:<18} one tap or one row: no per-frequency solves")
            continue
        chunks = layout.chunks()
        mats = [layout.source(a, b) for a, b in chunks]
        n = layout.side
        top = float(max(layout.values(a, m).max() for (a, _), m in zip(chunks, mats))) ** 2
        shift = 0.01 * top  # relative 0.1 on singular values
        t_build = best(lambda: [layout.source(a, b) for a, b in chunks], args.repeat)
        t_eig = best(lambda: [layout.values(a, m) for (a, _), m in zip(chunks, mats)], args.repeat)
        t_inertia = best(lambda: [counts.inertia(m.reshape(-1, n, n), shift, 64 * n * 2.2e-16 * top)
                                  for m in mats], args.repeat)
        t_cert = best(lambda: [counts._not_below(m, top * (1 - counts.CERT_MARGIN)) for m in mats], args.repeat)
        t_bounds = best(lambda: [counts._bounds(m) for m in mats], args.repeat)
        rule = ToleranceRule("relative", 0.1)
        whole = counts.compute_counts(plan, rule, force=True, layout=layout)
        t_whole = best(lambda: counts.compute_counts(plan, rule, force=True, layout=layout), args.repeat)
        print(f"{name:<18}{n:>5}{layout.n_freq:>7}{layout.route:>7}{t_build:>8.3f}{t_eig:>12.3f}{t_inertia:>9.3f}"
              f"{t_cert:>9.3f}{t_bounds:>8.3f}{t_whole:>8.3f}{whole.solved:>8}{whole.ties:>6}   "
              f"{t_inertia / t_eig:>11.2f}  {t_cert / t_eig:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
