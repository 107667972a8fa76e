"""Keras ``.h5`` and ``.keras`` files: declared layouts, geometry and grids from the config, BatchNorm folding,
spectra against dense references built from the Keras layout, weights-only files, hostile files."""

from __future__ import annotations

import json
import random
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cbn_inspect import Settings, inspect_source
from cbn_inspect.errors import CbnError, MissingExtraError
from cbn_inspect.loaders import detect_format, load

from tf_files import keras_layer, nhwc_operator, singular_values, write_keras_archive, write_keras_h5

pytest.importorskip("h5py")
RNG = np.random.default_rng(11)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


KERNELS = {"conv": _w(3, 3, 3, 4), "dw": _w(3, 3, 4, 2), "tr": _w(3, 3, 2, 8), "sep_dw": _w(3, 3, 2, 1),
           "sep_pw": _w(1, 1, 2, 5)}
BN = {"gamma": np.linspace(0.5, 2.0, 4).astype(np.float32), "beta": np.zeros(4, np.float32),
      "moving_mean": np.zeros(4, np.float32), "moving_variance": np.linspace(1.0, 4.0, 4).astype(np.float32)}
SENTINEL_CODE = "open('/tmp/cbn_inspect_keras_sentinel', 'w').write('ran')"


def functional(tmp_path: Path) -> Path:
    layers = [
        keras_layer("InputLayer", "input_1", None, batch_input_shape=[None, 6, 6, 3]),
        keras_layer("Conv2D", "conv", ["input_1"], filters=4, kernel_size=[3, 3], strides=[2, 2], padding="same",
                    dilation_rate=[1, 1]),
        keras_layer("BatchNormalization", "bn", ["conv"], axis=-1, epsilon=0.001),
        keras_layer("Lambda", "evil", ["bn"], function=[SENTINEL_CODE, None, None], function_type="lambda"),
        keras_layer("ReLU", "relu", ["bn"]),
        keras_layer("DepthwiseConv2D", "dw", ["relu"], kernel_size=[3, 3], strides=[1, 1], padding="same",
                    depth_multiplier=2, dilation_rate=[1, 1]),
        keras_layer("Conv2DTranspose", "tr", ["dw"], filters=2, kernel_size=[3, 3], strides=[2, 2], padding="same",
                    dilation_rate=[1, 1]),
        keras_layer("MaxPooling2D", "pool", ["tr"], pool_size=[2, 2], padding="valid"),
        keras_layer("SeparableConv2D", "sep", ["pool"], filters=5, kernel_size=[3, 3], strides=[1, 1],
                    padding="valid", dilation_rate=[1, 1], depth_multiplier=1),
    ]
    weights = {"conv": {"kernel": KERNELS["conv"]}, "bn": BN, "dw": {"depthwise_kernel": KERNELS["dw"]},
               "tr": {"kernel": KERNELS["tr"], "bias": np.zeros(2, np.float32)},
               "sep": {"depthwise_kernel": KERNELS["sep_dw"], "pointwise_kernel": KERNELS["sep_pw"]}}
    return write_keras_h5(tmp_path / "model.h5", layers, weights)


def test_h5_layers_layouts_grids_and_batchnorm(tmp_path):
    path = functional(tmp_path)
    assert detect_format(path) == "keras-h5"
    loaded = load(path)
    assert [layer.name for layer in loaded.layers] == ["conv", "dw", "tr", "sep/depthwise", "sep/pointwise"]
    conv, dw, tr, sdw, spw = loaded.layers
    assert (conv.shape, conv.stride, conv.grid) == ((4, 3, 3, 3), (2, 2), (6, 6))
    np.testing.assert_array_equal(conv.weight.load().numpy(), KERNELS["conv"].transpose(3, 2, 0, 1))
    assert conv.batchnorm is not None and conv.batchnorm.eps == pytest.approx(1e-3)
    np.testing.assert_allclose(conv.batchnorm.running_var.numpy(), BN["moving_variance"])
    assert (dw.shape, dw.groups, dw.grid) == ((8, 1, 3, 3), 4, (3, 3))
    assert dw.weight.load().numpy()[5, 0, 1, 2] == KERNELS["dw"][1, 2, 2, 1]  # out channel c*m + q = 2*2 + 1
    assert tr.transposed and tr.shape == (8, 2, 3, 3) and tr.grid == (3, 3) and tr.in_channels == 8
    assert sdw.grid == (3, 3) and spw.grid == (1, 1) and spw.shape == (5, 2, 1, 1)  # pool 6x6 -> 3x3; valid 3x3 -> 1x1
    assert all(layer.geometry_source == "metadata" and layer.grid_source == "metadata" for layer in loaded.layers)
    assert not Path("/tmp/cbn_inspect_keras_sentinel").exists()  # the Lambda's code is never run


