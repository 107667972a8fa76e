"""``track`` memory against the number of checkpoints: peak RSS of the coordinating process, N = 1,000 and 10,000.

    python benchmarks/bench_track_memory.py                 # 1,000 and 10,000 checkpoints
    python benchmarks/bench_track_memory.py --counts 200,2000

Writes N tiny safetensors checkpoints (one 4x4x3x3 conv, the step in ``__metadata__``) into a temporary
folder and runs ``cbn-inspect track FOLDER --grid 4 --json OUT -q`` in a child process that reports its own
peak RSS (``ru_maxrss``: the coordinator; the worker processes analyse one checkpoint at a time and do not
grow with N). Prints, per N: peak RSS, wall and CPU seconds (the child and its workers), and the ratio of
each peak to the smallest N's (acceptance: 10,000 within 1.5x of 1,000). One run per N: the peak is not a
timing, and a run of 10,000 takes many minutes on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK = """
import resource, runpy, sys, atexit
atexit.register(lambda: sys.stderr.write("PEAK_KB %d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
sys.argv = ["cbn-inspect"] + sys.argv[1:]
runpy.run_module("cbn_inspect", run_name="__main__")
"""


def write_series(folder: Path, count: int) -> None:
    import torch
    from safetensors.torch import save

    g = torch.Generator().manual_seed(0)
    for i in range(count):
        data = save({"conv.weight": torch.randn(4, 4, 3, 3, generator=g)}, metadata={"step": str(i)})
        (folder / f"step_{i:06d}.safetensors").write_bytes(data)


def run(count: int, work: Path) -> dict:
    folder = work / f"series_{count}"
    folder.mkdir()
    write_series(folder, count)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK, "track", str(folder), "--grid", "4", "-q",
                           "--json", str(work / f"series_{count}.json")], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("PEAK_KB"):
        raise SystemExit(f"track over {count} checkpoints failed (exit {done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"count": count, "peak_mb": int(lines[-1].split()[1]) / 1024, "wall_s": wall, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,10000")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="cbn-bench-track-") as tmp:
        for count in counts:
            results.append(run(count, Path(tmp)))
            r = results[-1]
            print(f"{r['count']:>7,} checkpoints: peak RSS {r['peak_mb']:7.1f} MB | wall {r['wall_s']:7.1f} s | "
                  f"CPU {r['cpu_s']:7.1f} s | ratio to {counts[0]:,}: {r['peak_mb'] / results[0]['peak_mb']:.2f}",
                  flush=True)
    worst = max(r["peak_mb"] for r in results) / results[0]["peak_mb"]
    print(f"largest peak / smallest-N peak: {worst:.2f} (acceptance: <= 1.5)")
    return 0 if worst <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
