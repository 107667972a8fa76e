"""ONNX external data stays inside the model's folder (issue 22), on the weight side and with --activations.

Every hostile location points at a FIFO outside the model's folder (or is one): a reader that opened it
would block, so a test that finishes in seconds shows that nothing opened it. A watchdog opens the write
end after a while so that a broken protection fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from cbn_inspect.errors import UnreadableInputError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from test_hostile_input import one_error_line  # noqa: E402

WATCHDOG_S = 20.0


def _model(folder, location: str, *, offset: int = 0, length: int | None = None):
    """model.onnx in ``folder``: one 3x3 conv whose weight is external data at ``location``."""
    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entries = {"location": location, "offset": str(offset), "length": str(length if length is not None else 4 * 108)}
    for key, value in entries.items():
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


class _Watchdog:
    """Opens the FIFO's write end after WATCHDOG_S, so that a reader blocked on it returns (and fails)."""

    def __init__(self, fifo) -> None:
        self.fifo, self.done = str(fifo), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if not self.done.wait(WATCHDOG_S):
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            except OSError:
                pass

    def stop(self) -> None:
        self.done.set()


@pytest.fixture
def outside(tmp_path):
    """A FIFO outside the model's folder (tmp_path/model/)."""
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    return fifo


def _hostile(tmp_path, outside, case: str):
    folder = tmp_path / "model"
    if case == "parent":
        return _model(folder, "../secret.fifo")
    if case == "absolute":
        return _model(folder, str(outside))
    if case == "symlink":
        folder.mkdir()
        os.symlink(outside, folder / "weights.bin")
        return _model(folder, "weights.bin")
    if case == "linked-folder":
        folder.mkdir()
        os.symlink(tmp_path, folder / "up")
        return _model(folder, "up/secret.fifo")
    if case == "fifo-inside":
        folder.mkdir()
        os.mkfifo(folder / "weights.bin")
        return _model(folder, "weights.bin")
    if case == "device":
        folder.mkdir()
        os.symlink("/dev/zero", folder / "weights.bin")
        return _model(folder, "weights.bin")
    if case == "past-end":
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"\0" * 64)
        return _model(folder, "weights.bin", offset=32, length=432)
    raise AssertionError(case)


CASES = ["parent", "absolute", "symlink", "linked-folder", "fifo-inside", "device", "past-end"]


@pytest.mark.parametrize("side", ["weights", "activations"])
@pytest.mark.parametrize("case", CASES)
def test_external_data_outside_the_folder_is_refused(cli, tmp_path, outside, case, side):
    path = _hostile(tmp_path, outside, case)
    watchdog = _Watchdog(outside if case != "fifo-inside" else path.parent / "weights.bin")
    started = time.monotonic()
    try:
        args = [path] + (["--activations", "noise", "--max-inputs", "2"] if side == "activations" else [])
        result = cli(*args)
    finally:
        watchdog.stop()
    assert time.monotonic() - started < WATCHDOG_S / 2, "a read blocked on the FIFO"
    line = one_error_line(result, 3)
    assert "external data" in line and "refused" in line


@pytest.mark.parametrize("case", CASES)
def test_the_runner_refuses_the_same_locations(tmp_path, outside, case):
    """The runner loads through the same check (it would be reached with the weight side bypassed)."""
    from cbn_inspect.activations._onnx import OnnxRunner

    path = _hostile(tmp_path, outside, case)
    watchdog = _Watchdog(outside if case != "fifo-inside" else path.parent / "weights.bin")
    try:
        with pytest.raises(UnreadableInputError, match="external data"):
            OnnxRunner(path, side="input", device="cpu", trust_code=False)
    finally:
        watchdog.stop()


def test_external_data_inside_the_folder_loads_on_both_sides(cli, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(np.ones((4, 3, 3, 3), np.float32).tobytes())
    path = _model(folder, "weights.bin")
    report = cli.json(path, "--activations", "noise", "--max-inputs", "4")
    assert [layer["name"] for layer in report["layers"]] == ["conv"]
    assert report["activations"]["layers"][0]["name"] == "conv"


@pytest.mark.parametrize("case", ["parent", "absolute", "symlink"])
def test_onnx_itself_refuses_outside_paths_too(tmp_path, case):
    """The pinned onnx (>= 1.22) refuses these on its own: the second line of defence is there."""
    from onnx.external_data_helper import load_external_data_for_model

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(108, np.float32).tobytes())
    folder = tmp_path / "model"
    if case == "symlink":
        folder.mkdir()
        os.symlink(secret, folder / "weights.bin")
    path = _model(folder, {"parent": "../secret.bin", "absolute": str(secret), "symlink": "weights.bin"}[case])
    model = onnx.load(str(path), load_external_data=False)
    with pytest.raises(Exception):
        load_external_data_for_model(model, str(folder))
