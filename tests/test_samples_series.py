"""sample_checkpoints/make_samples.py --series and the shipped series sample_checkpoints/cbn_demo_1d_run/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open

from test_samples_training import REQUIRED, check_layout

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_checkpoints"
RUN = SAMPLES / "cbn_demo_1d_run"


def tensors(path: Path) -> dict[str, np.ndarray]:
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_shipped_series_layout_and_step_metadata():
    files = sorted(RUN.glob("step_*.safetensors"))
    assert len(files) == 11
    check_layout(files[-1])  # the last one is a complete sample, final loss included
    for path in files:
        with safe_open(str(path), "np") as f:
            meta = f.metadata()
        assert not [k for k in REQUIRED + ["loss", "series", "total_steps"] if k not in meta], path.name
        step = int(path.stem.split("_")[1])
        assert meta["step"] == meta["global_step"] == meta["steps"] == str(step)
        assert meta["series"] == "cbn_demo_1d" and meta["total_steps"] == "4000"
        assert json.loads(meta["cbn_inspect.order"])[0] == "layers.0"


def test_series_mode_is_the_samples_recipe(tmp_path):
    """--series --smoke saves every step of the 5-step smoke run; its last file holds exactly the tensors of
    the plain smoke run of the same sample (saving snapshots does not change the training)."""
    # one subprocess (torch imported once; its global settings stay out of the test process), two runs
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import make_samples as m; "
            "m.main(['--smoke', '--out', sys.argv[2], '--series']); "
            "m.main(['--smoke', '--out', sys.argv[2], '--only', 'cbn_demo_1d'])")
    done = subprocess.run([sys.executable, "-c", code, str(SAMPLES), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "cbn_demo_1d_run").glob("*.safetensors"))
    assert [f.name for f in files] == [f"step_{s:04d}.safetensors" for s in range(6)]
    last, plain = tensors(files[-1]), tensors(tmp_path / "cbn_demo_1d.safetensors")
    assert sorted(last) == sorted(plain) and all(np.array_equal(last[k], plain[k]) for k in plain)
    first = tensors(files[0])
    assert not np.array_equal(first["layers.1.weight"], last["layers.1.weight"])
