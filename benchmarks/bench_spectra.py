"""Benchmark: per-frequency spectra of every conv layer of timm's resnet50, the tool vs a naive reference.

    python benchmarks/bench_spectra.py                  # full run: naive side at 224, about 15 min on 2 cores
    python benchmarks/bench_spectra.py --naive-size 64  # ratio at input 64 instead (about 3 min)
    python benchmarks/bench_spectra.py --quick          # 3 repeats, naive side at 32 (about a minute)
    python benchmarks/bench_spectra.py --device cuda --skip-naive   # the GPU path, on a machine with one
    python benchmarks/bench_spectra.py --skip-naive --skip-float64 --repeat 3   # tool side only (about 5 min)

What is measured, each in a fresh subprocess (so that peak RSS belongs to that measurement alone):

- tool: ``analyze_model`` on ``timm:resnet50`` (pretrained=False) loaded through the tool's own loader,
  grids from one traced forward pass at ``--size`` (224), BatchNorm not folded (so that both sides see the
  same kernels): the work ``cbn-inspect`` does after loading, every per-frequency singular value of all 53
  layers, counts, metrics and the bottleneck call. Median wall time of ``--repeat`` runs, CPU time, peak RSS.
  One more, untimed run records the CPU seconds spent inside the Hermitian eigensolver (LAPACK): divided by
  the threads, that is a floor no scheduling can beat.
- naive: the same layers and grids, numpy float64: ``np.fft.fftn`` of the zero-padded (polyphase) kernel over
  the full grid, then ``np.linalg.svd(compute_uv=False)`` at every frequency, one at a time. By default it
  gets the same cores as the tool: the layers are split over ``--threads`` processes running side by side
  (one BLAS thread each, longest-first), and its wall time is the longest process's. ``--naive-processes 1
  --naive-blas-threads 0`` runs it as written instead: one loop, numpy's own threading. Measured at
  ``--naive-size`` for *both* sides (224 by default: like with like at the target size).
- the same tool run with ``CBN_EIGEN_ROUTE`` forced to ``--compare-route`` (default ``numpy``: the plain
  complex128 route of numpy's OpenBLAS, the tool's eigensolver before issue 15), in the same run, for a ratio
  that the machine's load affects alike.
- routes: a table of the eigensolver routes of ``cbn_inspect.analysis._eigen`` on ResNet-50's own
  per-frequency matrices, per Gram size and spectrum shape (square 3x3 convs, wide strided ones): ms per
  matrix (process CPU, one thread) and the worst relative error against the float64 SVD of each matrix.
- accuracy: the tool's float32 (default) and float64 paths against float64 references: the tool's float64
  SVD at ``--size`` and the naive SVD at the naive size. Relative differences are taken over singular values
  above 1e-3 of the layer's largest.

Model construction and tracing are not timed. Prints the numbers and, with ``--json FILE``, writes them.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's cbn_inspect, not an installed one
REL_FLOOR = 1e-3  # accuracy is judged on singular values above this share of the layer's largest
TARGET_WALL_S, TARGET_RATIO, TARGET_REL, TARGET_RSS_MB = 4.0, 150.0, 1e-4, 1536
TARGET_CPU_S = 8.0  # issue 15: CPU time where the machine is not quiet


# ---------------------------------------------------------------- worker side (runs in a subprocess)

def load_model(size: int):
    """timm's resnet50 through the tool's own loader (`timm:resnet50`), traced at ``size``, BN not folded."""
    from cbn_inspect.loaders import load

    return load("timm:resnet50", input_size=str(size), fold_batchnorm=False)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_tool(loaded, precision: str, device: str = "cpu", keep: bool = False):
    from cbn_inspect.inspect import analyze_model
    from cbn_inspect.records import Settings

    return analyze_model(loaded, Settings(precision=precision, device=device, keep_spectra=keep))


def eigensolver_seconds(loaded, device: str) -> float:
    """CPU seconds the tool spends in its Hermitian eigensolver during one analysis (thread CPU time)."""
    from cbn_inspect.analysis import spectrum

    spent = [0.0]
    lock = threading.Lock()
    original = spectrum._hermitian_values

    def timed(*args, **kwargs):
        start = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                spent[0] += time.thread_time() - start

    spectrum._hermitian_values = timed
    try:
        run_tool(loaded, "float32", device)
    finally:
        spectrum._hermitian_values = original
    return spent[0]


def _naive_cost(layer) -> float:
    """A rough cost of the naive side for one layer (frequencies x SVD flops), to split layers over processes."""
    import math

    stride = layer.stride or (1,) * layer.ndim
    grid = [max(1, g // s) for g, s in zip(layer.grid, stride)]
    co, ci = layer.out_channels // layer.groups, layer.in_channels // layer.groups * math.prod(stride)
    return math.prod(grid) * layer.groups * min(co, ci) ** 2 * max(co, ci)


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
        del spec
    return out


def naive_part(layers, part: int, parts: int) -> list:
    """The layers of process ``part`` of ``parts``: longest-processing-time-first by :func:`_naive_cost`."""
    loads = [0.0] * parts
    owner = {}
    for index in sorted(range(len(layers)), key=lambda i: -_naive_cost(layers[i])):
        target = loads.index(min(loads))
        owner[index] = target
        loads[target] += _naive_cost(layers[index])
    return [layer for i, layer in enumerate(layers) if owner[i] == part]


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


ROUTE_SAMPLES = {64: 48, 128: 32, 256: 16, 512: 8}  # matrices per (size, shape) row of the route table


def route_matrices(layers, per_layer: int = 6) -> dict:
    """ResNet-50's own per-frequency matrices for the route table: (n, shape) -> [(W_hat, layer index)].

    ``shape`` is ``square`` (c == n: the 3x3 convs) or ``wide`` (c >= 2n: the strided convs' polyphase
    matrices). Up to ``per_layer`` frequencies per layer, evenly spaced; one-tap layers (a single matrix per
    layer) are left out: they are a handful of solves in all.
    """
    import math

    import numpy as np
    import torch

    from cbn_inspect.analysis import plan_kernel
    from cbn_inspect.analysis.spectrum import _dft_source, _drop_zero_channels, representative_frequencies

    out: dict = {}
    for index, layer in enumerate(layers):
        plan = plan_kernel(layer.weight.load().double(), layer.grid, groups=layer.groups, stride=layer.stride,
                           dilation=layer.dilation)
        kernel = _drop_zero_channels(plan.kernel)
        g, co, ci = kernel.shape[:3]
        if math.prod(kernel.shape[3:]) == 1 or min(co, ci) < 2 or g != 1:
            continue
        if co > ci:
            kernel, (co, ci) = kernel.transpose(1, 2), (ci, co)
        freqs, _ = representative_frequencies(plan.grid)
        pick = np.unique(np.linspace(0, len(freqs) - 1, min(per_layer, len(freqs))).astype(int))
        mats = _dft_source(kernel, plan.grid, freqs[pick], torch.complex128)(0, len(pick))[:, 0].numpy()
        key = (co, "square" if ci < 2 * co else "wide")
        out.setdefault(key, []).extend((m, index) for m in mats)
    return out


def route_table(loaded) -> list:
    """Per (size, shape): ms per matrix (process CPU, one thread, median of 3) and worst relative error
    against the float64 SVD of W_hat (values above 1e-3 of the largest of that layer's sampled matrices),
    for every route of cbn_inspect.analysis._eigen (``mixed``: every matrix refined) and for the tool's choice
    (``tool``: a probe matrix by the plain route, then the route :func:`layer_route` picks for the rest)."""
    import numpy as np

    from cbn_inspect.analysis import _eigen

    rows = []
    for (n, shape), items in sorted(route_matrices(loaded.layers).items()):
        items = items[: ROUTE_SAMPLES.get(n, 8)]
        mats = np.stack([m for m, _ in items])
        grams = np.ascontiguousarray(mats @ mats.conj().transpose(0, 2, 1))
        ref = np.sort(np.linalg.svd(mats, compute_uv=False), axis=-1)
        layer_max = {}
        for (_, index), vals in zip(items, ref):
            layer_max[index] = max(layer_max.get(index, 0.0), float(vals[-1]))
        floor = np.array([REL_FLOOR * layer_max[index] for _, index in items])[:, None]
        row = {"n": n, "shape": shape, "matrices": len(items),
               "small_share": float(np.mean(ref ** 2 < _eigen.mixed_threshold(n) * ref[:, -1:] ** 2))}
        for route in ("numpy", "torch", "mixed", "tool"):
            times, stats = [], {}
            for _ in range(3):
                stats = {}
                start = time.process_time()
                if route == "tool":  # what compute_spectrum does: one probe by the plain route picks the layer's route
                    probe = _eigen.hermitian_eigenvalues(grams[:1], "plain")
                    rest = _eigen.hermitian_eigenvalues(grams[1:], _eigen.layer_route(probe[0], n), stats)
                    lam = np.concatenate([probe, rest])
                else:
                    lam = _eigen.hermitian_eigenvalues(grams, route, stats)
                times.append(time.process_time() - start)
            got = np.sqrt(np.clip(np.sort(lam, axis=-1), 0, None))
            mask = ref >= floor
            err = float(np.max(np.abs(got[mask] - ref[mask]) / ref[mask]))
            row[route] = {"ms": 1e3 * statistics.median(times) / len(items), "max_rel": err,
                          "taken": {k: v for k, v in stats.items() if k != "fallback_reasons"},
                          "fallbacks": stats.get("fallback_reasons", {})}
        rows.append(row)
    return rows


def worker(job: dict) -> dict:
    from cbn_inspect.analysis import configure_threads

    if job["kind"] != "naive":  # the naive side keeps numpy's own threading (or the BLAS threads it was given)
        configure_threads(1 if job["kind"] == "routes" else job["threads"])
    loaded = load_model(job["size"])
    device = job.get("device", "cpu")
    result: dict = {"layers": len(loaded.layers), "rss_before_mb": _rss_mb()}
    if job["kind"] == "tool":
        run_tool(loaded, job["precision"], device)  # warm-up: first-call costs (pools, kernels, CUDA context)
        walls, cpus = [], []
        for _ in range(job["repeat"]):
            c0, t0 = time.process_time(), time.perf_counter()
            run_tool(loaded, job["precision"], device)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        result.update(walls=walls, cpus=cpus)
        if job.get("eigensolver"):
            result["eigensolver_cpu_s"] = eigensolver_seconds(loaded, device)
    elif job["kind"] == "naive":
        layers = naive_part(loaded.layers, job["part"], job["parts"])
        c0, t0 = time.process_time(), time.perf_counter()
        naive_spectra(layers)
        result.update(walls=[time.perf_counter() - t0], cpus=[time.process_time() - c0], part_layers=len(layers))
    elif job["kind"] == "accuracy":
        model32, model64 = run_tool(loaded, "float32", device, keep=True), run_tool(loaded, "float64", "cpu", keep=True)
        reports32 = model32.layers
        tool32 = [_full_values(r.spectrum) for r in reports32]
        tool64 = [_full_values(r.spectrum) for r in model64.layers]
        result["mode_counts_equal"] = [r.metrics.mode_count for r in reports32] == [
            r.metrics.mode_count for r in model64.layers]
        call = ("found", "reason", "start", "end", "rank", "degree_counts", "frequencies", "strength_label", "clean")
        result["bottleneck_equal"] = all(getattr(model32.bottleneck, key) == getattr(model64.bottleneck, key)
                                         for key in call)
        ref = naive_spectra(loaded.layers) if job["reference"] == "naive" else tool64
        result["max_rel_float32"] = max(_max_rel(a, b) for a, b in zip(tool32, ref))
        result["max_rel_float64"] = max(_max_rel(a, b) for a, b in zip(tool64, ref))
        result["reference"] = job["reference"]
    elif job["kind"] == "routes":
        from cbn_inspect.analysis import _eigen

        result["rows"] = route_table(loaded)
        result["plain_route"] = _eigen.plain_route()
    result["peak_rss_mb"] = _rss_mb()
    return result


# ---------------------------------------------------------------- driver side

def _command(job: dict) -> tuple[list[str], dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if job.get("eigen_route"):
        env["CBN_EIGEN_ROUTE"] = job["eigen_route"]
    if job["kind"] == "naive" and job.get("blas_threads"):
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(job["blas_threads"])
    return [sys.executable, __file__, "--worker", json.dumps(job)], env


def _parse(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def measure(job: dict) -> dict:
    cmd, env = _command(job)
    return _parse(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)


def measure_naive(base: dict, size: int, parts: int, blas_threads: int) -> dict:
    """The naive side split over ``parts`` processes started together; wall = the longest one's."""
    procs = []
    for part in range(parts):
        cmd, env = _command({**base, "kind": "naive", "size": size, "part": part, "parts": parts,
                             "blas_threads": blas_threads})
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"naive worker failed with exit code {proc.returncode}")
        results.append(_parse(out))
    return {"walls": [max(r["walls"][0] for r in results)], "cpus": [sum(r["cpus"][0] for r in results)],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results), "parts": results}


