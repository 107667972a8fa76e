"""Write the fuzzing seed corpus: one small, valid checkpoint per format the tool reads (a few KB each).

    python fuzz/make_corpus.py [--out fuzz/corpus]

Each seed is a tiny CNN (three 3x3 convs of 4 channels, a BatchNorm after the first; the TFLite and Keras
seeds mix conv, depthwise, separable, transposed, int8 and float16 layers, built by ``tests/tf_files.py``) so that a mutant loads
and is analysed in milliseconds. The safetensors seed carries ``cbn_inspect.*`` metadata (geometry, order,
grid), so header edits reach the metadata parser too. Seeds are deterministic (fixed torch seed); the
committed corpus is what this script writes.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMATS = ("safetensors", "sharded", "torchzip", "pickle", "torchscript", "onnx", "tflite", "keras", "h5")
# formats whose cases run in a forked child: native code that an alarm cannot interrupt or a crash could kill
# the process with (torch.jit.load on main; the HDF5 C library under h5py)
ISOLATED = frozenset({"torchscript", "keras", "h5"})
SEED_FILES = {  # format -> the files of one seed (the first is the one passed to load)
    "safetensors": ("model.safetensors",),
    "sharded": ("model.safetensors.index.json", "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"),
    "torchzip": ("model.pt",),
    "pickle": ("model.bin",),
    "torchscript": ("model.torchscript.pt",),
    "onnx": ("model.onnx",),
    "tflite": ("model.tflite",),
    "keras": ("model.keras",),
    "h5": ("model.h5",),
}


def _state_dict():
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "features.0.conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "features.0.bn.weight": torch.rand(4, generator=g) + 0.5,
        "features.0.bn.bias": torch.zeros(4),
        "features.0.bn.running_mean": torch.zeros(4),
        "features.0.bn.running_var": torch.rand(4, generator=g) + 0.5,
        "features.1.conv.weight": torch.randn(4, 4, 3, 3, generator=g),
        "features.2.conv.weight": torch.randn(4, 4, 3, 3, generator=g),
        "head.weight": torch.randn(2, 4, generator=g),
    }


METADATA = {
    "cbn_inspect.layers": json.dumps({
        "features.0.conv": {"grid": [4, 4], "stride": [1, 1], "groups": 1, "padding_mode": "circular"},
        "features.1.conv": {"grid": 4, "stride": 2, "dilation": 1, "padding_mode": "zeros"},
        "features.2.conv": {"grid": [2, 2], "groups": 1, "transposed": False},
    }),
    "cbn_inspect.order": json.dumps(["features.0.conv", "features.1.conv", "features.2.conv"]),
    "cbn_inspect.grid": "4x4",
    "format": "pt",
}


def _module():
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn1 = torch.nn.BatchNorm2d(4)
            self.conv2 = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.conv3 = torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular")

        def forward(self, x):
            return self.conv3(torch.relu(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    torch.manual_seed(0)
    module = Tiny().eval()
    with torch.no_grad():
        module.bn1.running_var.uniform_(0.5, 1.5)
    return module


def _onnx_bytes() -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.ones(4, np.float32), "g1"),
        numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
        numpy_helper.from_array(np.zeros(4, np.float32), "m1"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "v1"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["n1"], name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2],
                         dilations=[1, 1]),
        helper.make_node("ConvTranspose", ["c2", "w3"], ["y"], name="deconv3", strides=[2, 2], group=2,
                         pads=[1, 1, 1, 1], output_padding=[1, 1]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    model = helper.make_model(graph, producer_name="cbn-inspect-fuzz", opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.metadata_props.add(key="note", value="seed")
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _tf_builders():
    """The TFLite / Keras writers of the test suite (``tests/tf_files.py``: no TensorFlow needed)."""
    tests = str(HERE.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import tf_files

    return tf_files


def _tf_seeds(tmp: Path) -> dict[str, bytes]:
    """A TFLite model (conv, int8 conv, depthwise, float16 transposed conv), a Keras 3 ``.keras`` and a Keras 2
    whole-model ``.h5`` (conv + BatchNorm, depthwise, separable, transposed), each a few KB."""
    import numpy as np

    tf = _tf_builders()
    rng = np.random.default_rng(0)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    ops = [tf.Op(tf.CONV_2D, (1, 4, 4, 3), w(4, 3, 3, 3)),
           tf.Op(tf.CONV_2D, (1, 4, 4, 4), w(4, 3, 3, 4), stored="int8", stride=(2, 2), padding=1),
           tf.Op(tf.DEPTHWISE_CONV_2D, (1, 2, 2, 4), w(1, 3, 3, 8), multiplier=2),
           tf.Op(tf.TRANSPOSE_CONV, (1, 2, 2, 8), w(2, 3, 3, 8), stored="float16", stride=(2, 2))]
    seeds = {"tflite": tf.write_tflite(tmp / "model.tflite", ops).read_bytes()}
    layers = [
        tf.keras_layer("InputLayer", "input_1", None, batch_input_shape=[None, 4, 4, 3]),
        tf.keras_layer("Conv2D", "conv", ["input_1"], filters=4, kernel_size=[3, 3], strides=[1, 1], padding="same"),
        tf.keras_layer("BatchNormalization", "bn", ["conv"], axis=-1, epsilon=0.001),
        tf.keras_layer("DepthwiseConv2D", "dw", ["bn"], kernel_size=[3, 3], padding="same", depth_multiplier=2),
        tf.keras_layer("SeparableConv2D", "sep", ["dw"], filters=4, kernel_size=[3, 3], strides=[2, 2], padding="same"),
        tf.keras_layer("Conv2DTranspose", "tr", ["sep"], filters=2, kernel_size=[3, 3], strides=[2, 2], padding="same"),
    ]
    bn = {"gamma": np.ones(4, np.float32), "beta": np.zeros(4, np.float32), "moving_mean": np.zeros(4, np.float32),
          "moving_variance": np.full(4, 0.5, np.float32)}
    weights = {"conv": {"kernel": w(3, 3, 3, 4)}, "bn": bn, "dw": {"depthwise_kernel": w(3, 3, 4, 2)},
               "sep": {"depthwise_kernel": w(3, 3, 8, 1), "pointwise_kernel": w(1, 1, 8, 4)},
               "tr": {"kernel": w(3, 3, 2, 4)}}
    seeds["h5"] = tf.write_keras_h5(tmp / "model.h5", layers, weights).read_bytes()
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": [None, 4, 4, 3]}},
        {"class_name": "Conv2D", "config": {"name": "c1", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
                                            "padding": "same"}, "build_config": {"input_shape": [None, 4, 4, 3]}},
        {"class_name": "Lambda", "config": {"name": "code", "function": "never run"}},
        {"class_name": "Conv2D", "config": {"name": "c2", "filters": 4, "kernel_size": [3, 3], "strides": [2, 2],
                                            "padding": "same"}, "build_config": {"input_shape": [None, 4, 4, 4]}},
    ]}}
    seeds["keras"] = tf.write_keras_archive(tmp / "model.keras", config, {("conv2d",): [w(3, 3, 3, 4)],
                                                                          ("conv2d_1",): [w(3, 3, 4, 4)]}).read_bytes()
    return seeds


def _zip_bytes(obj, legacy: bool = False) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def make(out: Path) -> dict[str, list[Path]]:
    """Write every seed under ``out/<format>/``; returns the files per format."""
    import torch
    from safetensors.torch import save

    if out.exists():
        shutil.rmtree(out)
    written: dict[str, list[Path]] = {}

    def put(fmt: str, name: str, data: bytes) -> None:
        path = out / fmt / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.setdefault(fmt, []).append(path)

    state = _state_dict()
    put("safetensors", "model.safetensors", save(state, metadata=METADATA))
    names = sorted(state)
    first, second = names[: len(names) // 2], names[len(names) // 2:]
    shard_names = SEED_FILES["sharded"][1:]
    index = {"metadata": {"total_size": 0}, "weight_map": {n: shard_names[0] for n in first}}
    index["weight_map"].update({n: shard_names[1] for n in second})
    put("sharded", SEED_FILES["sharded"][0], json.dumps(index, indent=1).encode())
    put("sharded", shard_names[0], save({n: state[n] for n in first}))
    put("sharded", shard_names[1], save({n: state[n] for n in second}))
    put("torchzip", "model.pt", _zip_bytes({"state_dict": state, "epoch": 3, "metadata": {"arch": "tiny"}}))
    put("pickle", "model.bin", _zip_bytes(state, legacy=True))
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_module()), buffer)
    put("torchscript", "model.torchscript.pt", buffer.getvalue())
    put("onnx", "model.onnx", _onnx_bytes())
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for fmt, data in _tf_seeds(Path(tmp)).items():
            put(fmt, SEED_FILES[fmt][0], data)
    for fmt, files in written.items():
        assert tuple(p.name for p in files) == SEED_FILES[fmt], fmt
    zipfile.ZipFile(out / "torchzip" / "model.pt").testzip()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "corpus")
    args = parser.parse_args(argv)
    written = make(args.out)
    for fmt, files in written.items():
        print(f"{fmt}: {', '.join(f'{p.name} ({p.stat().st_size} B)' for p in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
