"""Resource-attack files under --max-memory: refused before allocating (exit 7, one line), peak RSS bounded.

Each file runs ``cbn-inspect report`` in a subprocess; ``os.wait4`` gives that child's own peak resident
memory, which must stay below the ``--max-memory`` given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cbn_inspect.errors import ResourceLimitError
from cbn_inspect.inspect import analyze_model
from cbn_inspect.loaders import load
from cbn_inspect.records import Settings

LIMIT_MB = 1200  # the CLI with torch imported holds about 650 MB on its own
REPO = Path(__file__).resolve().parents[1]


def _claim_storage(path: Path, gib: int = 3, compressed: bool = False) -> None:
    """A torch.save zip whose data.pkl declares a ``gib`` GiB storage; the record holds 576 bytes (or, with
    ``compressed``, really decompresses to ``gib`` GiB: a 3 MB file)."""
    numel = gib * 2**30 // 4
    source = path.with_suffix(".src")
    torch.save({"conv.weight": torch.zeros(4, 4, 3, 3)}, source)
    zero = bytes(2**24)
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"K\x90t" in data  # BININT1 144 (the storage's numel), TUPLE
                zout.writestr(info.filename, data.replace(b"K\x90t", b"J" + numel.to_bytes(4, "little") + b"t", 1))
            elif "/data/" in info.filename and compressed:
                record = zipfile.ZipInfo(info.filename)
                record.compress_type = zipfile.ZIP_DEFLATED
                with zout.open(record, "w", force_zip64=True) as handle:
                    for _ in range(numel * 4 // len(zero)):
                        handle.write(zero)
            else:
                zout.writestr(info, data)
    source.unlink()


@pytest.fixture(scope="module")
def attacks(tmp_path_factory) -> dict[str, Path]:
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("attacks")
    files = {}
    files["stride0-zip"] = folder / "stride0.pt"
    torch.save({"conv.weight": torch.zeros(1).expand(4096, 4096, 3, 3)}, files["stride0-zip"])
    files["stride0-legacy"] = folder / "stride0_legacy.pt"
    torch.save({"conv.weight": torch.zeros(1).expand(4096, 4096, 3, 3)}, files["stride0-legacy"],
               _use_new_zipfile_serialization=False)
    files["claims-3gb"] = folder / "claims3g.pt"
    _claim_storage(files["claims-3gb"])
    files["grid-4096"] = folder / "grid4096.safetensors"
    save_file({"conv.weight": np.random.default_rng(0).standard_normal((64, 64, 3, 3)).astype(np.float32)},
              str(files["grid-4096"]), metadata={"cbn_inspect.grid": "4096"})
    files["20000-layers"] = folder / "many.safetensors"
    save_file({f"l{i}.weight": np.ones((1, 1, 1, 1), np.float32) for i in range(20_000)}, str(files["20000-layers"]))
    return files


# A small launcher forks the CLI and reads its peak RSS with wait4: forked straight from pytest, the child's
# peak would include pytest's own resident memory from before the exec (Linux keeps it in ru_maxrss).
_LAUNCHER = """
import os, subprocess, sys, threading
child = subprocess.Popen([sys.executable, "-m", "cbn_inspect", *sys.argv[2:]], stdout=subprocess.DEVNULL)
threading.Timer(float(sys.argv[1]), child.kill).start()
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, flush=True)
os._exit(0)
"""


def run_measured(*args: str, timeout: float = 180) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MB) of ``python -m cbn_inspect ARGS``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, str(timeout), *args], capture_output=True, text=True,
                          env=env, timeout=timeout + 30)
    code, peak_kb = (int(v) for v in done.stdout.split())
    return code, done.stderr, peak_kb / 1024


@pytest.mark.parametrize("name,expect", [
    ("stride0-zip", "claims 150994944 elements from a storage of 1"),
    ("stride0-legacy", "claims 150994944 elements from a storage of 1"),
    ("claims-3gb", "exceed --max-memory (storage '0': 3221225472 bytes)"),
    ("grid-4096", "layer conv on grid 4096x4096 (metadata)"),
    ("20000-layers", "20000 conv layers, more than --max-layers 10000"),
])
def test_attack_refused_within_max_memory(attacks, name, expect):
    code, err, peak = run_measured("report", str(attacks[name]), "--max-memory", str(LIMIT_MB))
    assert code == ResourceLimitError.exit_code == 7, err
    assert len(err.strip().splitlines()) == 1 and expect in err, err
    assert peak < LIMIT_MB, f"peak RSS {peak:.0f} MB"


def test_huge_grid_flag_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"conv.weight": np.ones((8, 8, 3, 3), np.float32)}, str(path))
    code, err, peak = run_measured("report", str(path), "--grid", "100000", "--max-memory", str(LIMIT_MB))
    assert code == 7 and "grid 100000x100000 (flag)" in err and len(err.strip().splitlines()) == 1, err
    assert peak < LIMIT_MB


def test_storage_larger_than_its_record_is_corrupt(attacks):
    """Within the memory bound, a storage its record cannot hold is a truncated file (exit 3), unallocated."""
    from cbn_inspect.errors import UnreadableInputError

    with pytest.raises(UnreadableInputError, match="truncated or corrupt: storage '0' claims 3221225472 bytes"):
        load(attacks["claims-3gb"], max_memory_mb=8000)


def test_views_within_storage_still_load(tmp_path):
    """A legitimate small stride-0 view and an ordinary file pass the pre-scan."""
    path = tmp_path / "ok.pt"
    torch.save({"a.weight": torch.randn(8, 4, 3, 3), "b.weight": torch.ones(1).expand(4, 4, 3, 3)}, path)
    loaded = load(path, max_memory_mb=512, identify=False)
    assert [layer.name for layer in loaded.layers] == ["a", "b"]


def test_max_layers_and_memory_in_the_library(planted_path):
    loaded = load(planted_path)
    with pytest.raises(ResourceLimitError, match="more than --max-layers 3"):
        analyze_model(loaded, Settings(max_layers=3))
    with pytest.raises(ResourceLimitError, match="--max-memory 300 MB"):
        analyze_model(loaded, Settings(max_memory_mb=300, grid=(4096, 4096)))


def test_time_budget_between_layers(planted_path):
    loaded = load(planted_path)
    with pytest.raises(ResourceLimitError, match=r"time budget of 1e-09 s \(--timeout\) exceeded after 0 of 12"):
        analyze_model(loaded, Settings(timeout_s=1e-9))
    assert analyze_model(loaded, Settings(timeout_s=600)).layers


def test_hard_deadline_ends_a_stuck_step():
    script = ("import time; from cbn_inspect._limits import hard_deadline, HARD_DEADLINE_GRACE_S as G; "
              "import cbn_inspect._limits as L; L.HARD_DEADLINE_GRACE_S = 0.2; "
              "hard_deadline(0.3, 'x.pt'); time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 7
    assert done.stderr.strip().startswith("cbn-inspect: error: x.pt: time budget of 0.3 s (--timeout) exceeded")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_compressed_3gb_record_refused(tmp_path):
    """The issue's file: 3 MB on disk, a deflated record of 3 GiB of zeros (about 25 s to write)."""
    path = tmp_path / "deflated.pt"
    _claim_storage(path, compressed=True)
    assert path.stat().st_size < 4 * 2**20
    code, err, peak = run_measured("report", str(path), "--max-memory", str(LIMIT_MB))
    assert code == 7 and "exceed --max-memory" in err and peak < LIMIT_MB, err


