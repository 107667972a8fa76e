"""The issue-20 benchmarks run end to end on a small model and print what their READMEs quote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_bench_counts_parts_prints_each_part():
    out = _run("benchmarks/bench_counts_parts.py", "--model", "timm:resnet18", "--size", "64",
               "--layers", "layer2.1.conv1", "conv1", "--repeat", "1")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(rows) == {"layer2.1.conv1", "conv1"}
    n, freqs = int(rows["layer2.1.conv1"][1]), int(rows["layer2.1.conv1"][2])
    assert (n, freqs) == (128, 34)  # 8x8 grid: 34 conjugate classes
    assert all(float(v) >= 0 for v in rows["layer2.1.conv1"][4:10])


def test_bench_counts_reports_identical_routes():
    out = _run("benchmarks/bench_counts.py", "--model", "timm:resnet18", "--size", "32", "--repeat", "1",
               "--per-layer")
    assert "bottleneck call identical to the full route's: True" in out
    assert "counts / full route, CPU:" in out and "full route / floor, CPU:" in out
    assert any(line.startswith("layer2.1.conv1") for line in out.splitlines())
