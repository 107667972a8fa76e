"""Audit throughput: items per second of ``cbn-inspect audit`` with ``--jobs 1`` and ``--jobs 2``, same run.

Generates a zoo of small planted checkpoints (6 conv layers, 8 channels, 8x8 grid, safetensors), warms the
worker forkserver once (so neither measurement pays torch's import), then audits the zoo into a fresh JSONL
file with each job count and prints items/s. The rows of the two runs must agree (timing fields aside).

    PYTHONPATH=. python benchmarks/bench_audit.py            # 200 items
    PYTHONPATH=. python benchmarks/bench_audit.py --quick    # 40 items
    PYTHONPATH=. python benchmarks/bench_audit.py --items 500 --jobs 1 2 4 --zoo /tmp/zoo
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def write_zoo(folder: Path, count: int) -> None:
    from safetensors.numpy import save_file

    from cbn_inspect.synthetic import planted_network

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"m{i:04d}.safetensors"
        if not path.exists():
            state, meta = planted_network(depth=6, channels=8, grid=(8, 8), planted=(1, 4), seed=i)
            save_file(state, str(path), metadata=meta)


def comparable(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["item"]: {k: v for k, v in r.items() if k not in ("wall_seconds", "seconds")} for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="40 items")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, help="CPU threads per worker (default: cores / jobs)")
    parser.add_argument("--zoo", type=Path, help="folder for the generated zoo (kept); default: a temp folder")
    args = parser.parse_args()
    count = 40 if args.quick else args.items

    from cbn_inspect.batch import default_jobs, run_audit

    with tempfile.TemporaryDirectory(prefix="cbn-bench-audit-") as tmp:
        zoo = args.zoo or Path(tmp) / "zoo"
        started = time.perf_counter()
        write_zoo(zoo, count)
        files = sorted(zoo.glob("*.safetensors"))[:count]
        print(f"zoo: {len(files)} checkpoints in {zoo} (written in {time.perf_counter() - started:.1f} s); "
              f"{default_jobs()} cores; load average {os.getloadavg()[0]:.1f}")
        run_audit([str(files[0])], out=Path(tmp) / "warm.jsonl", jobs=1)  # starts the forkserver (imports torch)
        results = {}
        for jobs in args.jobs:
            out = Path(tmp) / f"jobs{jobs}.jsonl"
            result = run_audit([str(f) for f in files], out=out, jobs=jobs, threads=args.threads)
            assert result.computed == len(files) and not result.failed, result.failed[:3]
            results[jobs] = (result.seconds, comparable(out))
            mean = sum(r.wall_seconds for r in result.rows) / len(result.rows)
            threads = args.threads or max(1, default_jobs() // jobs)
            print(f"--jobs {jobs} ({threads} thread(s) each): {len(files)} items in {result.seconds:.2f} s = "
                  f"{len(files) / result.seconds:.1f} items/s (mean {mean * 1000:.0f} ms per item in a worker)")
        base_jobs = args.jobs[0]
        for jobs in args.jobs[1:]:
            assert results[jobs][1] == results[base_jobs][1], "rows differ between job counts"
            print(f"speed-up of --jobs {jobs} over --jobs {base_jobs}: "
                  f"{results[base_jobs][0] / results[jobs][0]:.2f}x (rows identical)")


if __name__ == "__main__":
    main()
