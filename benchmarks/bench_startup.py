"""Start-up of the command line: how long ``cbn-inspect --version``, ``--help``, every subcommand's ``--help``
and usage errors take before anything prints, against the bare interpreter and against importing torch,
measured in the same run; then, separately, the start-up of a real analysis.

Every measurement is a fresh ``python -m cbn_inspect ...`` subprocess (what a user's shell starts; the
console script does the same). Wall time is the subprocess's, CPU time its user + system time from
``getrusage(RUSAGE_CHILDREN)``; medians over ``--repeats``. The budget is 0.3 s wall on a quiet machine for
each light invocation; on a loaded machine compare the CPU time, and the ratio to the bare interpreter.

    PYTHONPATH=. python benchmarks/bench_startup.py                 # 7 repeats
    PYTHONPATH=. python benchmarks/bench_startup.py --repeats 3 --budget 0.3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "sample_checkpoints" / "cbn_demo.safetensors"

LIGHT = [
    ["--version"], ["--help"], ["report", "--help"], ["audit", "--help"], ["layers", "--help"],
    ["track", "--help"], ["compare", "--help"], ["needs", "--help"],
    ["report", "x.pt", "--grid", "3,3"],          # a usage error of ours
    ["report", "x.pt", "--bogus"],                # a usage error of click's
    ["neds", "model.onnx"],                       # an unknown subcommand
]


def run_once(argv: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s, exit code) of one fresh subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def measure(argv: list[str], repeats: int) -> tuple[float, float, int]:
    runs = [run_once(argv) for _ in range(repeats)]
    return (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[-1][2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.3, help="wall seconds allowed per light invocation")
    args = parser.parse_args()
    py = sys.executable
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; medians of {args.repeats} fresh processes\n")
    bare_wall, bare_cpu, _ = measure([py, "-c", "pass"], args.repeats)
    torch_wall, torch_cpu, _ = measure([py, "-c", "import torch"], args.repeats)
    print(f"{'invocation':44s} {'wall s':>7s} {'CPU s':>7s} {'x bare':>7s} {'exit':>5s}")
    print(f"{'python -c pass (reference)':44s} {bare_wall:7.3f} {bare_cpu:7.3f} {1.0:7.1f}")
    label = 'python -c "import torch" (reference)'
    print(f"{label:44s} {torch_wall:7.3f} {torch_cpu:7.3f} "
          f"{torch_wall / bare_wall:7.1f}")
    over = []
    for argv in LIGHT:
        wall, cpu, code = measure([py, "-m", "cbn_inspect", *argv], args.repeats)
        label = "cbn-inspect " + " ".join(argv)
        print(f"{label:44s} {wall:7.3f} {cpu:7.3f} {wall / bare_wall:7.1f} {code:5d}")
        if wall > args.budget:
            over.append(label)
    print("\nstart-up of a real analysis (separately: these import torch by design)")
    imports = [py, "-c", "import cbn_inspect.inspect, cbn_inspect.report.terminal"]
    wall, cpu, _ = measure(imports, args.repeats)
    print(f"{'import of the analysis path (torch, numpy, ...)':44s} {wall:7.3f} {cpu:7.3f} {wall / bare_wall:7.1f}")
    demo = [py, "-m", "cbn_inspect", str(DEMO.relative_to(ROOT)), "--quiet"]
    wall, cpu, code = measure(demo, args.repeats)
    print(f"{'cbn-inspect ' + DEMO.name + ' (whole run)':44s} {wall:7.3f} {cpu:7.3f} {wall / bare_wall:7.1f} {code:5d}")
    print(f"\nbudget {args.budget} s wall per light invocation: "
          + ("all within" if not over else f"over on a loaded machine: {', '.join(over)}"))


if __name__ == "__main__":
    main()
