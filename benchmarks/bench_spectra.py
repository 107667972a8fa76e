"""Benchmark: per-frequency spectra of every conv layer of timm's resnet50, the tool vs a naive reference.

    python benchmarks/bench_spectra.py            # full run (several minutes, mostly the naive side)
    python benchmarks/bench_spectra.py --quick    # a smaller check (about a minute)

What is measured, each in a fresh subprocess (so that peak RSS belongs to that measurement alone):

- tool: ``resolve_grid`` + ``analyze_layer`` for all 53 conv layers of ``resnet50`` (pretrained=False),
  grids from one traced forward pass at ``--size`` (224), i.e. the work ``cbn-inspect`` does after loading;
  median wall time of ``--repeat`` runs, CPU time, peak RSS (and RSS before the analysis started);
- naive: for the same layers and grids, numpy float64: FFT of the zero-padded (polyphase) kernel over the
  full grid, then ``np.linalg.svd(compute_uv=False)`` at every frequency, one at a time. It takes many
  minutes at 224, so the ratio is measured at ``--naive-size`` (64 by default) for *both* sides;
- accuracy: the tool's float32 (default) and float64 paths against float64 references: the naive SVD at
  ``--naive-size`` and the tool's float64 SVD at ``--size``. Relative differences are taken over singular
  values above 1e-3 of the layer's largest.

Model construction and tracing are not timed. Prints a table and, with ``--json FILE``, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's cbn_inspect, not an installed one
REL_FLOOR = 1e-3  # accuracy is judged on singular values above this share of the layer's largest


# ---------------------------------------------------------------- worker side (runs in a subprocess)

def collect_layers(size: int):
    """ConvLayer records of timm's resnet50 traced at ``size`` by the tool's own loader (`timm:resnet50`).

    BatchNorm is not folded, so that both sides analyse the same stored kernels."""
    from cbn_inspect.loaders import load

    loaded = load("timm:resnet50", input_size=str(size), fold_batchnorm=False)
    return loaded.layers


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_tool(layers, precision: str, keep: bool = False):
    from cbn_inspect.analysis import analyze_layer, resolve_grid
    from cbn_inspect.records import Settings

    settings = Settings(precision=precision, keep_spectra=keep)
    return [analyze_layer(resolve_grid(layer, settings), layer.weight.load(), settings) for layer in layers]


def naive_spectra(layers) -> list:
    """Full-grid float64 singular values per layer (F_full, r), one frequency at a time."""
    import numpy as np

    from cbn_inspect.analysis import plan_kernel

    out = []
    for layer in layers:
        plan = plan_kernel(layer.weight.load().double(), layer.grid, groups=layer.groups, stride=layer.stride,
                           dilation=layer.dilation)
        kernel = plan.kernel.numpy()  # (g, co, ci, *taps)
        spec = np.fft.fftn(kernel, s=plan.grid, axes=tuple(range(3, kernel.ndim)))
        g, co, ci = kernel.shape[:3]
        spec = spec.reshape(g, co, ci, -1)
        rows = []
        for f in range(spec.shape[-1]):
            vals = [np.linalg.svd(spec[j, :, :, f], compute_uv=False) for j in range(g)]
            rows.append(np.sort(np.concatenate(vals))[::-1])
        out.append(np.array(rows))
    return out


def _full_values(spectrum):
    """(F_full, r) singular values in row-major frequency order, from a tool Spectrum."""
    import numpy as np

    return np.array([vals for _freq, vals in spectrum.full()])


def _max_rel(values, reference) -> float:
    import numpy as np

    mask = reference >= REL_FLOOR * reference.max()
    if not mask.any():
        return 0.0
    return float(np.max(np.abs(values[mask] - reference[mask]) / reference[mask]))


def worker(job: dict) -> dict:
    from cbn_inspect.analysis import configure_threads

    configure_threads(job["threads"])
    layers = collect_layers(job["size"])
    rss_before = _rss_mb()
    result: dict = {"layers": len(layers), "rss_before_mb": rss_before}
    if job["kind"] == "tool":
        walls, cpus = [], []
        for _ in range(job["repeat"]):
            c0, t0 = time.process_time(), time.perf_counter()
            run_tool(layers, job["precision"])
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        result.update(walls=walls, cpus=cpus)
    elif job["kind"] == "naive":
        c0, t0 = time.process_time(), time.perf_counter()
        naive_spectra(layers)
        result.update(walls=[time.perf_counter() - t0], cpus=[time.process_time() - c0])
    elif job["kind"] == "accuracy":
        tool32 = [_full_values(r.spectrum) for r in run_tool(layers, "float32", keep=True)]
        tool64 = [_full_values(r.spectrum) for r in run_tool(layers, "float64", keep=True)]
        if job["reference"] == "naive":
            ref = naive_spectra(layers)
        else:
            ref = tool64
        result["max_rel_float32"] = max(_max_rel(a, b) for a, b in zip(tool32, ref))
        result["max_rel_float64"] = max(_max_rel(a, b) for a, b in zip(tool64, ref))
        result["reference"] = job["reference"]
    result["peak_rss_mb"] = _rss_mb()
    return result


# ---------------------------------------------------------------- driver side

def measure(job: dict) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if job["kind"] == "naive":
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(job["blas_threads"])
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": model, "nproc": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, naive side at 32")
    parser.add_argument("--size", type=int, default=224, help="input size for the tool's timing (224)")
    parser.add_argument("--naive-size", type=int, default=None, help="input size for the ratio (64; quick: 32)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs of the tool (5; quick: 3)")
    parser.add_argument("--threads", type=int, default=None, help="analysis threads (default: all cores)")
    parser.add_argument("--naive-blas-threads", type=int, default=1, help="BLAS threads of the naive side (1)")
    parser.add_argument("--skip-naive", action="store_true", help="only the tool's timing and accuracy")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    from cbn_inspect.analysis import available_cores

    threads = args.threads or available_cores()
    repeat = args.repeat or (3 if args.quick else 5)
    naive_size = args.naive_size or (32 if args.quick else 64)
    base = {"threads": threads, "precision": "float32"}
    info = machine()
    print(f"machine: {info['cpu']}, {info['nproc']} cores, torch {info['torch']}, load average {info['load_average']}")
    print(f"tool: {threads} analysis threads, float32 (default); naive: numpy float64, one frequency at a time, "
          f"{args.naive_blas_threads} BLAS thread(s)")
    results: dict = {"machine": info, "threads": threads}

    tool = measure({**base, "kind": "tool", "size": args.size, "repeat": repeat})
    results["tool"] = tool
    print(f"tool @ {args.size}: {tool['layers']} layers, wall median {statistics.median(tool['walls']):.2f} s "
          f"(runs {', '.join(f'{w:.2f}' for w in tool['walls'])}), CPU median {statistics.median(tool['cpus']):.2f} s, "
          f"peak RSS {tool['peak_rss_mb']:.0f} MB (before analysis {tool['rss_before_mb']:.0f} MB)")
    tool64 = measure({**base, "kind": "tool", "size": args.size, "repeat": max(1, repeat // 2),
                      "precision": "float64"})
    results["tool_float64"] = tool64
    print(f"tool @ {args.size}, --precision float64: wall median {statistics.median(tool64['walls']):.2f} s, "
          f"peak RSS {tool64['peak_rss_mb']:.0f} MB")
    acc = measure({**base, "kind": "accuracy", "size": args.size, "reference": "tool-float64"})
    results["accuracy"] = acc
    print(f"accuracy @ {args.size} vs the tool's float64 SVD (values > {REL_FLOOR:g} x layer max): "
          f"float32 path {acc['max_rel_float32']:.2e}")

    if not args.skip_naive:
        small = measure({**base, "kind": "tool", "size": naive_size, "repeat": repeat})
        naive = measure({**base, "kind": "naive", "size": naive_size, "blas_threads": args.naive_blas_threads})
        acc_small = measure({**base, "kind": "accuracy", "size": naive_size, "reference": "naive"})
        ratio = statistics.median(naive["walls"]) / statistics.median(small["walls"])
        results.update(tool_small=small, naive=naive, accuracy_naive=acc_small, ratio=ratio, naive_size=naive_size)
        print(f"ratio measured at input {naive_size} (both sides, same layers and grids; the naive side is "
              f"too slow at {args.size}):")
        print(f"  tool  @ {naive_size}: wall median {statistics.median(small['walls']):.3f} s, "
              f"peak RSS {small['peak_rss_mb']:.0f} MB")
        print(f"  naive @ {naive_size}: wall {naive['walls'][0]:.1f} s, peak RSS {naive['peak_rss_mb']:.0f} MB")
        print(f"  ratio naive / tool: {ratio:.0f}x")
        print(f"  accuracy vs the naive float64 SVD: float32 path {acc_small['max_rel_float32']:.2e}, "
              f"float64 path {acc_small['max_rel_float64']:.2e}")
    results["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"load average at the end: {results['machine']['load_average_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
