"""One exit code per cause: a missing optional extra exits 10, everywhere it is needed.

The package's optional imports are found by reading its source (every ``import`` statement, module level or
inside a function, of a package that is neither the standard library nor a core dependency), so a new one
fails :func:`test_every_optional_import_has_a_scenario` until it gets a scenario here. Each scenario hides its
package (``sys.modules[name] = None`` makes ``import name`` fail and ``find_spec`` answer None, as if it were
not installed) and runs what needs it: the exit code must be 10, with one line naming the extra to install.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

import cbn_inspect

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cbn_inspect"
DEMO = ROOT / "sample_checkpoints" / "cbn_demo.safetensors"
RUN = ROOT / "sample_checkpoints" / "cbn_demo_1d_run"
CORE = {"torch", "numpy", "typer", "rich", "safetensors", "timm", "threadpoolctl", "click", "cbn_inspect"}

# optional package -> (the packages hidden with it, what needs it: CLI arguments, or "api:<name>" below)
SCENARIOS = {
    "onnx": ((), ["{onnx}"]),
    "onnxruntime": ((), ["{onnx}", "--activations", "noise", "--max-inputs", "2"]),
    "PIL": ((), ["{onnx}", "--activations", "{images}"]),
    "sklearn": ((), ["{onnx}", "--activations", "samples"]),
    "skimage": ((), ["{onnx}", "--activations", "samples"]),
    "matplotlib": ((), ["{demo}", "--plot", "{tmp}/f.png"]),
    "distributed": (("dask",), ["audit", "{demo}", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9",
                                     "--out", "{tmp}/a.jsonl", "--quiet"]),
    "flatbuffers": ((), ["{tflite}"]),
    "h5py": ((), ["{keras}"]),
    "pandas": ((), "api:to_frame"),
    "jsonschema": ((), "api:validate"),
    "lightning": (("pytorch_lightning",), "api:callback"),
    "pytorch_lightning": (("lightning",), "api:callback"),
}
# Optional speed-ups with a documented fallback: the same command still succeeds without them.
FALLBACKS = {"scipy": ["{demo}", "--quiet"]}
# Where the CLI names more than one scenario for one package, every one is checked.
MORE = {"matplotlib": [["track", str(RUN), "--plot", "{tmp}/t.png", "--quiet"]]}


def optional_imports() -> set[str]:
    """Top-level names of every package the source imports, less the standard library and core dependencies."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - CORE


def test_every_optional_import_has_a_scenario():
    found = optional_imports()
    assert found, "the scan found no optional import at all"
    missing = found - set(SCENARIOS) - set(FALLBACKS)
    assert not missing, f"optional import(s) without a missing-extra scenario in this test: {sorted(missing)}"
    assert not (set(SCENARIOS) | set(FALLBACKS)) - found, "a scenario for a package the source no longer imports"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image

    tmp = tmp_path_factory.mktemp("extras")
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[1, 1, 1, 1])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp / "m.onnx"))
    (tmp / "images").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp / "images" / "a.png")
    from tf_files import CONV_2D, Op, keras_layer, write_keras_h5, write_tflite

    kernel = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    write_tflite(tmp / "m.tflite", [Op(CONV_2D, (1, 6, 6, 3), kernel)])
    layers = [keras_layer("InputLayer", "input_1", None, batch_input_shape=[None, 6, 6, 3]),
              keras_layer("Conv2D", "conv", ["input_1"], filters=4, kernel_size=[3, 3], strides=[1, 1],
                          padding="same", dilation_rate=[1, 1])]
    write_keras_h5(tmp / "m.h5", layers, {"conv": {"kernel": kernel.transpose(1, 2, 3, 0).copy()}})
    return {"onnx": str(tmp / "m.onnx"), "images": str(tmp / "images"), "demo": str(DEMO),
            "tflite": str(tmp / "m.tflite"), "keras": str(tmp / "m.h5")}


def _api(name: str) -> None:
    if name == "to_frame":
        cbn_inspect.analyze(str(DEMO)).to_frame()
    elif name == "validate":
        from cbn_inspect.report.json_report import validate_report

        validate_report({})
    elif name == "callback":
        cbn_inspect.CbnInspectCallback  # noqa: B018  (the attribute imports the callback module)


def _hide(monkeypatch, names) -> None:
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "cbn_inspect.series.lightning", raising=False)
    monkeypatch.delitem(vars(cbn_inspect), "CbnInspectCallback", raising=False)  # the lazy export's cache


def _fill(args, inputs, tmp_path):
    return [a.format(tmp=tmp_path, **inputs) for a in args]


@pytest.mark.parametrize("package", sorted(SCENARIOS))
def test_a_missing_extra_exits_10(package, inputs, cli, tmp_path, monkeypatch):
    also, what = SCENARIOS[package]
    _hide(monkeypatch, (package, *also))
    if isinstance(what, str):
        from cbn_inspect.errors import CbnError

        with pytest.raises(CbnError) as info:
            _api(what.split(":", 1)[1])
        assert info.value.exit_code == 10 and "pip install" in info.value.one_line()
        return
    for args in [what, *MORE.get(package, [])]:
        result = cli(*_fill(args, inputs, tmp_path))
        assert result.exit_code == 10, (package, args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cbn-inspect: error: ") and "pip install" in lines[0], lines


@pytest.mark.parametrize("package", sorted(FALLBACKS))
def test_a_missing_speed_up_falls_back_unless_forced(package, inputs, cli, tmp_path, monkeypatch):
    _hide(monkeypatch, (package,))
    from cbn_inspect.analysis import _eigen

    monkeypatch.setattr(_eigen, "_STATE", {})
    result = cli(*_fill(FALLBACKS[package], inputs, tmp_path))
    assert result.exit_code == 0, result.stderr
    monkeypatch.setenv("CBN_EIGEN_ROUTE", "mixed")  # the route that needs it, forced on every matrix
    result = cli(*_fill(FALLBACKS[package], inputs, tmp_path))
    assert result.exit_code == 10 and "pip install 'cbn-inspect[fast]'" in result.stderr, result.stderr