def _tool_values(report, index):
    s = report.layers[index].spectrum
    return np.sort(np.repeat(s.values[:, :s.width], s.multiplicity, axis=0).ravel())[::-1]


def test_h5_spectra_match_dense_references_in_the_keras_layout(tmp_path):
    report = inspect_source(functional(tmp_path), Settings(keep_spectra=True, precision="float64", fold_batchnorm=False))
    conv = {"c_out": 4, "c_in": 3, "ksize": (3, 3), "at": lambda k, o, c, x: k[x[0], x[1], c, o]}
    dw = {"c_out": 8, "c_in": 4, "ksize": (3, 3), "at": lambda k, o, c, x: k[x[0], x[1], c, o % 2] if o // 2 == c else 0}
    # Conv2DTranspose: the adjoint of the strided conv from its 2 output channels (fine grid) to its 8 inputs
    tr = {"c_out": 8, "c_in": 2, "ksize": (3, 3), "at": lambda k, o, c, x: k[x[0], x[1], c, o]}
    cases = [(0, KERNELS["conv"], (6, 6), (2, 2), conv), (1, KERNELS["dw"], (3, 3), (1, 1), dw),
             (2, KERNELS["tr"], (6, 6), (2, 2), tr)]
    for index, kernel, grid, stride, spec in cases:
        dense = singular_values(nhwc_operator(kernel.astype(np.float64), grid, stride, (1, 1), spec))
        tool = _tool_values(report, index)
        n = min(len(tool), len(dense))
        np.testing.assert_allclose(tool[:n], dense[:n], rtol=1e-6, atol=1e-9 * dense[0])


def keras3_config():
    def tensor(name, shape):
        return {"class_name": "__keras_tensor__", "config": {"shape": shape, "dtype": "float32",
                                                             "keras_history": [name, 0, 0]}}

    inner = {"class_name": "Sequential", "config": {"name": "block", "layers": [
        {"class_name": "InputLayer", "config": {"name": "block_in", "batch_shape": [None, 8, 4]}},
        {"class_name": "Conv1D", "config": {"name": "c1", "filters": 4, "kernel_size": [3], "strides": [1],
                                            "padding": "causal", "dilation_rate": [2]},
         "build_config": {"input_shape": [None, 8, 4]}}]}}
    return {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_shape": [None, 4, 6, 6, 2]},
         "inbound_nodes": []},
        {"class_name": "Conv3D", "name": "c3", "config": {"name": "c3", "filters": 3, "kernel_size": [2, 3, 3],
                                                          "strides": [1, 1, 1], "padding": "same",
                                                          "dilation_rate": [1, 1, 1], "groups": 1},
         "inbound_nodes": [{"args": [tensor("x", [None, 4, 6, 6, 2])], "kwargs": {}}]},
        inner,
    ]}}


def test_keras3_archive_with_nested_model(tmp_path):
    k3, k1 = _w(2, 3, 3, 2, 3), _w(3, 4, 4)
    # Keras 3 stores variables by class name in snake case, numbered per class: not by the layer's name
    path = write_keras_archive(tmp_path / "m.keras", keras3_config(), {("conv3d",): [k3, np.zeros(3, np.float32)],
                                                                      ("sequential", "conv1d"): [k1]})
    assert detect_format(path) == "keras"
    loaded = load(path)
    assert loaded.source.format == "keras" and loaded.source.metadata["keras_version"] == "3.6.0"
    c3, c1 = loaded.layers
    assert (c3.name, c3.shape, c3.grid) == ("c3", (3, 2, 2, 3, 3), (4, 6, 6))
    np.testing.assert_array_equal(c3.weight.load().numpy(), k3.transpose(4, 3, 0, 1, 2))
    assert (c1.name, c1.shape, c1.grid, c1.dilation) == ("block/c1", (4, 4, 3), (8,), (2,))