def machine() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import torch

    info = {"cpu": model, "nproc": os.cpu_count(), "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "load_average": [round(v, 2) for v in os.getloadavg()]}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_route_table(table: dict) -> None:
    """The per-route table: per matrix size and spectrum shape, ms per matrix and worst error of each route."""
    print(f"eigensolver routes on ResNet-50's own matrices (one thread, process CPU ms per matrix, median of 3; "
          f"worst relative error vs the float64 SVD, values > {REL_FLOOR:g} x layer max; plain route here: "
          f"{table['plain_route']}):")
    routes = ("numpy", "torch", "mixed", "tool")
    print("  n    shape   matrices  small share | " + " | ".join(f"{r:>18s}" for r in routes) + " | tool's route (after the probe)")
    for row in table["rows"]:
        cells = " | ".join(f"{row[r]['ms']:7.2f} ms {row[r]['max_rel']:.0e}" for r in routes)
        fallbacks = row["mixed"]["fallbacks"]
        extra = f"; mixed fell back: {fallbacks}" if fallbacks else ""
        print(f"  {row['n']:<4d} {row['shape']:<7s} {row['matrices']:8d}  {row['small_share']:11.3f} | {cells} | "
              f"{row['tool']['taken'] or 'plain'}{extra}")


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, naive side at 32")
    parser.add_argument("--size", type=int, default=224, help="input size for the tool's timing (224)")
    parser.add_argument("--naive-size", type=int, default=None, help="input size for the ratio (224; quick: 32)")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs of the tool (7; quick: 3)")
    parser.add_argument("--threads", type=int, default=None, help="analysis threads and naive processes "
                        "(default: all cores)")
    parser.add_argument("--device", default="cpu", help="the tool's device: cpu (default) or cuda")
    parser.add_argument("--naive-processes", type=int, default=None, help="processes the naive side's layers "
                        "are split over (default: --threads; 1 = the naive loop as written)")
    parser.add_argument("--naive-blas-threads", type=int, default=1, help="BLAS threads per naive process "
                        "(1; 0 = numpy's default)")
    parser.add_argument("--skip-naive", action="store_true", help="only the tool's timing and accuracy")
    parser.add_argument("--skip-float64", action="store_true", help="no timing of --precision float64")
    parser.add_argument("--skip-routes", action="store_true", help="no per-route eigensolver table")
    parser.add_argument("--compare-route", default="numpy", help="also time the tool with CBN_EIGEN_ROUTE forced to "
                        "this route (numpy: the complex128 route used before issue 15; '' to skip)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    from cbn_inspect.analysis import available_cores

    threads = args.threads or available_cores()
    repeat = args.repeat or (3 if args.quick else 7)
    naive_size = args.naive_size or (32 if args.quick else args.size)
    base = {"threads": threads, "precision": "float32", "device": args.device}
    info = machine()
    print(f"machine: {info['cpu']}, {info['nproc']} cores{', ' + info['gpu'] if 'gpu' in info else ''}, "
          f"torch {info['torch']}, numpy {info['numpy']}, load average {info['load_average']}")
    processes = args.naive_processes or threads
    blas = "numpy's default BLAS threads" if args.naive_blas_threads == 0 else f"{args.naive_blas_threads} BLAS thread(s)"
    print(f"tool: {threads} analysis threads, float32 (default), device {args.device}; naive: numpy float64, one "
          f"frequency at a time, {processes} process(es) x {blas}")
    results: dict = {"machine": info, "threads": threads, "device": args.device}

    tool = measure({**base, "kind": "tool", "size": args.size, "repeat": repeat, "eigensolver": True})
    wall = statistics.median(tool["walls"])
    results["tool"] = tool
    print(f"tool @ {args.size}: {tool['layers']} layers, wall median {wall:.2f} s "
          f"(runs {', '.join(f'{w:.2f}' for w in tool['walls'])}), CPU median {statistics.median(tool['cpus']):.2f} s,"
          f" peak RSS {tool['peak_rss_mb']:.0f} MB (before analysis {tool['rss_before_mb']:.0f} MB)")
    eig = tool["eigensolver_cpu_s"]
    print(f"  of which CPU in the Hermitian eigensolver: {eig:.2f} s; / {threads} threads = {eig / threads:.2f} s, "
          "a floor for the wall time")
    if args.compare_route:  # the same run with the eigensolver route forced (numpy: the route before issue 15)
        other = measure({**base, "kind": "tool", "size": args.size, "repeat": repeat, "eigensolver": True,
                         "eigen_route": args.compare_route})
        results["tool_" + args.compare_route] = other
        o_wall, o_cpu = statistics.median(other["walls"]), statistics.median(other["cpus"])
        print(f"tool @ {args.size} with CBN_EIGEN_ROUTE={args.compare_route}: wall median {o_wall:.2f} s, CPU median "
              f"{o_cpu:.2f} s, eigensolver CPU {other['eigensolver_cpu_s']:.2f} s, peak RSS "
              f"{other['peak_rss_mb']:.0f} MB; default / forced: wall {wall / o_wall:.2f}, CPU "
              f"{statistics.median(tool['cpus']) / o_cpu:.2f}, eigensolver CPU {eig / other['eigensolver_cpu_s']:.2f}")
    if not args.skip_float64:
        tool64 = measure({**base, "kind": "tool", "size": args.size, "repeat": max(1, repeat // 3),
                          "precision": "float64"})
        results["tool_float64"] = tool64
        print(f"tool @ {args.size}, --precision float64: wall median {statistics.median(tool64['walls']):.2f} s, "
              f"peak RSS {tool64['peak_rss_mb']:.0f} MB")
    acc = measure({**base, "kind": "accuracy", "size": args.size, "reference": "tool-float64"})
    results["accuracy"] = acc
    print(f"accuracy @ {args.size} vs the tool's float64 SVD on the CPU (values > {REL_FLOOR:g} x layer max): "
          f"float32 path {acc['max_rel_float32']:.2e}; mode counts of all layers "
          f"{'identical' if acc['mode_counts_equal'] else 'DIFFERENT'}, bottleneck call "
          f"{'identical' if acc['bottleneck_equal'] else 'DIFFERENT'}")
    if not args.skip_routes:
        table = measure({**base, "kind": "routes", "size": args.size})
        results["routes"] = table
        print_route_table(table)
    cpu = statistics.median(tool["cpus"])
    print(f"target: wall <= {TARGET_WALL_S:g} s: {_verdict(wall <= TARGET_WALL_S)} (or CPU <= {TARGET_CPU_S:g} s where "
          f"the machine is not quiet: {_verdict(cpu <= TARGET_CPU_S)}); "
          f"rel diff < {TARGET_REL:g}: {_verdict(acc['max_rel_float32'] < TARGET_REL)}; "
          f"peak RSS < {TARGET_RSS_MB} MB: {_verdict(tool['peak_rss_mb'] < TARGET_RSS_MB)}")

    if not args.skip_naive:
        small = tool if naive_size == args.size else measure(
            {**base, "kind": "tool", "size": naive_size, "repeat": repeat})
        naive = measure_naive(base, naive_size, processes, args.naive_blas_threads)
        ratio = naive["walls"][0] / statistics.median(small["walls"])
        results.update(tool_small=small, naive=naive, ratio=ratio, naive_size=naive_size)
        where = "" if naive_size == args.size else f"; not {args.size}: --naive-size or --quick chose {naive_size}"
        print(f"ratio at input {naive_size} (same layers and grids on both sides{where}):")
        print(f"  tool  @ {naive_size}: wall median {statistics.median(small['walls']):.3f} s")
        print(f"  naive @ {naive_size}: wall {naive['walls'][0]:.1f} s ({processes} process(es) side by side, CPU "
              f"{naive['cpus'][0]:.1f} s), peak RSS {naive['peak_rss_mb']:.0f} MB")
        print(f"  ratio naive / tool: {ratio:.0f}x (target {TARGET_RATIO:g}x: {_verdict(ratio >= TARGET_RATIO)})")
        if naive_size <= 64:  # the naive reference's own accuracy check: it keeps every value, so only small sizes
            acc_small = measure({**base, "kind": "accuracy", "size": naive_size, "reference": "naive"})
            results["accuracy_naive"] = acc_small
            print(f"  accuracy vs the naive float64 SVD: float32 path {acc_small['max_rel_float32']:.2e}, "
                  f"float64 path {acc_small['max_rel_float64']:.2e}")
    results["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"load average at the end: {results['machine']['load_average_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
