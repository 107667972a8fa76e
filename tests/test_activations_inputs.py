"""Every INPUTS kind: noise, samples, a folder of images (with a non-image file), tensor files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbn_inspect.activations.inputs import SAMPLE_IMAGES, ModelInput, open_inputs, resolve_preprocessing
from cbn_inspect.errors import UsageError
from cbn_inspect.records import ActivationSettings

RGB = ModelInput(channels=3, spatial=(24, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                 interpolation="bicubic", crop_pct=0.875, source="test config")


def _stream(spec, model=RGB, **kwargs):
    settings = ActivationSettings(spec, **kwargs)
    return open_inputs(spec, resolve_preprocessing(model, settings), settings)


def _all(stream, batch_size=4):
    return torch.cat(list(stream.batches(batch_size)))


def test_noise_is_seeded_and_independent_of_batch_size():
    a = _all(_stream("noise", max_inputs=7), batch_size=3)
    b = _all(_stream("noise", max_inputs=7), batch_size=7)
    c = _all(_stream("noise", max_inputs=7, seed=1))
    assert a.shape == (7, 3, 24, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert _stream("noise").count == 64


def test_samples_are_bundled_photographs_preprocessed_by_the_config():
    stream = _stream("samples")
    x = _all(stream)
    assert x.shape == (len(SAMPLE_IMAGES), 3, 24, 32) and stream.seen == len(SAMPLE_IMAGES) >= 10
    described = stream.describe()
    assert described["kind"] == "samples" and described["count"] == len(SAMPLE_IMAGES)
    prep = described["preprocessing"]
    assert prep["mean"] == [0.5, 0.4, 0.3] and prep["interpolation"] == "bicubic" and prep["crop_pct"] == 0.875
    assert "centre crop to 24x32" in prep["resize"]
    # normalised: (pixel/255 - mean) / std stays within these bounds
    for c, (m, sd) in enumerate(zip(RGB.mean, RGB.std)):
        assert float(x[:, c].min()) >= (0 - m) / sd - 1e-5 and float(x[:, c].max()) <= (1 - m) / sd + 1e-5
    one = _all(_stream("samples", model=ModelInput(channels=1, spatial=(16, 16)), max_inputs=3))
    assert one.shape == (3, 1, 16, 16) and float(one.min()) >= 0 and float(one.max()) <= 1


def test_flags_override_the_config():
    settings = ActivationSettings("noise", input_size=(16,), mean=(0.0,), std=(1.0,), interpolation="nearest")
    prep = resolve_preprocessing(RGB, settings)
    assert prep.spatial == (16, 16) and prep.mean == (0.0,) and prep.interpolation == "nearest"
    assert set(prep.overridden) == {"input_size", "mean", "std", "interpolation"}
    with pytest.raises(UsageError, match="--input-size"):
        resolve_preprocessing(ModelInput(channels=3, spatial=None), ActivationSettings("noise"))


def test_folder_of_images_skips_a_non_image_file(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.png", "PNG")):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / name, fmt)
    (tmp_path / "notes.txt").write_text("not an image")
    stream = _stream(str(tmp_path))
    x = _all(stream, batch_size=2)
    assert x.shape == (3, 3, 24, 32)
    assert stream.describe()["count"] == 3
    assert any("notes.txt" in note and "skipped" in note for note in stream.notes)


def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "readme.md").write_text("# nothing")
    with pytest.raises(UsageError, match="no readable image"):
        _all(_stream(str(tmp_path)))


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors"])
def test_tensor_files_are_fed_as_they_are(tmp_path, suffix):
    data = torch.randn(5, 3, 10, 12)
    path = tmp_path / f"inputs{suffix}"
    if suffix == ".npy":
        np.save(path, data.numpy())
    elif suffix == ".pt":
        torch.save({"inputs": data}, path)
    else:
        from safetensors.torch import save_file

        save_file({"inputs": data}, str(path))
    stream = _stream(str(path), max_inputs=4)
    x = _all(stream, batch_size=3)
    assert torch.equal(x, data[:4])
    assert stream.describe()["preprocessing"]["input_shape"] == [3, 10, 12]
    assert stream.describe()["kind"] == "tensor-file"


def test_tensor_file_of_the_wrong_shape_and_missing_paths_are_usage_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 8, 8), dtype=np.float32))
    with pytest.raises(UsageError, match="do not fit"):
        _stream(str(tmp_path / "x.npy"))
    with pytest.raises(UsageError, match="no such file"):
        _stream(str(tmp_path / "missing"))
    torch.save({"a": torch.zeros(1), "b": torch.zeros(1)}, tmp_path / "two.pt")
    with pytest.raises(UsageError, match="2 tensors"):
        _stream(str(tmp_path / "two.pt"))


def test_images_need_a_2d_model():
    with pytest.raises(UsageError, match="2-D"):
        _stream("samples", model=ModelInput(channels=1, spatial=(64,), ndim=1))