def test_keras3_numbering_per_class_and_older_name_paths(tmp_path):
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": [None, 6, 6, 2]}},
        {"class_name": "Conv2D", "config": {"name": "first", "filters": 3, "kernel_size": [3, 3], "padding": "same"},
         "build_config": {"input_shape": [None, 6, 6, 2]}},
        {"class_name": "BatchNormalization", "config": {"name": "bn", "axis": -1, "epsilon": 0.01}},
        {"class_name": "Conv2D", "config": {"name": "second", "filters": 2, "kernel_size": [1, 1], "padding": "same"},
         "build_config": {"input_shape": [None, 6, 6, 3]}},
    ]}}
    k1, k2 = _w(3, 3, 2, 3), _w(1, 1, 3, 2)
    bn = [np.ones(3, np.float32), np.zeros(3, np.float32), np.zeros(3, np.float32), np.full(3, 2.0, np.float32)]
    new = load(write_keras_archive(tmp_path / "new.keras", config, {("conv2d",): [k1], ("batch_normalization",): bn,
                                                                     ("conv2d_1",): [k2]}))
    old = load(write_keras_archive(tmp_path / "old.keras", config, {("first",): [k1], ("bn",): bn, ("second",): [k2]}))
    for loaded in (new, old):
        first, second = loaded.layers
        np.testing.assert_array_equal(first.weight.load().numpy(), k1.transpose(3, 2, 0, 1))
        np.testing.assert_array_equal(second.weight.load().numpy(), k2.transpose(3, 2, 0, 1))
        assert first.batchnorm is not None and first.batchnorm.eps == pytest.approx(0.01)
        assert (first.grid, second.grid) == ((6, 6), (6, 6))


def test_weights_only_h5_reads_kernels_with_geometry_assumed(tmp_path):
    layers = [keras_layer("X", "conv2d", None), keras_layer("X", "conv2d_transpose", None), keras_layer("X", "dense", None)]
    weights = {"conv2d": {"kernel": KERNELS["conv"]}, "conv2d_transpose": {"kernel": KERNELS["tr"]},
               "dense": {"kernel": _w(4, 2)}}
    loaded = load(write_keras_h5(tmp_path / "w.h5", layers, weights, config=False))
    (conv,) = loaded.layers
    assert conv.shape == (4, 3, 3, 3) and conv.geometry_source == "assumed" and conv.grid is None
    assert loaded.skipped == (("conv2d_transpose", "no model config: Conv or ConvTranspose cannot be told apart"),)
    assert any("no model config" in note for note in loaded.source.notes)


def test_missing_h5py_is_exit_10(tmp_path, monkeypatch):
    path = functional(tmp_path)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingExtraError) as info:
        load(path)
    assert info.value.exit_code == 10 and "cbn-inspect[keras]" in info.value.one_line()


