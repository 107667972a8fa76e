"""The newer surfaces (issue 22): activation tensor files, image folders, ONNX with external data, series folders.

Each surface has a seed (built here, deterministically, from synthetic data: no third-party files), a
mutator and an exercise, the way a user meets it:

- ``act-tensor``: ``--activations FILE`` (``.pt``, ``.npy``, ``.safetensors``) profiled through a tiny
  circular stack (3 -> 4 -> 4 channels on 8x8): byte edits, zip edits of the ``.pt``, and hostile tensors
  written from scratch (NaN, Inf, float32's largest, 1e300, stride-0 views over huge shapes, wrong shapes,
  odd dtypes, empty and 0-d tensors, several tensors);
- ``act-images``: ``--activations FOLDER`` with a PNG, a JPEG, a TIFF and a GIF: byte edits, truncation,
  header sizes edited (PNG ``IHDR`` with its CRC fixed, TIFF width/length tags, JPEG ``SOF0``) to 0, 1,
  30000, 10^8, 2^31-1 and 2^32-1, and decompression bombs written from scratch;
- ``onnx-external``: a conv graph whose weight is external data in ``weights.bin``, loaded (weights side)
  and run by onnxruntime on noise (``--activations``): the ``external_data`` entries edited (locations out
  of the folder, absolute, devices, empty, NUL; offsets and lengths at boundary values; unknown keys), the
  graph edited as the ONNX mutator does, the data file cut or padded;
- ``series``: ``track FOLDER`` on three checkpoints (two safetensors with a step in ``__metadata__``, one
  Lightning-style ``.ckpt`` with ``global_step``), each analysed in-process as an audit worker does, the
  series built and rendered (terminal, JSON): step values (1e400, 5,000 digits, -1, NaN, floats, text),
  file names (huge numbers, none, duplicates) and the files' bytes edited.
"""

from __future__ import annotations

import io
import json
import random
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

Files = dict[str, bytes]
SURFACES = ("act-tensor", "act-images", "onnx-external", "series")
HUGE = [0, 1, 2, 30000, 65535, 100_000_000, 2**31 - 1, 2**32 - 1]
BAD_VALUES = [float("nan"), float("inf"), -float("inf"), 3.4028235e38, 1e300, -1e300, 1e16, 5e-324]
STEP_VALUES = ["1e400", "9" * 5000, "-1", "NaN", "inf", "1.5", "0x10", "", " 7 ", "1" * 19, "9" * 19, "1e18",
               "١٢٣", "7\x00", "2**64", "18446744073709551616", "3.0", "1e3"]


# ---- seeds --------------------------------------------------------------------------------------------------

