"""TensorFlow SavedModel and Core ML sources: one line naming the conversion, exit 3; one audit item each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cbn_inspect.batch.sources import expand_sources
from cbn_inspect.errors import UnreadableInputError
from cbn_inspect.loaders import load

PROTO_HEAD = b"\x08\x01\x12\x10\x0a\x0e"  # a SavedModel's / .mlmodel's first bytes: they look like ONNX's


def savedmodel(root: Path) -> Path:
    folder = root / "exported"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(PROTO_HEAD + b"meta graph" * 20)
    (folder / "variables" / "variables.index").write_bytes(b"\x00" * 32)
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(b"\x00" * 64)
    return folder


def mlpackage(root: Path) -> Path:
    folder = root / "model.mlpackage"
    (folder / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (folder / "Manifest.json").write_text('{"fileFormatVersion": "1.0.0"}')
    (folder / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(PROTO_HEAD + b"spec" * 20)
    (folder / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(b"\x00" * 64)
    return folder


@pytest.mark.parametrize("make, words", [
    (savedmodel, ("TensorFlow SavedModel", "tf2onnx")),
    (lambda root: savedmodel(root) / "saved_model.pb", ("TensorFlow SavedModel", "tf2onnx")),
    (mlpackage, ("Core ML package", "coremltools")),
    (lambda root: mlpackage(root) / "Data" / "com.apple.CoreML" / "model.mlmodel", ("Core ML", "coremltools")),
])
def test_refused_with_the_conversion_route(tmp_path, make, words):
    source = make(tmp_path)
    with pytest.raises(UnreadableInputError) as info:
        load(source)
    assert info.value.exit_code == 3
    assert all(word in info.value.one_line() for word in words)


def test_standalone_mlmodel_file(tmp_path):
    path = tmp_path / "classifier.mlmodel"
    path.write_bytes(PROTO_HEAD + b"spec" * 20)
    with pytest.raises(UnreadableInputError, match="Core ML model"):
        load(path)


def test_cli_one_line_exit_3(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cbn_inspect", str(savedmodel(tmp_path))], capture_output=True, text=True)
    assert done.returncode == 3
    assert len(done.stderr.strip().splitlines()) == 1 and "tf2onnx" in done.stderr and "Traceback" not in done.stderr


def test_audit_treats_each_folder_as_one_item(tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    savedmodel(zoo)
    mlpackage(zoo)
    skipped: list = []
    items = expand_sources([str(zoo)], skipped)
    assert sorted(Path(i.source).name for i in items) == ["exported", "model.mlpackage"]
    assert skipped == []
    # the folder itself given to audit is one item too
    assert [Path(i.source).name for i in expand_sources([str(zoo / "exported")])] == ["exported"]