def test_hostile_h5_and_keras_files_give_documented_errors(tmp_path):
    h5 = functional(tmp_path).read_bytes()
    archive = write_keras_archive(tmp_path / "a.keras", keras3_config(), {("c3",): [_w(2, 3, 3, 2, 3)]}).read_bytes()
    rng = random.Random(5)
    mutants = [h5[:n] for n in (8, 100, len(h5) // 2)] + [archive[:n] for n in (30, len(archive) // 2)]
    mutants.append(b"\x89HDF\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(2000)))
    for _ in range(25):
        data = bytearray(h5)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(8, len(data))] = rng.getrandbits(8)
        mutants.append(bytes(data))
    bad_config = tmp_path / "cfg.keras"
    with zipfile.ZipFile(tmp_path / "a.keras") as src, zipfile.ZipFile(bad_config, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"{not json" if name == "config.json" else src.read(name))
    errors = 0
    settings = Settings(grid=(4, 4), default_grid=4, threads=1)
    for i, data in enumerate(mutants + [bad_config.read_bytes()]):
        path = tmp_path / f"m{i}.{'keras' if data[:2] == b'PK' else 'h5'}"
        path.write_bytes(data)
        try:
            inspect_source(path, settings)
        except CbnError as error:
            assert error.exit_code in (3, 4, 6, 7), error
            errors += 1
    assert errors >= 6


def test_sequential_h5_with_dynamic_input_takes_input_size(tmp_path):
    layers = [
        keras_layer("Conv2D", "c1", None, filters=4, kernel_size=[3, 3], strides=[2, 2], padding="same",
                    batch_input_shape=[None, None, None, 3]),
        keras_layer("UpSampling2D", "up", None, size=[2, 2]),
        keras_layer("ZeroPadding2D", "pad", None, padding=[[1, 1], [0, 2]]),
        keras_layer("Conv2D", "c2", None, filters=2, kernel_size=[3, 3], padding="valid"),
    ]
    for entry in layers:
        entry.pop("inbound_nodes")
    weights = {"c1": {"kernel": _w(3, 3, 3, 4)}, "c2": {"kernel": _w(3, 3, 4, 2)}}
    path = tmp_path / "seq.h5"
    write_keras_h5(path, layers, weights)
    import h5py

    with h5py.File(path, "a") as f:  # a Keras 2 Sequential config
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": layers}})
    dynamic = load(path)
    assert [layer.grid for layer in dynamic.layers] == [None, None]
    assert any("--input-size" in note for note in dynamic.source.notes)
    fixed = load(path, input_size="3x20x16")
    assert [layer.grid for layer in fixed.layers] == [(20, 16), (22, 18)]  # 10x8 -> up 20x16 -> pad 22x18
    assert all(layer.grid_source == "metadata" for layer in fixed.layers)


def test_layers_listing_of_an_h5(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, "-m", "cbn_inspect", "layers", str(functional(tmp_path))],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "sep/pointwise" in done.stdout and "keras-h5" in done.stdout


def test_legacy_h5_with_a_nested_model(tmp_path):
    inner = {"class_name": "Sequential", "name": "block", "config": {"name": "block", "layers": [
        {"class_name": "Conv2D", "config": {"name": "conv2d_5", "filters": 2, "kernel_size": [3, 3], "padding": "same",
                                            "batch_input_shape": [None, 5, 5, 4]}}]},
        "inbound_nodes": [[["conv2d", 0, 0, {}]]]}
    layers = [keras_layer("InputLayer", "input_1", None, batch_input_shape=[None, 5, 5, 3]),
              keras_layer("Conv2D", "conv2d", ["input_1"], filters=4, kernel_size=[1, 1], padding="valid"), inner]
    outer, nested = _w(1, 1, 3, 4), _w(3, 3, 4, 2)
    path = write_keras_h5(tmp_path / "nested.h5", layers, {"conv2d": {"kernel": outer}})
    import h5py

    with h5py.File(path, "a") as f:  # the nested model's group holds its inner layers' weights
        group = f["model_weights"]["block"]
        group.create_dataset("conv2d_5/kernel:0", data=nested)
        group.attrs["weight_names"] = np.array([b"conv2d_5/kernel:0"])
    first, second = load(path).layers
    assert (first.name, second.name) == ("conv2d", "block/conv2d_5")
    np.testing.assert_array_equal(second.weight.load().numpy(), nested.transpose(3, 2, 0, 1))
    assert second.grid == (5, 5)


def test_hdf5_library_crash_or_endless_read_is_a_documented_error(tmp_path, monkeypatch):
    """The HDF5 C library runs in a forked child: a crash there is exit 3, an endless read exit 7."""
    import os
    import signal
    import time

    from cbn_inspect.loaders.tensorflow import _hdf5

    path = functional(tmp_path)
    monkeypatch.setattr(_hdf5, "_contents", lambda *args: os.kill(os.getpid(), signal.SIGSEGV))
    with pytest.raises(CbnError) as crashed:
        load(path)
    assert crashed.value.exit_code == 3 and "crashed" in crashed.value.one_line()
    monkeypatch.setattr(_hdf5, "_contents", lambda *args: time.sleep(30))
    monkeypatch.setattr(_hdf5, "READ_BASE_S", 0.5)
    started = time.monotonic()
    with pytest.raises(CbnError) as stuck:
        load(path)
    assert stuck.value.exit_code == 7 and time.monotonic() - started < 10