def _pt(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _npy(array) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _st(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def _inputs():
    import torch

    return torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _image(fmt: str, size=(24, 20)) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(len(fmt))
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _onnx_external() -> Files:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    inits = []
    data = b""
    for name, array in (("w1", w1), ("w2", w2)):
        tensor = numpy_helper.from_array(array, name)
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", str(len(data))), ("length", str(array.nbytes))):
            tensor.external_data.add(key=key, value=value)
        data += array.tobytes()
        inits.append(tensor)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return {"model.onnx": model.SerializeToString(), "weights.bin": data}


def _series() -> Files:
    import torch

    g = torch.Generator().manual_seed(0)
    weights = {"features.0.weight": torch.randn(4, 3, 3, 3, generator=g), "features.1.weight": torch.randn(4, 4, 3, 3, generator=g)}
    return {
        "step_1.safetensors": _st(weights, {"step": "1"}),
        "step_2.safetensors": _st({k: v * 0.5 for k, v in weights.items()}, {"step": "2"}),
        "epoch=0-step=3.ckpt": _pt({"state_dict": {k: v * 0.25 for k, v in weights.items()}, "global_step": 3,
                                    "epoch": 0}),
    }


@lru_cache(maxsize=None)
def _seed(surface: str) -> tuple[tuple[str, bytes], ...]:
    if surface == "act-tensor":
        files = {"inputs.pt": _pt(_inputs())}
    elif surface == "act-images":
        files = {"a.png": _image("PNG"), "b.jpg": _image("JPEG"), "c.tiff": _image("TIFF"), "d.gif": _image("GIF")}
    elif surface == "onnx-external":
        files = _onnx_external()
    elif surface == "series":
        files = _series()
    else:
        raise KeyError(surface)
    return tuple(files.items())


def seed(surface: str) -> Files:
    return dict(_seed(surface))


# ---- mutators -----------------------------------------------------------------------------------------------

def _hostile_tensor(rng: random.Random) -> tuple[str, bytes, str]:
    import numpy as np
    import torch

    x = _inputs()
    kind = rng.choice(["value", "stride0", "shape", "dtype", "empty", "several", "scalar", "huge-count"])
    if kind == "value":
        v = rng.choice(BAD_VALUES)
        if abs(v) > 3e38 and v == v and abs(v) != float("inf"):
            x = x.double()
        x.view(-1)[rng.randrange(x.numel())] = v
        desc = f"value {v!r}"
    elif kind == "stride0":
        x = torch.zeros(1).expand(rng.choice([10**6 + 1, 10**9, 2**40]), 3, 8, 8)
        desc = f"stride-0 view of {x.shape[0]} inputs"
    elif kind == "shape":
        shape = tuple(rng.choice([0, 1, 2, 3, 8, 9, 100_000]) for _ in range(rng.randint(1, 6)))
        try:
            x = torch.zeros(1).expand(*shape) if 0 not in shape else torch.zeros(shape)
        except RuntimeError:
            x = torch.zeros(2, 3)
        desc = f"shape {shape}"
    elif kind == "dtype":
        dtype = rng.choice([torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8, torch.bool,
                            torch.complex64, torch.int8])
        x = x.to(dtype)
        desc = f"dtype {dtype}"
    elif kind == "empty":
        x = torch.zeros(0, 3, 8, 8)
        desc = "no inputs"
    elif kind == "several":
        x = {"a": x, "b": x[:2]}
        desc = "two tensors"
    elif kind == "huge-count":
        x = torch.zeros(1).expand(10**6 + 7, 3, 8, 8)
        desc = "over a million inputs"
    else:
        x = torch.tensor(float("nan"))
        desc = "0-d NaN"
    suffix = rng.choice([".pt", ".npy", ".safetensors"])
    try:
        if suffix == ".pt":
            data = _pt(x)
        elif suffix == ".npy":
            t = x if isinstance(x, torch.Tensor) else x["a"]
            data = _npy(np.ascontiguousarray(t.contiguous().numpy()) if t.numel() < 10**6 and t.dtype != torch.bfloat16
                        else np.zeros((2, 3, 8, 8), np.float32))
        else:
            tensors = x if isinstance(x, dict) else {"inputs": x}
            data = _st({k: v.contiguous() if v.numel() < 10**6 else torch.zeros(2, 3, 8, 8) for k, v in tensors.items()})
    except Exception:  # a dtype or layout the format cannot hold: the .pt then
        suffix, data = ".pt", _pt(x)
    return "inputs" + suffix, data, desc


def _png_size(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    w, h = rng.choice(HUGE), rng.choice(HUGE)
    ihdr = struct.pack(">II", w, h) + data[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:], f"PNG IHDR {w}x{h}"


def _tiff_size(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    little = data[:2] == b"II"
    fmt = "<" if little else ">"
    (offset,) = struct.unpack(fmt + "I", data[4:8])
    (count,) = struct.unpack(fmt + "H", data[offset:offset + 2])
    changed = []
    for i in range(count):
        at = offset + 2 + 12 * i
        tag, kind = struct.unpack(fmt + "HH", data[at:at + 4])
        if tag in (256, 257, 278, 279) and rng.random() < 0.7:
            value = rng.choice(HUGE)
            out[at + 2:at + 12] = struct.pack(fmt + "HII", 4, 1, value)
            changed.append(f"{tag}={value}")
    return bytes(out), f"TIFF tags {', '.join(changed) or 'unchanged'}"


def _jpeg_size(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    at = data.find(b"\xff\xc0")
    if at < 0:
        raise ValueError("no SOF0")
    h, w = rng.choice([0, 1, 30000, 65535]), rng.choice([0, 1, 30000, 65535])
    return data[:at + 5] + struct.pack(">HH", h, w) + data[at + 9:], f"JPEG SOF0 {w}x{h}"


def _bomb(rng: random.Random) -> tuple[str, bytes, str]:
    w, h = rng.choice([(30000, 30000), (100_000_000, 1), (1, 100_000_000), (20_000_000, 1), (65535, 65535)])

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)

    body = zlib.compress(b"\0" * rng.choice([0, 1024, 1 << 20]))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    return "bomb.png", png, f"bomb PNG {w}x{h}"


def _external_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    import onnx

    model = onnx.load_from_string(data)
    tensors = [t for t in model.graph.initializer if t.external_data]
    tensor = rng.choice(tensors)
    entries = {e.key: e for e in tensor.external_data}
    what = rng.choice(["location", "offset", "length", "extra", "drop", "inline"])
    if what == "location":
        value = rng.choice(["../weights.bin", "/dev/zero", "/etc/passwd", "../../../../etc/passwd", "", ".", "weights.bin\x00x",
                            "sub/../weights.bin", "./weights.bin", "weights.bin/", "C:\\weights.bin", "\\\\host\\share",
                            "/proc/self/mem", "missing.bin", "model.onnx", "a" * 300, "weights.bin" * 40])
        entries["location"].value = value
        desc = f"location {value[:40]!r}"
    elif what in ("offset", "length"):
        value = rng.choice(["-1", "0", "1", "432", "9" * 30, "1e9", "x", str(2**63), str(2**64 + 1), ""])
        if what in entries:
            entries[what].value = value
        else:
            tensor.external_data.add(key=what, value=value)
        desc = f"{what} {value!r}"
    elif what == "extra":
        tensor.external_data.add(key=rng.choice(["checksum", "basepath", "evil", ""]), value=rng.choice(["..", "/", "x" * 1000]))
        desc = "extra key"
    elif what == "drop":
        key = rng.choice(list(entries))
        kept = [(e.key, e.value) for e in tensor.external_data if e.key != key]
        del tensor.external_data[:]
        for k, v in kept:
            tensor.external_data.add(key=k, value=v)
        desc = f"dropped {key}"
    else:
        tensor.data_location = onnx.TensorProto.DEFAULT
        desc = "external entries kept, location DEFAULT"
    return model.SerializeToString(), desc


def _step_edit(files: Files, rng: random.Random) -> tuple[Files, str]:
    import torch

    out = dict(files)
    name = rng.choice(list(out))
    value = rng.choice(STEP_VALUES)
    if name.endswith(".safetensors"):
        g = torch.Generator().manual_seed(1)
        out[name] = _st({"features.0.weight": torch.randn(4, 3, 3, 3, generator=g),
                         "features.1.weight": torch.randn(4, 4, 3, 3, generator=g)},
                        {rng.choice(["step", "global_step", "epoch", "iter"]): value})
        return out, f"{name}: metadata step {value[:24]!r}"
    python = rng.choice([10**4000 * 10**1000, 2**64, -5, float("inf"), float("nan"), 1e400 if False else 1e300, 2.5, "12", None,
                         torch.tensor(7), torch.tensor([1, 2]), torch.tensor(float("inf")), True, [3]])
    g = torch.Generator().manual_seed(2)
    out[name] = _pt({"state_dict": {"features.0.weight": torch.randn(4, 3, 3, 3, generator=g),
                                    "features.1.weight": torch.randn(4, 4, 3, 3, generator=g)},
                     rng.choice(["global_step", "step", "epoch"]): python})
    shown = f"an integer of {len(str(python)) if abs(python) < 10**4000 else 'over 4,000'} digits" if (
        isinstance(python, int) and not isinstance(python, bool) and abs(python) > 10**30) else repr(python)[:24]
    return out, f"{name}: global_step {shown}"


def _rename(files: Files, rng: random.Random) -> tuple[Files, str]:
    out = dict(files)
    old = rng.choice(list(out))
    suffix = "." + old.rsplit(".", 1)[-1]
    new = rng.choice(["step_" + "9" * 200, "step_" + "9" * 20, "model", "step_1", "step_2", "epoch=5", "iter_0007",
                      "x1y2z3", "step_00000000000000000000001", "checkpoint-" + "1" * 25]) + suffix
    data = out.pop(old)
    out[new] = data
    return out, f"renamed {old} -> {new[:40]}"


def mutate(surface: str, files: Files, rng: random.Random) -> tuple[Files, str]:
    """One mutant of a surface's seed: a structured edit most of the time, byte-level otherwise."""
    from .mutators import byte_mutation, onnx_edit, zip_edit

    out = dict(files)
    if surface == "act-tensor":
        pick = rng.random()
        if pick < 0.45:
            name, data, desc = _hostile_tensor(rng)
            return {name: data}, desc
        name = next(iter(out))
        edit = zip_edit if pick < 0.7 else byte_mutation
        try:
            out[name], desc = edit(out[name], rng)
        except Exception:
            out[name], desc = byte_mutation(out[name], rng)
        return out, desc
    if surface == "act-images":
        pick = rng.random()
        if pick < 0.15:
            name, data, desc = _bomb(rng)
            out[name] = data
            return out, desc
        name = rng.choice(list(out))
        edit = {".png": _png_size, ".tiff": _tiff_size, ".jpg": _jpeg_size}.get(Path(name).suffix, byte_mutation)
        if pick > 0.6:
            edit = byte_mutation
        try:
            out[name], desc = edit(out[name], rng)
        except Exception:
            out[name], desc = byte_mutation(out[name], rng)
        return out, f"{name}: {desc}"
    if surface == "onnx-external":
        pick = rng.random()
        name = "model.onnx" if pick < 0.75 else "weights.bin"
        edit = (_external_edit if pick < 0.5 else onnx_edit if pick < 0.6 else byte_mutation)
        try:
            out[name], desc = edit(out[name], rng)
        except Exception:
            out[name], desc = byte_mutation(out[name], rng)
        return out, f"{name}: {desc}"
    if surface == "series":
        pick = rng.random()
        if pick < 0.45:
            return _step_edit(out, rng)
        if pick < 0.65:
            return _rename(out, rng)
        name = rng.choice(list(out))
        edit = zip_edit if name.endswith(".ckpt") and pick < 0.8 else byte_mutation
        try:
            out[name], desc = edit(out[name], rng)
        except Exception:
            out[name], desc = byte_mutation(out[name], rng)
        return out, f"{name}: {desc}"
    raise KeyError(surface)


# ---- exercises ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _stack_runner():
    import torch

    from cbn_inspect.activations.inputs import ModelInput
    from cbn_inspect.activations.runners import CircularStack, ModuleRunner

    g = torch.Generator().manual_seed(0)
    model = CircularStack([torch.randn(4, 3, 8, 8, generator=g) * 0.1, torch.randn(4, 4, 8, 8, generator=g) * 0.1], True)
    return ModuleRunner(model, ModelInput(channels=3, spatial=(8, 8), source="fuzz"), side="input", device="cpu")


def _settings():
    from cbn_inspect.records import Settings

    return Settings(grid=(4, 4), default_grid=4, threads=1, memory_budget_mb=64, max_memory_mb=4096)


def _profile(runner, spec: str, **kwargs) -> None:
    from cbn_inspect.activations import profile_activations
    from cbn_inspect.records import ActivationSettings

    report = profile_activations(runner, ActivationSettings(spec, batch_size=4, **kwargs), _settings())
    json.dumps(report.inputs, default=str)


def exercise(surface: str, path: Path) -> None:
    """What a user's command does with the mutant (``path`` is its first file; folders are its parent)."""
    folder = path.parent
    if surface == "act-tensor":
        _profile(_stack_runner(), str(path))
    elif surface == "act-images":
        _profile(_stack_runner(), str(folder))
    elif surface == "onnx-external":
        from cbn_inspect.activations._onnx import OnnxRunner
        from cbn_inspect.inspect import analyze_model
        from cbn_inspect.loaders import load

        loaded = load(path)
        analyze_model(loaded, _settings())
        runner = OnnxRunner(path, side="input", device="cpu", trust_code=False)
        _profile(runner, "noise", max_inputs=3)
    elif surface == "series":
        _series_exercise(folder)
    else:
        raise KeyError(surface)


def _series_exercise(folder: Path) -> None:
    from rich.console import Console

    from cbn_inspect.batch.records import AuditItem, AuditTask
    from cbn_inspect.batch.worker import run_task
    from cbn_inspect.report.series_json import series_to_dict
    from cbn_inspect.report.series_terminal import SeriesView
    from cbn_inspect.series.records import SeriesPoint
    from cbn_inspect.series.steps import order_by_step
    from cbn_inspect.series.summary import build_series
    from cbn_inspect.series.track import expand_series_sources

    paths = expand_series_sources([str(folder)])
    ordered = order_by_step(paths, "auto")
    settings = _settings()
    points = []
    for source, info in ordered:
        row = run_task(AuditTask(item=AuditItem(source=source, kind="file", origin=source), key="fuzz:x",
                                 settings=settings))
        points.append(SeriesPoint(source=source, step=info, report=row.report if row.ok else None,
                                  error_kind=row.error_kind, error_message=row.error_message))
    series = build_series(points, unit=ordered[0][1].unit, step_source=ordered[0][1].describe())
    console = Console(file=io.StringIO(), width=100, color_system="truecolor")
    console.print(SeriesView(series))
    json.dumps(series_to_dict(series))