def test_onnx_declared_input_size_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((16, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="stem")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight])
    path = tmp_path / "huge.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ResourceLimitError, match="layer stem on grid 100000x100000"):
        analyze_model(load(path), Settings(max_memory_mb=2000))


def test_trusted_trace_input_bounded(tmp_path):
    import torch.nn as nn

    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3)), path)
    with pytest.raises(ResourceLimitError, match="tracing at input 3x100000x100000"):
        load(path, trust_code=True, input_size="3x100000x100000")


def test_huge_dilation_refused_before_dilating(tmp_path):
    import json

    from safetensors.numpy import save_file

    path = tmp_path / "dilated.safetensors"
    layers = {"conv": {"grid": [32, 32], "dilation": [1000000, 1000000]}}
    save_file({"conv.weight": np.ones((8, 8, 3, 3), np.float32)}, str(path),
              metadata={"cbn_inspect.layers": json.dumps(layers)})
    with pytest.raises(ResourceLimitError, match="layer conv on grid 32x32 \\(metadata\\)"):
        analyze_model(load(path, identify=False), Settings(max_memory_mb=2000))


def test_report_timeout_is_exit_7_in_one_line(cli, planted_path):
    result = cli(str(planted_path), "--timeout", "0.000001")
    assert result.exit_code == 7
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "time budget of 1e-06 s (--timeout) exceeded" in result.stderr
    assert cli(str(planted_path), "--timeout", "0").exit_code == 2
