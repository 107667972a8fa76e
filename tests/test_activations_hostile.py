"""Hostile activation inputs (issue 22): tensor files, images and folders, each refused or skipped in seconds.

Every refusal is a documented exit code with one stderr line and no traceback; nothing blocks on a FIFO or
reads a device; nothing is decoded or materialised past the budgets of :mod:`cbn_inspect.activations._guard`.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cbn_inspect.activations._guard import INPUT_ABS_LIMIT, MAX_INPUTS
from cbn_inspect.activations.inputs import ModelInput, open_inputs, resolve_preprocessing
from cbn_inspect.errors import ResourceLimitError, UnreadableInputError
from cbn_inspect.records import ActivationSettings

from test_hostile_input import one_error_line

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny executable model: the bundled circular-stack format (3 -> 4 -> 4 channels, 8x8)."""

    path = tmp_path_factory.mktemp("model") / "stack.safetensors"
    g = torch.Generator().manual_seed(0)
    weights = {f"layers.{i}.weight": torch.randn(4, 3 if i == 0 else 4, 8, 8, generator=g) * 0.05 for i in range(2)}
    import json

    layers = {f"layers.{i}": {"padding_mode": "circular", "stride": [1, 1], "groups": 1, "grid": [8, 8]}
              for i in range(2)}
    save_file(weights, str(path), metadata={"cbn_inspect.layers": json.dumps(layers),
                                            "cbn_inspect.order": json.dumps(list(layers)),
                                            "cbn_inspect.activation": "relu"})
    return path


def _run(cli, model, inputs, *extra):
    started = time.monotonic()
    result = cli(model, "--activations", inputs, *extra)
    assert time.monotonic() - started < 30
    return result


RGB = ModelInput(channels=3, spatial=(24, 32))


def _stream(spec, room=None, **kwargs):
    settings = ActivationSettings(spec, **kwargs)
    return open_inputs(spec, resolve_preprocessing(RGB, settings), settings, room_bytes=room)


# ---- tensor files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_or_skipped(cli, model_path, tmp_path, value):
    data = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    data[2, 1, 3, 3] = value
    path = tmp_path / "x.npy"
    np.save(path, data)
    line = one_error_line(_run(cli, model_path, path), 3)
    assert "non-finite" in line and "input 2" in line and "--skip-nonfinite" in line
    report = cli.json(model_path, "--activations", path, "--skip-nonfinite")
    assert report["activations"]["inputs"]["count"] == 5
    assert any("skipped for non-finite" in note for note in report["activations"]["inputs"]["notes"])


@pytest.mark.parametrize("value,dtype", [(np.finfo(np.float32).max, np.float32), (1e300, np.float64),
                                         (1e16, np.float64)])
def test_values_that_would_overflow_are_refused(cli, model_path, tmp_path, value, dtype):
    data = np.zeros((3, 3, 8, 8), dtype)
    data[1, 0, 0, 0] = value
    path = tmp_path / "big.pt"
    torch.save(torch.from_numpy(data), path)
    line = one_error_line(_run(cli, model_path, path), 3)
    assert "would overflow" in line and f"{INPUT_ABS_LIMIT:.0e}" in line


def test_a_stride_0_view_over_a_huge_shape_is_never_materialised(cli, model_path, tmp_path):
    path = tmp_path / "expanded.pt"
    torch.save(torch.zeros(1).expand(10**9, 3, 8, 8), path)
    assert path.stat().st_size < 10_000
    line = one_error_line(_run(cli, model_path, path), 7)
    assert "stride" in line and "refused" in line
    huge = tmp_path / "huge_input.pt"
    torch.save(torch.zeros(1).expand(2, 4, 200_000, 200_000), huge)
    with pytest.raises(ResourceLimitError):
        _stream(str(huge))


def test_a_zip_bomb_in_a_pt_file_is_refused_before_inflating(tmp_path):
    plain = io.BytesIO()
    torch.save(torch.zeros(40_000_000, dtype=torch.float32), plain)  # 160 MB of zeros
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(io.BytesIO(plain.getvalue())) as src, \
            zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert bomb.stat().st_size < 2_000_000
    started = time.monotonic()
    with pytest.raises(ResourceLimitError):
        _stream(str(bomb), room=64 * 2**20)
    assert time.monotonic() - started < 5


def test_inputs_that_are_not_regular_files_are_refused_without_blocking(cli, model_path, tmp_path):
    fifo = tmp_path / "inputs.npy"
    os.mkfifo(fifo)
    line = one_error_line(_run(cli, model_path, fifo), 3)
    assert "FIFO" in line
    device = tmp_path / "zero.npy"
    os.symlink("/dev/zero", device)
    assert "device" in one_error_line(_run(cli, model_path, device), 3)


