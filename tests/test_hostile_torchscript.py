"""Hostile TorchScript archives: without --trust-code nothing in them runs (sentinels), with it they run.

Each archive's ``__setstate__`` does something ``torch.jit.load`` would execute: write a file through
``torch.from_file(path, True, n)``, loop forever, or allocate 8 GB. ``report``, ``layers`` and ``audit``
without flags must read the conv weights statically, leave no sentinel file, and finish.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Tuple

import pytest
import torch
import torch.nn as nn

from cbn_inspect.errors import UnsafeContentError
from cbn_inspect.loaders import load


class Writer(nn.Module):
    """Creates (and writes) ``path`` when unpickled by the TorchScript runtime."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.buf = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.buf = torch.from_file(self.path, True, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Looper(nn.Module):
    """Never finishes unpickling."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 1

    @torch.jit.export
    def __getstate__(self) -> Tuple[int, bool]:
        return (self.n, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[int, bool]) -> None:
        self.n = state[0]
        self.training = state[1]
        i = 0
        while self.n > 0:
            i += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Allocator(nn.Module):
    """Asks for 8 GB when unpickled."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 2**31
        self.buf = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> Tuple[int, bool]:
        return (self.n, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[int, bool]) -> None:
        self.n = state[0]
        self.training = state[1]
        self.buf = torch.ones(self.n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _net(middle: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), middle,
                         nn.Conv2d(8, 4, 3, groups=2, padding=1, padding_mode="circular")).eval()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("hostile")
    sentinel = folder / "SENTINEL"
    made = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, middle in (("writer", Writer(str(sentinel))), ("looper", Looper()), ("allocator", Allocator())):
            net = _net(middle)
            path = folder / f"{name}.pt"
            torch.jit.save(torch.jit.script(net), str(path))
            made[name] = (path, {k: v.detach().clone() for k, v in net.state_dict().items()})
    assert not sentinel.exists()
    return {"folder": folder, "sentinel": sentinel, "archives": made}


@pytest.mark.parametrize("name", ["writer", "looper", "allocator"])
def test_static_read_gets_the_weights_and_runs_nothing(hostile, name):
    path, state = hostile["archives"][name]
    loaded = load(path)
    assert [layer.name for layer in loaded.layers] == ["0", "2"]
    assert loaded.order_source == "metadata"  # the static order of forward's calls
    first, second = loaded.layers
    assert first.stride == (2, 2) and first.geometry_source == "metadata"
    assert second.groups == 2 and second.padding_mode == "circular"
    for layer in loaded.layers:
        assert torch.equal(layer.weight.load(), state[f"{layer.name}.weight"])
    assert any("not run" in note for note in loaded.source.notes)
    assert not hostile["sentinel"].exists()


def test_input_size_without_trust_refuses_to_run(hostile):
    path, _ = hostile["archives"]["writer"]
    with pytest.raises(UnsafeContentError, match="--trust-code"):
        load(path, input_size="16")
    assert not hostile["sentinel"].exists()


_DRIVER = """
import json, sys
from typer.testing import CliRunner
from cbn_inspect.cli import app, route
runner = CliRunner()
files, folder = sys.argv[1:-1], sys.argv[-1]
codes = {}
for f in files:
    for cmd in (["report", f], ["layers", f, "--json", "-"], ["report", f, "--input-size", "16"]):
        r = runner.invoke(app, route(cmd))
        codes[" ".join(cmd[:1] + cmd[2:]) + " " + f.rsplit("/", 1)[-1]] = [r.exit_code, r.stderr.strip()]
r = runner.invoke(app, ["audit", folder, "--jobs", "1", "--quiet", "--timeout", "60",
                        "--out", folder + "/audit.jsonl"])
codes["audit"] = [r.exit_code, r.stderr.strip()]
print(json.dumps(codes))
"""


def test_cli_report_layers_audit_run_nothing(hostile):
    """In a subprocess with a deadline: a looping archive that ran would hang it."""
    files = [str(hostile["archives"][n][0]) for n in ("writer", "looper", "allocator")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", _DRIVER, *files, str(hostile["folder"])], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    for key, (code, err) in codes.items():
        if "--input-size" in key:
            assert code == 5 and "--trust-code" in err and len(err.splitlines()) == 1, (key, err)
        else:
            assert code == 0, (key, err)
    rows = [json.loads(line) for line in (hostile["folder"] / "audit.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(row.get("error") is None for row in rows), rows
    assert not hostile["sentinel"].exists()


def test_trusted_program_runs_as_before(hostile):
    path, _ = hostile["archives"]["writer"]
    loaded = load(path, trust_code=True, input_size="16")
    assert loaded.order_source == "trace"
    assert [layer.grid for layer in loaded.layers] == [(16, 16), (8, 8)]
    assert hostile["sentinel"].exists()  # the program's own code ran: only with trust
    hostile["sentinel"].unlink()


def test_policy_is_the_one_place():
    from cbn_inspect.loaders import _policy

    assert _policy.allowed("safetensors", "read", False)
    assert not _policy.allowed("torchscript", "run-program", False)
    assert _policy.allowed("torchscript", "run-program", True)
    assert not _policy.allowed("pytorch", "unpickle-objects", False)
    assert {p.name for p in _policy.FORMATS} == {"safetensors", "pytorch", "torchscript", "onnx", "tflite", "keras", "timm"}
    assert all(p.needs_trust for p in _policy.FORMATS if p.name in {f for f, _ in _policy.RUNS_FILE_CODE})
    assert 256 <= _policy.default_max_memory_mb()
    security = (Path(__file__).resolve().parents[1] / "SECURITY.md").read_text()
    assert "--trust-code" in security and "--max-memory" in security


def test_foreign_globals_in_data_pkl_are_refused_not_called(tmp_path):
    """A hand-made archive whose data.pkl would call os.system: refused as unreadable, nothing runs."""
    import pickle
    import zipfile

    from cbn_inspect.errors import UnreadableInputError

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        archive.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("evil/code/__torch__.py", "class M(Module):\n  pass\n")
        archive.writestr("evil/version", "3")
    with pytest.raises(UnreadableInputError, match="names posix.system|names os.system"):
        load(path)
    assert not marker.exists()
