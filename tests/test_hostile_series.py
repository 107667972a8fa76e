"""Series metadata and default bounds under attack (issue 22): each case one documented line, in seconds.

Steps are bounded integers (0 to 2**63 - 1): ``1e400``, Inf, NaN and 5,000-digit steps in safetensors
metadata, checkpoint keys, file names and Monitor files are exit 9 with one line, never exit 70. A metadata
grid of 4096 is refused under the default ``--max-memory`` before anything is allocated.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cbn_inspect.errors import StepOrderError
from cbn_inspect.series.steps import MAX_STEP, order_by_step, step_from_file, step_from_name

from test_hostile_input import one_error_line


def _weights(scale: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 4, 3, 3, generator=g) * scale}


@pytest.mark.parametrize("value", ["1e400", "9" * 5000, "inf", "NaN", str(2**64), "9" * 80])
def test_absurd_metadata_steps_are_exit_9(cli, tmp_path, value):
    save_file(_weights(), str(tmp_path / "a.safetensors"), metadata={"step": "1"})
    save_file(_weights(0.5), str(tmp_path / "b.safetensors"), metadata={"step": value})
    started = time.monotonic()
    result = cli("track", tmp_path, "-q")
    assert time.monotonic() - started < 20
    if value in ("inf", "NaN"):  # words, not numbers: no step in the file, and none in the name either
        line = one_error_line(result, 9)
        assert "no training step" in line or "mixed step sources" in line
    else:
        line = one_error_line(result, 9)
        assert "b.safetensors" in line and "2**63 - 1" in line


@pytest.mark.parametrize("value", [10**4000 * 10**1000, 2**64, float("inf"), float("nan"), 1e300],
                         ids=["5001-digits", "2**64", "inf", "nan", "1e300"])
def test_absurd_checkpoint_steps_are_exit_9(tmp_path, value):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": _weights(), "global_step": value}, path)
    with pytest.raises(StepOrderError) as info:  # out of range, or (torch refuses the pickle) no step
        order_by_step([str(path)], "file")
    assert "\n" not in info.value.one_line() and len(info.value.one_line()) < 300
    if isinstance(value, float) or value == 2**64:
        assert "2**63 - 1" in info.value.one_line()


def test_steps_at_the_bound_are_kept(tmp_path):
    save_file(_weights(), str(tmp_path / "a.safetensors"), metadata={"step": str(MAX_STEP)})
    assert step_from_file(tmp_path / "a.safetensors").step == MAX_STEP
    save_file(_weights(), str(tmp_path / "b.safetensors"), metadata={"step": "1e3"})
    assert step_from_file(tmp_path / "b.safetensors").step == 1000


def test_huge_numbers_in_names_are_exit_9(tmp_path):
    name = "step_" + "9" * 200 + ".safetensors"
    with pytest.raises(StepOrderError, match="200 digits"):
        step_from_name(tmp_path / name)
    save_file(_weights(), str(tmp_path / name))
    save_file(_weights(), str(tmp_path / "step_1.safetensors"))
    with pytest.raises(StepOrderError):
        order_by_step([str(tmp_path / name), str(tmp_path / "step_1.safetensors")], "name")


def test_a_monitor_file_with_an_absurd_step_is_exit_3(cli, tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps({"step": 1, "layers": [], "bottleneck": {}}) + "\n"
                    + '{"step": 1e400, "layers": [], "bottleneck": {}}\n')
    line = one_error_line(cli("track", path, "-q"), 3)
    assert "line 2" in line


def test_a_metadata_grid_of_4096_is_refused_under_the_default_bound(cli, tmp_path, monkeypatch):
    """Whatever the machine: with the default bound at 4 GiB (a machine of 8 GiB), refused at once."""
    import cbn_inspect._limits as limits

    monkeypatch.setattr(limits, "default_max_memory_mb", lambda: 4096)
    from safetensors.numpy import save_file as save_numpy

    path = tmp_path / "grid4096.safetensors"
    save_numpy({"conv.weight": np.ones((8, 8, 3, 3), np.float32)}, str(path), metadata={"cbn_inspect.grid": "4096"})
    started = time.monotonic()
    line = one_error_line(cli(path, "-q"), 7)
    assert time.monotonic() - started < 20
    assert "grid 4096x4096" in line and "--max-memory 4096 MB" in line


def test_choosing_the_shown_steps_of_a_long_series_is_fast():
    """10,000 steps: the columns of the terminal table are picked in well under a second (was O(n^4))."""
    from cbn_inspect.report.series_terminal import pick_columns

    started = time.process_time()
    cols = pick_columns(10_000, 12, [0, 9_999, 5_000])
    assert time.process_time() - started < 2
    assert len(cols) == 12 and cols[0] == 0 and cols[-1] == 9_999 and 5_000 in cols
    gaps = np.diff(cols)
    assert gaps.max() <= 2 * gaps.min() + 1  # spread evenly
    assert pick_columns(5, 12, [0]) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_track_over_a_folder_mixing_formats_finishes(cli, tmp_path):
    """safetensors, zip and legacy .pt, a Lightning .ckpt, TorchScript and ONNX in one folder: rows, not minutes."""
    import shutil
    import warnings
    from pathlib import Path

    w = _weights()
    save_file(w, str(tmp_path / "step_1.safetensors"))
    torch.save(w, tmp_path / "step_2.pt")
    torch.save(w, tmp_path / "step_3.bin", _use_new_zipfile_serialization=False)
    torch.save({"state_dict": w, "global_step": 4}, tmp_path / "step_4.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3))), str(tmp_path / "step_5.pt"))
    shutil.copy(Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "onnx" / "model.onnx", tmp_path / "step_6.onnx")
    started = time.monotonic()
    result = cli("track", tmp_path, "-q", "--json", "-")
    assert time.monotonic() - started < 120
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["points"]) == 6
