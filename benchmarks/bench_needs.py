"""Cost of ``cbn-inspect needs`` against the plain forward pass, and its memory against the number of inputs.

Two measurements on one model (default ``timm:resnet18`` at 224, random weights (``pretrained=False``), seeded
noise inputs, default probes and tolerances):

1. **Cost.** In this process, over the same ``--inputs`` inputs (default 32): the plain forward pass (the model
   alone, no hooks, ``torch.no_grad``, batches of ``--batch-size``), then the whole needs analysis
   (:func:`cbn_inspect.interventions.run.needs`: reference pass, profile, every probe's searches, held-out
   checks, joint checks). Printed: the analysis's forward passes (a suffix-only run counts as one) and input
   evaluations (also as equivalent full passes over the inputs), its CPU and wall seconds, and both as ratios to
   the plain pass. Medians over ``--repeats`` (CPU time of the process, all threads, is the figure to trust on a
   shared machine; wall time beside it).
2. **Memory.** Peak RSS (``VmHWM``) of a fresh process running the same analysis on N inputs, for
   N = ``--small`` and ``--large`` (default 16 and 64), at ``--memory-size`` (default: the cost run's size);
   each in its own subprocess so that neither inherits the other's peak. The ratio large / small is printed
   (target: at most 1.25, i.e. flat).

Usage::

    PYTHONPATH=. python benchmarks/bench_needs.py                       # resnet18 at 224, 32 inputs
    PYTHONPATH=. python benchmarks/bench_needs.py --memory-size 112     # cheaper memory runs
    PYTHONPATH=. python benchmarks/bench_needs.py --quick               # smoke run: 64 px, 8 / 16 / 32 inputs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def _vmrss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_needs(model: str, size: int, inputs: int, batch: int):
    from cbn_inspect.interventions.run import needs

    return needs(model, "noise", input_size=str(size), max_inputs=inputs, batch_size=batch)


def child_rss(model: str, size: int, inputs: int, batch: int) -> None:
    """Run the analysis on ``inputs`` noise inputs; print peak RSS, RSS before, and the cost as one JSON line."""
    import torch  # noqa: F401  (imported before the baseline, as the analysis would)
    from cbn_inspect.activations import open_runner

    open_runner(model)  # the model and its libraries in memory: the baseline the analysis adds to
    before = _vmrss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    report = run_needs(model, size, inputs, batch)
    print(json.dumps({"inputs": report.inputs.get("count"), "probes": len(report.layers),
                      "forward_passes": report.cost.forward_passes, "vmhwm_mb": _vmhwm_mb(), "rss_before_mb": before,
                      "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}))


def measure_rss(model: str, size: int, inputs: int, batch: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "--child-rss", str(inputs), "--model", model, "--size", str(size),
                          "--batch-size", str(batch)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"memory run with {inputs} inputs failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plain_forward(model: str, size: int, inputs: int, batch: int, repeats: int) -> tuple[float, float, int]:
    """Median CPU and wall seconds of the model alone over the same noise inputs the analysis reads."""
    import torch

    from cbn_inspect.activations import open_runner
    from cbn_inspect.activations.inputs import open_inputs, resolve_preprocessing
    from cbn_inspect.interventions.run import _threads
    from cbn_inspect.records import ActivationSettings

    runner = open_runner(model)
    settings = ActivationSettings("noise", max_inputs=inputs, batch_size=batch, input_size=(size,))
    prep = resolve_preprocessing(runner.model_input, settings)
    batches = list(open_inputs("noise", prep, settings).batches(batch))
    module = runner.module
    cpu, wall = [], []
    with torch.no_grad(), _threads():  # the same thread count as the analysis
        module(batches[0])  # warm-up, not timed
        for _ in range(repeats):
            c0, w0 = time.process_time(), time.perf_counter()
            for x in batches:
                module(x)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall), sum(len(b) for b in batches)


def measure_cost(model: str, size: int, inputs: int, batch: int, repeats: int) -> dict:
    plain_cpu, plain_wall, count = plain_forward(model, size, inputs, batch, max(3, repeats))
    runs = []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        report = run_needs(model, size, inputs, batch)
        runs.append({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
                     "forward_passes": report.cost.forward_passes, "estimated": report.cost.estimated,
                     "input_evaluations": report.cost.input_evaluations, "probes": len(report.layers),
                     "probe_names": [layer.name for layer in report.layers],
                     "split": [report.split.decide, report.split.held_out]})
    cpu = statistics.median(r["cpu_s"] for r in runs)
    wall = statistics.median(r["wall_s"] for r in runs)
    last = runs[-1]
    return {"inputs": count, "plain_cpu_s": plain_cpu, "plain_wall_s": plain_wall, "needs_cpu_s": cpu,
            "needs_wall_s": wall, "cpu_ratio": cpu / plain_cpu, "wall_ratio": wall / plain_wall,
            "forward_passes": last["forward_passes"], "estimated": last["estimated"],
            "input_evaluations": last["input_evaluations"], "full_pass_equivalents": last["input_evaluations"] / count,
            "probes": last["probes"], "probe_names": last["probe_names"], "split": last["split"],
            "runs": [[round(r["cpu_s"], 2), round(r["wall_s"], 2)] for r in runs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm:resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--inputs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="needs runs in the cost measurement (median)")
    parser.add_argument("--small", type=int, default=16)
    parser.add_argument("--large", type=int, default=64)
    parser.add_argument("--memory-size", type=int, default=None, help="input size of the memory runs (default --size)")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rss is not None:
        child_rss(args.model, args.size, args.child_rss, args.batch_size)
        return 0
    if args.quick:
        args.size, args.inputs, args.small, args.large = 64, 32, 8, 32
    memory_size = args.memory_size or args.size
    import torch

    print(f"{args.model} at {args.size}, noise inputs, batch {args.batch_size}; torch {torch.__version__}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (a shared VM: CPU time is the figure to "
          "trust)", flush=True)
    if not args.skip_cost:
        c = measure_cost(args.model, args.size, args.inputs, args.batch_size, args.repeats)
        print(f"\ncost over {c['inputs']} inputs ({c['split'][0]} decide, {c['split'][1]} held out), "
              f"{c['probes']} probes ({', '.join(c['probe_names'])}); needs runs: {args.repeats}")
        print(f"  plain forward pass: CPU {c['plain_cpu_s']:.2f} s, wall {c['plain_wall_s']:.2f} s (median of "
              f"{max(3, args.repeats)})")
        print(f"  needs: {c['forward_passes']} forward passes (estimated {c['estimated']}), {c['input_evaluations']} "
              f"input evaluations = {c['full_pass_equivalents']:.1f} full passes over the inputs")
        print(f"  needs: CPU {c['needs_cpu_s']:.1f} s = {c['cpu_ratio']:.1f}x the plain pass; wall "
              f"{c['needs_wall_s']:.1f} s = {c['wall_ratio']:.1f}x; runs (CPU, wall): {c['runs']}", flush=True)
    if not args.skip_memory:
        small = measure_rss(args.model, memory_size, args.small, args.batch_size)
        large = measure_rss(args.model, memory_size, args.large, args.batch_size)
        ratio = large["vmhwm_mb"] / small["vmhwm_mb"]
        added = (large["vmhwm_mb"] - large["rss_before_mb"]) / max(1e-9, small["vmhwm_mb"] - small["rss_before_mb"])
        print(f"\npeak RSS (VmHWM) of a fresh process running needs on N inputs at {memory_size}")
        for row in (small, large):
            print(f"  N = {row['inputs']:4d}: {row['vmhwm_mb']:8.1f} MB (model loaded: {row['rss_before_mb']:.1f} MB; "
                  f"{row['probes']} probes, {row['forward_passes']} passes; wall {row['wall_s']:.1f} s, "
                  f"CPU {row['cpu_s']:.1f} s)")
        print(f"  ratio {args.large} / {args.small}: {ratio:.3f} (target <= 1.25: {'ok' if ratio <= 1.25 else 'MISSED'}); "
              f"peak above the loaded model: {added:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
