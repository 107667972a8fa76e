"""Activation profiles: bounded memory and the cost of profiling against the plain forward pass.

Two measurements on one model (default ``timm:resnet18`` at 224, random weights, seeded noise inputs):

1. **Memory.** Peak RSS (``VmHWM``) of a fresh process that profiles N inputs, for N = ``--small`` and
   ``--large``; each run in its own subprocess, so one cannot inherit the other's peak. The Gram sums are
   per frequency and per layer, so the peak must not grow with N: the ratio large / small is printed
   (target: at most 1.5).
2. **Overhead.** In this process, over the same inputs: the plain forward pass (the model alone, no hooks),
   then the profiled pass (hooks, per-frequency rfft + batched complex128 GEMMs into the Gram sums) and
   the final decompositions (one Hermitian eigensolve per frequency and layer, and the counting).
   Overhead = profiled pass + decompositions - plain forward pass; its ratio to the plain pass is printed
   (target: at most 2). Medians over ``--repeats``; wall and CPU time both, since a shared machine's wall
   clock is noisy: CPU time (``time.process_time``, all threads of the process) is the figure to trust.

Usage: ``PYTHONPATH=. python benchmarks/bench_activations.py`` (about 5 minutes on 2 cores);
``--quick`` for a smoke run (64 px, 20 / 60 inputs).
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


def _runner(model: str, size: int):
    from cbn_inspect.activations import open_runner

    runner = open_runner(model, side="input")
    return runner


def _settings(inputs: int, size: int, batch: int):
    from cbn_inspect.records import ActivationSettings

    return ActivationSettings("noise", max_inputs=inputs, batch_size=batch, input_size=(size,))


def child_rss(model: str, size: int, inputs: int, batch: int) -> None:
    """Profile ``inputs`` noise inputs; print peak RSS and times as one JSON line."""
    from cbn_inspect.activations import profile_activations

    runner = _runner(model, size)
    wall, cpu = time.perf_counter(), time.process_time()
    report = profile_activations(runner, _settings(inputs, size, batch))
    print(json.dumps({"inputs": report.inputs["count"], "layers": len(report.layers), "vmhwm_mb": _vmhwm_mb(),
                      "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}))


def measure_rss(model: str, size: int, inputs: int, batch: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, __file__, "--child-rss", str(inputs), "--model", model, "--size",
                          str(size), "--batch-size", str(batch)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_overhead(model: str, size: int, inputs: int, batch: int, repeats: int) -> dict:
    import torch

    from cbn_inspect.activations.inputs import open_inputs, resolve_preprocessing
    from cbn_inspect.activations.profile import _Collector, _finish, _torch_threads
    from cbn_inspect.analysis import configure_threads
    from cbn_inspect.records import Settings

    threads = configure_threads()  # as the CLI: analysis workers; torch gets all of them for the forward pass

    runner = _runner(model, size)
    settings = _settings(inputs, size, batch)
    prep = resolve_preprocessing(runner.model_input, settings)
    batches = list(open_inputs("noise", prep, settings).batches(batch))  # the same tensors for both passes
    module = runner.module
    plain, profiled, finish = [], [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.no_grad(), _torch_threads(threads):
            for x in batches:
                module(x)
        plain.append((time.perf_counter() - wall, time.process_time() - cpu))
        collector = _Collector(False, "cpu", None)
        wall, cpu = time.perf_counter(), time.process_time()
        with _torch_threads(threads):
            for x in batches:
                collector.start_batch()
                runner.run(x, collector)
        collector.start_batch()
        profiled.append((time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()
        _finish(collector, Settings(), inputs)
        finish.append((time.perf_counter() - wall, time.process_time() - cpu))
        del collector

    def med(rows, i):
        return statistics.median(r[i] for r in rows)

    out = {}
    for i, clock in enumerate(("wall", "cpu")):
        base, run, dec = med(plain, i), med(profiled, i), med(finish, i)
        out[clock] = {"plain_forward_s": base, "profiled_pass_s": run, "decompositions_s": dec,
                      "overhead_s": run + dec - base, "overhead_ratio": (run + dec - base) / base,
                      "runs": [[round(p[i], 3), round(q[i], 3), round(f[i], 3)] for p, q, f in zip(plain, profiled, finish)]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm:resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1000)
    parser.add_argument("--overhead-inputs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child-rss", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rss is not None:
        child_rss(args.model, args.size, args.child_rss, args.batch_size)
        return 0
    if args.quick:
        args.size, args.small, args.large, args.overhead_inputs, args.repeats = 64, 20, 60, 32, 3
    import torch

    print(f"{args.model} at {args.size}, noise inputs, batch {args.batch_size}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores (a shared VM: CPU time is the figure to trust)")
    small = measure_rss(args.model, args.size, args.small, args.batch_size)
    large = measure_rss(args.model, args.size, args.large, args.batch_size)
    ratio = large["vmhwm_mb"] / small["vmhwm_mb"]
    print("\npeak RSS (VmHWM) of a fresh process profiling N inputs")
    for row in (small, large):
        print(f"  N = {row['inputs']:5d}: {row['vmhwm_mb']:8.1f} MB   ({row['layers']} layers; wall {row['wall_s']:.1f} s, "
              f"CPU {row['cpu_s']:.1f} s)")
    print(f"  ratio {args.large} / {args.small}: {ratio:.3f}  (target <= 1.5: {'ok' if ratio <= 1.5 else 'MISSED'})")

    over = measure_overhead(args.model, args.size, args.overhead_inputs, args.batch_size, args.repeats)
    print(f"\nprofiling overhead over {args.overhead_inputs} inputs, medians of {args.repeats}")
    for clock in ("cpu", "wall"):
        o = over[clock]
        print(f"  {clock:4s}: plain forward {o['plain_forward_s']:.2f} s; profiled pass {o['profiled_pass_s']:.2f} s "
              f"+ decompositions {o['decompositions_s']:.2f} s; overhead {o['overhead_s']:.2f} s = "
              f"{o['overhead_ratio']:.2f}x the forward pass")
        print(f"        runs (plain, profiled, decompositions): {o['runs']}")
    ok = over["cpu"]["overhead_ratio"] <= 2.0
    print(f"  target: overhead <= 2x the forward pass (CPU time): {'ok' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
