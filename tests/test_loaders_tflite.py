"""TFLite flatbuffers: layouts, geometry, dequantisation, spectra against dense NHWC references, hostile files."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cbn_inspect import Settings, inspect_source
from cbn_inspect.errors import CbnError, MissingExtraError, UnreadableInputError, UsageError
from cbn_inspect.loaders import detect_format, load

from tf_files import (CONV_2D, CONV_3D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, Op, nhwc_operator, quantise,
                      singular_values, write_tflite)

pytest.importorskip("flatbuffers")
RNG = np.random.default_rng(7)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _stored(op: Op) -> np.ndarray:
    """The filter as the file holds it, dequantised the way TFLite does (the reference's weights)."""
    if op.stored == "float16":
        return op.filter.astype(np.float16).astype(np.float64)
    if op.stored.startswith("int8"):
        q, scales = quantise(op.filter, op.axis)
        shape = [1] * q.ndim
        shape[op.axis] = -1
        return q.astype(np.float64) * scales.astype(np.float64).reshape(shape)
    return op.filter.astype(np.float64)


def _reference(op: Op) -> np.ndarray:
    """Singular values of the operator, built from the TFLite layout directly (NHWC, circular)."""
    f = _stored(op)
    if op.code == CONV_2D:
        conv = {"c_out": f.shape[0], "c_in": f.shape[3], "ksize": f.shape[1:3], "at": lambda k, o, c, x: k[o, x[0], x[1], c]}
        return singular_values(nhwc_operator(f, op.input[1:3], op.stride, op.dilation, conv))
    if op.code == DEPTHWISE_CONV_2D:
        m = op.multiplier
        conv = {"c_out": f.shape[3], "c_in": op.input[3], "ksize": f.shape[1:3],
                "at": lambda k, o, c, x: k[0, x[0], x[1], o] if o // m == c else 0.0}
        return singular_values(nhwc_operator(f, op.input[1:3], op.stride, op.dilation, conv))
    if op.code == TRANSPOSE_CONV:  # the adjoint of the strided conv from the O-channel fine grid to I channels
        fine = tuple(n * s for n, s in zip(op.input[1:3], op.stride))
        conv = {"c_out": f.shape[3], "c_in": f.shape[0], "ksize": f.shape[1:3], "at": lambda k, o, c, x: k[c, x[0], x[1], o]}
        return singular_values(nhwc_operator(f, fine, op.stride, (1, 1), conv))
    conv = {"c_out": f.shape[4], "c_in": f.shape[3], "ksize": f.shape[:3], "at": lambda k, o, c, x: k[x[0], x[1], x[2], c, o]}
    return singular_values(nhwc_operator(f, op.input[1:4], op.stride, op.dilation, conv))


CASES = {
    "conv2d": Op(CONV_2D, (1, 6, 6, 3), _w(4, 3, 3, 3)),
    "conv2d-stride2-valid": Op(CONV_2D, (1, 6, 6, 3), _w(4, 3, 3, 3), padding=1, stride=(2, 2)),
    "conv2d-dilated-nonsquare": Op(CONV_2D, (1, 6, 5, 2), _w(3, 3, 2, 2), dilation=(2, 1)),
    "depthwise-multiplier2": Op(DEPTHWISE_CONV_2D, (1, 6, 6, 3), _w(1, 3, 3, 6), multiplier=2),
    "transpose-stride2": Op(TRANSPOSE_CONV, (1, 3, 3, 4), _w(2, 3, 3, 4), stride=(2, 2)),
    "conv3d": Op(CONV_3D, (1, 3, 4, 3, 2), _w(2, 2, 2, 2, 3), stride=(1, 1, 1), dilation=(1, 1, 1)),
    "int8-per-channel": Op(CONV_2D, (1, 6, 6, 3), _w(4, 3, 3, 3), stored="int8", axis=0),
    "int8-depthwise-behind-dequantize": Op(DEPTHWISE_CONV_2D, (1, 5, 5, 4), _w(1, 3, 3, 4), stored="int8-deq", axis=3),
    "float16-behind-dequantize": Op(CONV_2D, (1, 6, 6, 3), _w(4, 3, 3, 3), stored="float16"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_spectrum_matches_dense_nhwc_reference(tmp_path, name):
    op = CASES[name]
    path = write_tflite(tmp_path / f"{name}.tflite", [op])
    report = inspect_source(path, Settings(keep_spectra=True, precision="float64"))
    (layer,) = report.layers
    spectrum = layer.spectrum
    tool = np.sort(np.repeat(spectrum.values[:, :spectrum.width], spectrum.multiplicity, axis=0).ravel())[::-1]
    dense = _reference(op)
    n = min(len(tool), len(dense))
    assert n >= 0.5 * len(dense)
    np.testing.assert_allclose(tool[:n], dense[:n], atol=1e-9 * dense[0], rtol=1e-6)


def test_layouts_geometry_and_flags_are_declared(tmp_path):
    ops = [CASES[k] for k in ("conv2d-stride2-valid", "depthwise-multiplier2", "transpose-stride2", "conv3d",
                              "int8-per-channel", "float16-behind-dequantize")]
    loaded = load(write_tflite(tmp_path / "m.tflite", ops))
    conv, dw, tr, c3, q8, f16 = loaded.layers
    assert loaded.source.format == "tflite" and loaded.order_source == "graph"
    assert (conv.shape, conv.stride, conv.grid, conv.groups) == ((4, 3, 3, 3), (2, 2), (6, 6), 1)
    assert conv.geometry_source == conv.grid_source == "metadata" and "padding VALID" in conv.notes
    assert "filter layout OHWI" in conv.notes[0]
    assert (dw.shape, dw.groups, dw.out_channels, dw.in_channels) == ((6, 1, 3, 3), 3, 6, 3)
    assert tr.transposed and tr.shape == (4, 2, 3, 3) and tr.in_channels == 4 and tr.out_channels == 2
    assert tr.grid == (3, 3) and tr.stride == (2, 2)
    assert c3.shape == (3, 2, 2, 2, 2) and c3.grid == (3, 4, 3)
    assert q8.flags == ("quantised",) and q8.dtype == "int8" and any("per channel" in n for n in q8.notes)
    assert f16.flags == ("quantised",) and f16.dtype == "float16" and any("DEQUANTIZE" in n for n in f16.notes)
    # the weights, permuted: out[o, c, i, j] = filter[o, i, j, c]
    np.testing.assert_array_equal(conv.weight.load().numpy(), ops[0].filter.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(tr.weight.load().numpy(), ops[2].filter.transpose(3, 0, 1, 2))
    assert [layer.order for layer in loaded.layers] == list(range(6))


def test_names_prefer_the_conv_part_of_a_fused_name(tmp_path):
    op = Op(CONV_2D, (1, 4, 4, 1), _w(2, 1, 1, 1), name="model/re_lu/Relu;model/bn/add;model/conv2d_7/Conv2D")
    (layer,) = load(write_tflite(tmp_path / "n.tflite", [op, op])).layers[:1]
    names = [layer.name for layer in load(tmp_path / "n.tflite").layers]
    assert names == ["model/conv2d_7/Conv2D", "model/conv2d_7/Conv2D#2"]


def test_detected_by_content_and_options_that_do_not_apply(tmp_path):
    path = write_tflite(tmp_path / "model.bin", [CASES["conv2d"]])
    assert detect_format(path) == "tflite"
    with pytest.raises(UsageError):
        load(path, arch="timm:resnet18")
    assert any("--input-size 32x32 not applied" in note for note in load(path, input_size="32x32").source.notes)


def test_json_report_validates_and_activations_are_refused(tmp_path):
    import json

    import jsonschema

    from cbn_inspect.errors import NotExecutableError
    from cbn_inspect.report import to_json

    path = write_tflite(tmp_path / "m.tflite", [CASES["int8-per-channel"], CASES["transpose-stride2"]])
    data = json.loads(to_json(inspect_source(path)))
    schema = json.loads((Path(__import__("cbn_inspect").__file__).parent / "schema" / "report.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert data["source"]["format"] == "tflite" and data["order_source"] == "graph"
    done = subprocess.run([sys.executable, "-m", "cbn_inspect", str(path), "--activations", "noise"],
                          capture_output=True, text=True)
    assert done.returncode == NotExecutableError.exit_code, done.stderr
    assert "tflite2onnx" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_an_input_shape_the_output_shape_contradicts_is_not_a_grid(tmp_path):
    from tf_files import output_shape

    good = load(write_tflite(tmp_path / "good.tflite", [CASES["conv2d-stride2-valid"]]))
    assert good.layers[0].grid == (6, 6)
    data = bytearray((tmp_path / "good.tflite").read_bytes())
    out = np.array(output_shape(CASES["conv2d-stride2-valid"]), "<i4").tobytes()
    at = bytes(data).rindex(out)  # the output tensor's stored shape (the last tensor written)
    data[at + 4:at + 8] = np.array([65535], "<i4").tobytes()  # its height: no longer what 6x6, stride 2 gives
    (tmp_path / "bad.tflite").write_bytes(bytes(data))
    (layer,) = load(tmp_path / "bad.tflite").layers
    assert layer.grid is None and any("disagrees with itself" in note for note in layer.notes)


def test_only_the_main_subgraph_is_analysed(tmp_path):
    loaded = load(write_tflite(tmp_path / "two.tflite", [CASES["conv2d"]], subgraphs=2))
    assert len(loaded.layers) == 1
    assert len(loaded.skipped) == 1 and "subgraph 1" in loaded.skipped[0][1]


def test_missing_flatbuffers_is_exit_10(tmp_path, monkeypatch):
    path = write_tflite(tmp_path / "m.tflite", [CASES["conv2d"]])
    monkeypatch.setitem(sys.modules, "flatbuffers", None)
    with pytest.raises(MissingExtraError) as info:
        load(path)
    assert info.value.exit_code == 10 and "cbn-inspect[tflite]" in info.value.one_line()


def test_hostile_files_give_documented_errors(tmp_path):
    good = write_tflite(tmp_path / "good.tflite", [CASES["int8-per-channel"], CASES["depthwise-multiplier2"]]).read_bytes()
    rng = random.Random(3)
    mutants = [good[:n] for n in (8, 12, 40, len(good) // 2, len(good) - 1)]
    mutants += [good[:8] + bytes(rng.getrandbits(8) for _ in range(300))]
    for _ in range(60):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(8, len(data))] = rng.getrandbits(8)
        mutants.append(bytes(data))
    outcomes = {"ok": 0, "error": 0}
    settings = Settings(grid=(4, 4), default_grid=4, threads=1)
    for i, data in enumerate(mutants):
        path = tmp_path / f"m{i}.tflite"
        path.write_bytes(data)
        try:
            inspect_source(path, settings)
            outcomes["ok"] += 1
        except CbnError as error:
            assert error.exit_code in (3, 4, 6, 7), error
            assert "\n" not in error.one_line()
            outcomes["error"] += 1
    assert outcomes["error"] >= 6


def test_cli_truncated_file_is_one_line_exit_3(tmp_path):
    good = write_tflite(tmp_path / "good.tflite", [CASES["conv2d"]]).read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(good[: len(good) // 3])
    done = subprocess.run([sys.executable, "-m", "cbn_inspect", str(bad)], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    with pytest.raises(UnreadableInputError):
        load(bad)