def test_max_inputs_is_bounded_at_once(cli, model_path):
    started = time.monotonic()
    line = one_error_line(cli(model_path, "--activations", "noise", "--max-inputs", "1000000000"), 7)
    assert time.monotonic() - started < 5 and "--max-inputs" in line


def test_a_safetensors_input_too_large_for_memory_is_refused(tmp_path):
    path = tmp_path / "inputs.safetensors"
    save_file({"inputs": torch.zeros(64, 3, 24, 32)}, str(path))
    with pytest.raises(ResourceLimitError, match="does not fit"):
        _stream(str(path), room=1 * 2**20)


# ---- images ------------------------------------------------------------------------------------------------

def _png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (greyscale), with a tiny, truncated IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")


def _tiff(width: int, height: int) -> bytes:
    """A little-endian TIFF declaring width x height greyscale in one uncompressed strip of 16 bytes."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8 + 2 + 10 * 12 + 4),
               (277, 3, 1), (278, 4, height), (279, 4, width * height), (284, 3, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", tag, kind, 1, value)
                                                     for tag, kind, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 16


def _good(folder, name="good.png"):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / name)


@pytest.mark.parametrize("name,content", [
    ("bomb.png", _png(30000, 30000)),
    ("strip.png", _png(100_000_000, 1)),
    ("narrow.png", _png(20_000_000, 1)),  # under Pillow's limit, but billions of pixels once resized
    ("bomb.tiff", _tiff(30000, 30000)),
])
def test_decompression_bombs_are_skipped_before_decoding(cli, tmp_path, name, content):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / name).write_bytes(content)
    started = time.monotonic()
    with pytest.raises(ResourceLimitError, match="pixel budget"):
        list(_stream(str(folder)).batches(4))
    _good(folder)
    stream = _stream(str(folder))
    assert sum(len(b) for b in stream.batches(4)) == 1
    assert any(name in note and "skipped" in note for note in stream.notes)
    assert time.monotonic() - started < 10


def test_a_folder_of_only_bombs_is_one_line_exit_7(cli, model_path, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(_png(30000, 30000))
    line = one_error_line(cli(model_path, "--activations", folder), 7)
    assert "pixel budget" in line


def test_truncated_and_damaged_images_are_skipped_with_a_note(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (folder / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "header_only.png").write_bytes(_png(64, 64)[:40])
    _good(folder)
    started = time.monotonic()
    stream = _stream(str(folder))
    assert sum(len(b) for b in stream.batches(4)) == 1
    assert time.monotonic() - started < 10
    assert any("cut.jpg" in note and "header_only.png" in note for note in stream.notes)


def test_folder_walks_pass_over_loops_fifos_and_devices(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _good(folder, "a.png")
    os.symlink("loop.png", folder / "loop.png")  # a link to itself
    os.symlink(".", folder / "up")  # a link to the folder itself
    os.mkfifo(folder / "fifo.png")
    os.symlink("/dev/zero", folder / "zero.png")
    started = time.monotonic()
    stream = _stream(str(folder))
    assert stream.count == 1 and sum(len(b) for b in stream.batches(4)) == 1
    assert time.monotonic() - started < 10
    note = next(n for n in stream.notes if "passed over" in n)
    assert "fifo.png" in note and "zero.png" in note and "loop.png" in note


def test_a_model_that_overflows_on_its_inputs_is_exit_6(tmp_path):
    from cbn_inspect import inspect_source
    from cbn_inspect.errors import AnalysisError

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1))
    with torch.no_grad():
        model[0].weight.fill_(1e30)
    data = tmp_path / "x.npy"
    np.save(data, np.ones((4, 3, 8, 8), np.float32) * 1e10)
    with pytest.raises(AnalysisError, match="non-finite"):
        inspect_source(model, input_size="3x8x8", activations=ActivationSettings(str(data), input_size=(8, 8)))


def test_the_input_checks_read_nothing_past_the_count(tmp_path):
    """--max-inputs bounds the scan too: a NaN past the inputs used is not an error."""
    data = np.zeros((10, 3, 24, 32), np.float32)
    data[9, 0, 0, 0] = np.nan
    path = tmp_path / "x.npy"
    np.save(path, data)
    assert _stream(str(path), max_inputs=5).count == 5
    with pytest.raises(UnreadableInputError, match="non-finite"):
        _stream(str(path))
