"""Ordering checkpoints by training step: each source of step numbers, and the errors for missing, mixed and
repeated steps (exit code 9, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cbn_inspect.errors import StepOrderError
from cbn_inspect.series import order_by_step, step_from_file, step_from_name

WEIGHT = {"layers.0.weight": torch.zeros(2, 1, 3, 3)}


def safetensors(path: Path, **metadata: str) -> str:
    save_file(WEIGHT, str(path), metadata=metadata or None)
    return str(path)


def lightning_ckpt(path: Path, **extra) -> str:
    torch.save({"state_dict": dict(WEIGHT), "pytorch-lightning_version": "2.6.6", **extra}, path)
    return str(path)


def steps(ordered) -> list[tuple[str, int]]:
    return [(Path(p).name, info.step) for p, info in ordered]


def test_safetensors_metadata_steps_win_over_names(tmp_path):
    # names say the opposite order: the metadata decides
    files = [safetensors(tmp_path / "a_1.safetensors", step="800"),
             safetensors(tmp_path / "b_2.safetensors", global_step="200"),
             safetensors(tmp_path / "c_3.safetensors", step="400", global_step="400")]
    ordered = order_by_step(files)
    assert steps(ordered) == [("b_2.safetensors", 200), ("c_3.safetensors", 400), ("a_1.safetensors", 800)]
    assert {info.origin for _, info in ordered} == {"metadata"}
    assert ordered[0][1].key == "global_step" and ordered[2][1].key == "step"
    assert "safetensors __metadata__" in ordered[0][1].describe()


def test_lightning_global_step_and_epoch(tmp_path):
    files = [lightning_ckpt(tmp_path / "last.ckpt", global_step=1200, epoch=3),
             lightning_ckpt(tmp_path / "early.ckpt", global_step=300, epoch=0)]
    ordered = order_by_step(files)
    assert steps(ordered) == [("early.ckpt", 300), ("last.ckpt", 1200)]
    assert ordered[1][1].origin == "checkpoint" and ordered[1][1].key == "global_step"
    assert ordered[1][1].epoch == 3
    # only epochs: ordered by epoch, and the unit says so
    only = [lightning_ckpt(tmp_path / "x.ckpt", epoch=2), lightning_ckpt(tmp_path / "y.ckpt", epoch=1)]
    ordered = order_by_step(only)
    assert steps(ordered) == [("y.ckpt", 1), ("x.ckpt", 2)] and ordered[0][1].unit == "epoch"
    # a tensor-valued step (some trainers save one) counts too
    assert step_from_file(lightning_ckpt(tmp_path / "t.ckpt", global_step=torch.tensor(7))).step == 7


@pytest.mark.parametrize("name, step, unit", [
    ("step_0400.safetensors", 400, "step"),
    ("epoch=3-step=1200.ckpt", 1200, "step"),
    ("checkpoint-500.pt", 500, "step"),
    ("model_10000.pth", 10000, "step"),
    ("resnet18_iter_20.pth", 20, "step"),
    ("global_step7.bin", 7, "step"),
    ("epoch_12.pt", 12, "epoch"),
])
def test_steps_from_file_names(name, step, unit):
    info = step_from_name(name)
    assert (info.step, info.unit, info.origin) == (step, unit, "file name")


@pytest.mark.parametrize("name", ["final.safetensors", "resnet18_400.pth", "model.ckpt"])
def test_names_without_one_clear_step(name):
    assert step_from_name(name) is None


def test_names_order_numerically_not_alphabetically(tmp_path):
    files = [safetensors(tmp_path / n) for n in ("step_1000.safetensors", "step_200.safetensors", "step_30.safetensors")]
    ordered = order_by_step(files)
    assert [s for _, s in steps(ordered)] == [30, 200, 1000]
    assert ordered[0][1].origin == "file name"


def test_given_order(tmp_path):
    files = [safetensors(tmp_path / n) for n in ("z.safetensors", "a.safetensors")]
    assert steps(order_by_step(files, "given")) == [("z.safetensors", 0), ("a.safetensors", 1)]


def test_missing_step_is_a_clear_error(tmp_path):
    files = [safetensors(tmp_path / "step_1.safetensors"), safetensors(tmp_path / "final.safetensors")]
    with pytest.raises(StepOrderError, match="no training step found for final.safetensors") as info:
        order_by_step(files)
    assert info.value.exit_code == 9


def test_mixed_sources_are_a_clear_error(tmp_path):
    files = [safetensors(tmp_path / "run_a.safetensors", step="5"), safetensors(tmp_path / "step_9.safetensors")]
    with pytest.raises(StepOrderError, match="mixed step sources: run_a.safetensors .* only inside the file"):
        order_by_step(files)
    # forcing one source works where every file has it
    assert steps(order_by_step(files, "given"))[0] == ("run_a.safetensors", 0)
    with pytest.raises(StepOrderError, match="no step in the file name for run_a.safetensors"):
        order_by_step(files, "name")


def test_mixed_units_are_a_clear_error(tmp_path):
    files = [lightning_ckpt(tmp_path / "a.ckpt", global_step=10), lightning_ckpt(tmp_path / "b.ckpt", epoch=1)]
    with pytest.raises(StepOrderError, match="mixed step units: a.ckpt give a training step, b.ckpt only an epoch"):
        order_by_step(files)


def test_repeated_steps_are_a_clear_error(tmp_path):
    files = [safetensors(tmp_path / "x.safetensors", step="10"), safetensors(tmp_path / "y.safetensors", step="10")]
    with pytest.raises(StepOrderError, match="two checkpoints at step 10: x.safetensors and y.safetensors"):
        order_by_step(files)


def test_cli_exit_code_and_one_line(tmp_path, cli):
    safetensors(tmp_path / "step_1.safetensors")
    safetensors(tmp_path / "final.safetensors")
    result = cli("track", str(tmp_path))
    assert result.exit_code == 9
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cbn-inspect: error: no training step found for final.safetensors")
    assert "Traceback" not in result.output
