"""Mutators: from a valid seed (its files as bytes) to a hostile variant, deterministically from one seed.

``mutate(fmt, files, rng)`` returns new file contents and a short description of what was done. Byte-level
mutators (bit flips, truncation, insertion, deletion, overwriting with boundary values) apply to every
format; structured ones know the format: safetensors' JSON header (names, dtypes, shapes, offsets,
``__metadata__`` and the ``cbn_inspect.*`` values), a sharded index's ``weight_map``, zip members (edited,
dropped, duplicated, renamed to non-UTF-8 bytes) and the pickles inside (tensor names, storage dtypes), and
ONNX protos (missing inputs and outputs, attributes of the wrong type, hostile geometry and names).
"""

from __future__ import annotations

import io
import json
import random
import re
import struct
import zipfile
from typing import Any, Callable

Files = dict[str, bytes]

HOSTILE_NAMES = [
    "[/x]", "[link=https://example.invalid]click[/link]", "[bold red]x", "\x1b[31mred\x1b[0m", "\x1b]8;;x\x07",
    "a\rb", "a\nb", ":smile:", "\u202eevil", "\x00", "\x9b2J", "", ".", "..", "a" * 300, "weight",
    "x.weight", "[/x].weight", "\x1b[2J.weight", "\udcff.weight",
]
HOSTILE_VALUES: list[Any] = [
    0, -1, 1, 2, 3, 7, 2**31, 2**63, -(2**63), 10**40, 1.5, -0.0, float("nan"), float("inf"), float("-inf"),
    1e308, "4", "x", "", "[/x]", None, True, [], {}, [0], [4, 4], [4, 0], [-4, 4], [1, 2, 3, 4], ["a"],
    [float("nan")], [2**40, 2**40], {"a": 1}, [[4]],
]
STORAGES = [b"FloatStorage", b"HalfStorage", b"DoubleStorage", b"BFloat16Storage", b"LongStorage",
            b"IntStorage", b"BoolStorage", b"ByteStorage", b"CharStorage", b"ComplexFloatStorage",
            b"QInt8Storage", b"NoSuchStorage"]
ST_DTYPES = ["F32", "F16", "BF16", "F64", "I8", "U8", "I64", "BOOL", "F8_E4M3", "X9", "", 3, None]
BOUNDARY = [b"\x00" * 8, b"\xff" * 8, struct.pack("<Q", 2**63 - 1), struct.pack("<q", -1),
            struct.pack("<f", float("nan")) * 2, struct.pack("<f", float("inf")) * 2,
            struct.pack("<f", 3.4028235e38) * 2, struct.pack("<d", 1e200), struct.pack("<i", 0x7FFFFFFF) * 2]


# ---- byte level -------------------------------------------------------------------------------------

def bit_flips(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    buf = bytearray(data)
    n = rng.choice([1, 1, 2, 4, 8, 32])
    for _ in range(n):
        if buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf), f"{n} bit flips"


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.randrange(len(data) + 1) if rng.random() < 0.7 else len(data) - rng.randint(1, min(64, len(data)))
    return data[:cut], f"truncated at {cut}"


def insert(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    at = rng.randrange(len(data) + 1)
    choice = rng.random()
    if choice < 0.4:
        piece = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif choice < 0.7:
        piece = rng.choice(BOUNDARY)
    else:
        piece = rng.choice(HOSTILE_NAMES).encode("utf-8", "surrogatepass")
    return data[:at] + piece + data[at:], f"inserted {len(piece)} bytes at {at}"


def delete(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    at = rng.randrange(max(1, len(data)))
    n = rng.randint(1, 64)
    return data[:at] + data[at + n:], f"deleted {n} bytes at {at}"


def overwrite(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    piece = rng.choice(BOUNDARY)
    at = rng.randrange(max(1, len(data) - len(piece))) // 4 * 4
    return data[:at] + piece + data[at + len(piece):], f"overwrote {len(piece)} bytes at {at}"


BYTE_MUTATORS: list[Callable[[bytes, random.Random], tuple[bytes, str]]] = [bit_flips, truncate, insert, delete,
                                                                            overwrite]


def byte_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    return rng.choice(BYTE_MUTATORS)(data, rng)


# ---- safetensors ------------------------------------------------------------------------------------

def _split_safetensors(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join_safetensors(header: Any, body: bytes, rng: random.Random) -> bytes:
    text = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
    text += b" " * (-len(text) % 8)
    length = len(text)
    if rng.random() < 0.05:
        length = rng.choice([0, 1, length - 1, length + 1, len(text) + len(body), 2**63])
    return struct.pack("<Q", length % 2**64) + text + body


def _hostile_layers_meta(rng: random.Random, names: list[str]) -> str:
    if rng.random() < 0.1:
        return rng.choice(["{", "[]", "null", "NaN", "1e999", '"x"', "[" * 5000 + "]" * 5000,
                           '{"a":' * 3000 + "1" + "}" * 3000])
    spec: dict[str, Any] = {}
    for name in names:
        entry = {"grid": [4, 4], "stride": 1, "groups": 1, "padding_mode": "circular"}
        for _ in range(rng.randint(1, 3)):
            key = rng.choice(["grid", "stride", "dilation", "groups", "transposed", "padding_mode", "x"])
            entry[key] = rng.choice(HOSTILE_VALUES)
        spec[name if rng.random() < 0.9 else rng.choice(HOSTILE_NAMES)] = entry
    return json.dumps(spec, allow_nan=True)


def safetensors_header_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        header, body = _split_safetensors(data)
    except ValueError:
        return byte_mutation(data, rng)
    names = [k for k in header if k != "__metadata__"]
    if not names:
        return byte_mutation(data, rng)
    name = rng.choice(names)
    what = rng.randrange(8)
    if what == 0:
        header[rng.choice(HOSTILE_NAMES)] = header.pop(name)
        desc = "renamed a tensor"
    elif what == 1:
        header[name]["dtype"] = rng.choice(ST_DTYPES)
        desc = "swapped a dtype"
    elif what == 2:
        header[name]["shape"] = rng.choice([[], [0], [4, 4, 3, 3, 1, 1], [4, 4, 3], [1, 1, 1, 1],
                                            [2**31, 2, 1, 1], [-1, 4, 3, 3], ["4", 4, 3, 3], [4, 4, 0, 3],
                                            [1, 1, 1, 36], [36, 1, 1, 1], "x", None])
        desc = "changed a shape"
    elif what == 3:
        a, b = header[name].get("data_offsets", [0, 0])
        header[name]["data_offsets"] = rng.choice([[b, a], [a, b + 4], [a, 2**40], [-1, b], [a, a], [0, len(body)],
                                                   [a], "x", [a + 1, b + 1]])
        desc = "changed data offsets"
    elif what == 4:
        layer_names = [n.rsplit(".", 1)[0] for n in names if n.endswith("conv.weight")]
        meta = dict(header.get("__metadata__") or {})
        meta["cbn_inspect.layers"] = _hostile_layers_meta(rng, layer_names)
        header["__metadata__"] = meta
        desc = "hostile cbn_inspect.layers"
    elif what == 5:
        meta = dict(header.get("__metadata__") or {})
        key = rng.choice(["cbn_inspect.order", "cbn_inspect.grid", "format", rng.choice(HOSTILE_NAMES)])
        value = rng.choice(HOSTILE_VALUES + ["NaN", "Infinity", "4x4x4x4", "0", "-4", "1e3", "4.5", "[/x]"])
        meta[key] = value if rng.random() < 0.3 else json.dumps(value, allow_nan=True)
        header["__metadata__"] = meta
        desc = f"metadata {key!r} edited"
    elif what == 6:
        header["__metadata__"] = rng.choice([[], "x", 3, None, {"a": 1}, {"a": {"b": "c"}}])
        desc = "__metadata__ replaced"
    else:
        header[name] = rng.choice([None, [], "x", {}, {"dtype": "F32"}])
        desc = "tensor entry replaced"
    return _join_safetensors(header, body, rng), desc


# ---- sharded index ----------------------------------------------------------------------------------

def index_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        index = json.loads(data)
        weight_map = index["weight_map"]
        name = rng.choice(sorted(weight_map))
    except (ValueError, KeyError, TypeError, IndexError):
        return byte_mutation(data, rng)
    what = rng.randrange(5)
    if what == 0:
        weight_map[name] = rng.choice([1, None, [], {}, True, "missing.safetensors", "../../etc/passwd",
                                       "/etc/passwd", "/dev/zero", ".", "", "..", "sub/../model-00001-of-00002.safetensors",
                                       "\x00", "[/x]", "\udcff.safetensors", "model.safetensors.index.json"])
        desc = "weight_map value"
    elif what == 1:
        weight_map[rng.choice(HOSTILE_NAMES)] = weight_map.pop(name)
        desc = "weight_map key"
    elif what == 2:
        index["weight_map"] = rng.choice([[], "x", None, 3, {}, [[name, "a"]]])
        desc = "weight_map replaced"
    elif what == 3:
        index["metadata"] = rng.choice([[], "x", None, 3, {"a": {"b": 1}}, {"[/x]": "\x1b[31m"}, {"a": float("nan")}])
        desc = "metadata replaced"
    else:
        index = rng.choice([[], "x", None, 3, {"weight_map": weight_map, "metadata": [1]}])
        desc = "index replaced"
    return json.dumps(index, allow_nan=True).encode("utf-8", "surrogatepass"), desc


# ---- zip archives and the pickles inside ------------------------------------------------------------

def _pickle_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Swap a storage type (GLOBAL takes newline-terminated names) or a tensor name (BINUNICODE, length-prefixed)."""
    storages = [m for m in re.finditer(rb"\n(\w+Storage)\n", data)]
    names = [m for m in re.finditer(rb"X(....)([\w.]+)", data, re.S)
             if struct.unpack("<I", m.group(1))[0] == len(m.group(2))]
    if storages and (not names or rng.random() < 0.5):
        m = rng.choice(storages)
        new = rng.choice(STORAGES)
        return data[:m.start(1)] + new + data[m.end(1):], f"storage {m.group(1).decode()} -> {new.decode()}"
    if names:
        m = rng.choice(names)
        new = rng.choice(HOSTILE_NAMES).encode("utf-8", "surrogatepass")
        return data[:m.start()] + b"X" + struct.pack("<I", len(new)) + new + data[m.end():], "renamed a pickled string"
    return byte_mutation(data, rng)


def _read_zip(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _write_zip(members: list[tuple[str, bytes]], deflate: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


def _non_utf8_name(data: bytes, name: str, rng: random.Random) -> bytes:
    """Replace one byte of a member's name with an invalid UTF-8 byte, in local and central headers."""
    raw = name.encode()
    pos = rng.randrange(len(raw))
    bad = raw[:pos] + bytes([rng.choice([0xFF, 0xC3, 0x80, 0xED])]) + raw[pos + 1:]
    return data.replace(raw, bad)


def zip_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        members = _read_zip(data)
    except Exception:
        return byte_mutation(data, rng)
    if not members:
        return byte_mutation(data, rng)
    items = [(info.filename, content) for info, content in members]
    i = rng.randrange(len(items))
    name, content = items[i]
    pickles = [j for j, (n, _) in enumerate(items) if n.endswith(".pkl")]
    what = rng.randrange(7)
    if what in (0, 1) and pickles:
        i = rng.choice(pickles)
        new, desc = _pickle_edit(items[i][1], rng) if what == 0 else byte_mutation(items[i][1], rng)
        items[i] = (items[i][0], new)
        desc = f"{items[i][0]}: {desc}"
    elif what == 2:
        new, desc = byte_mutation(content, rng)
        items[i] = (name, new)
        desc = f"{name}: {desc}"
    elif what == 3:
        del items[i]
        desc = f"dropped {name}"
    elif what == 4:
        items.insert(rng.randrange(len(items) + 1), (name, content if rng.random() < 0.5 else b""))
        desc = f"duplicated {name}"
    elif what == 5:
        out = _write_zip(items)
        return _non_utf8_name(out, name, rng), f"non-UTF-8 name for {name}"
    else:
        prefix = name.split("/", 1)[0]
        items[i] = (rng.choice([f"{prefix}/{rng.choice(HOSTILE_NAMES)}", f"{prefix}/../x", "/abs", name.upper()]),
                    content)
        desc = f"renamed {name}"
    return _write_zip(items, deflate=rng.random() < 0.2), desc


# ---- ONNX -------------------------------------------------------------------------------------------

def onnx_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    import onnx
    from onnx import AttributeProto, helper

    try:
        model = onnx.load_from_string(data)
    except Exception:
        return byte_mutation(data, rng)
    graph = model.graph
    nodes = list(graph.node)
    if not nodes:
        return byte_mutation(data, rng)
    node = rng.choice(nodes)
    what = rng.randrange(9)
    if what == 0 and node.input:
        keep = rng.randrange(len(node.input))
        del node.input[keep:]
        desc = f"{node.name}: inputs cut to {keep}"
    elif what == 1 and node.output:
        del node.output[:]
        desc = f"{node.name}: no outputs"
    elif what == 2:
        key = rng.choice(["strides", "dilations", "group", "pads", "epsilon", "auto_pad", "kernel_shape"])
        kept = [a for a in node.attribute if a.name != key]
        del node.attribute[:]
        node.attribute.extend(kept)
        value = rng.choice(["ab", b"\xff", 1.5, float("nan"), [1.5, 2.5], ["a", "b"], 0, -1, 3, 2**40, [0, 0],
                            [-1, -1], [1], [1, 1, 1], [2**31, 1], [7, 7]])
        try:
            node.attribute.append(helper.make_attribute(key, value))
        except Exception:
            node.attribute.append(helper.make_attribute(key, "x"))
        desc = f"{node.name}: attribute {key} = {value!r}"
    elif what == 3:
        node.name = rng.choice(HOSTILE_NAMES)
        desc = "node renamed"
    elif what == 4 and graph.initializer:
        init = rng.choice(list(graph.initializer))
        dims = rng.choice([[], [0], [4, 4, 3], [4, 4, 3, 3, 1, 1], [1, 1, 1, 1], [-1, 3, 3, 3], [2**31, 1, 1, 1]])
        del init.dims[:]
        init.dims.extend(dims)
        desc = f"initializer {init.name} dims {dims}"
    elif what == 5 and graph.initializer:
        init = rng.choice(list(graph.initializer))
        init.data_type = rng.choice([0, 2, 3, 6, 7, 8, 9, 10, 11, 16, 17, 99])
        desc = f"initializer {init.name} dtype {init.data_type}"
    elif what == 6:
        graph.initializer.append(helper.make_tensor(rng.choice(["v1", "g1", "w2"]), 1, [4], [-1.0, 0.0, float("nan"), 1e38]))
        desc = "duplicate initializer with hostile values"
    elif what == 7:
        dims = rng.choice([[1, 3, 0, 0], [1, 3, -4, 4], [1, 3, 4], [1, 3, 4, 4, 4], [1, 3, 2**40, 2**40], [1, 3, 1, 1]])
        value = graph.input[0]
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            shape.dim.add().dim_value = d
        desc = f"input shape {dims}"
    else:
        sub = helper.make_graph([helper.make_node("Conv", ["x", "w2"], ["z"], name="inner")], "sub", [],
                                [helper.make_tensor_value_info("z", 1, None)])
        node.attribute.append(helper.make_attribute("then_branch", sub))
        if rng.random() < 0.5:
            node.attribute[-1].type = AttributeProto.INTS
        desc = f"{node.name}: subgraph attribute"
    try:
        return model.SerializeToString(), desc
    except Exception:
        return byte_mutation(data, rng)


def flatbuffer_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Overwrite an aligned 32-bit word of a flatbuffer (offsets, vector lengths, shapes, option scalars, vtable
    entries) with a boundary value."""
    if len(data) < 16:
        return byte_mutation(data, rng)
    at = rng.randrange(0, len(data) - 4) & ~3
    value = rng.choice([0, 1, 2, 3, 4, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, len(data), len(data) - at, 65536, 255])
    width = rng.choice([2, 4])
    out = bytearray(data)
    out[at:at + width] = (value & (2 ** (8 * width) - 1)).to_bytes(width, "little")
    return bytes(out), f"word at {at} ({width} B) = {value}"


def keras_archive_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A ``.keras`` zip with its config.json replaced by a hostile one, or its members edited as any zip."""
    if rng.random() < 0.5:
        return zip_edit(data, rng)
    members = [(info.filename, body) for info, body in _read_zip(data)]
    try:
        config = json.loads(dict(members)["config.json"])
        layers = config["config"]["layers"]
    except Exception:
        return byte_mutation(data, rng)
    target = rng.choice(layers) if layers else {}
    conf = target.setdefault("config", {}) if isinstance(target, dict) else {}
    edit = rng.choice(["strides", "kernel_size", "build_config", "class_name", "groups", "nested", "data_format"])
    value = rng.choice([0, -1, 2**40, None, "x", [1], [0, 0], [2**31, 1], {"a": 1}, [None, None, None, None],
                        [None, 0, 0, 3], [None, 1e9, 4, 3]])
    if edit == "build_config" and isinstance(target, dict):
        target["build_config"] = {"input_shape": value}
    elif edit == "class_name" and isinstance(target, dict):
        target["class_name"] = rng.choice(["Conv3D", "DepthwiseConv2D", "SeparableConv1D", "Conv2DTranspose", "Lambda",
                                           "Functional", "Sequential", ""])
    elif edit == "nested":
        config = {"class_name": "Sequential", "config": {"layers": [config] * rng.randint(1, 3)}}
    else:
        conf[edit] = value
    body = json.dumps(config).encode()
    return _write_zip([(n, body if n == "config.json" else b) for n, b in members]), f"config.json {edit} = {value!r}"


# ---- front door -------------------------------------------------------------------------------------

STRUCTURED = {
    "safetensors": safetensors_header_edit,
    "torchzip": zip_edit,
    "torchscript": zip_edit,
    "pickle": _pickle_edit,
    "onnx": onnx_edit,
    "tflite": flatbuffer_edit,
    "keras": keras_archive_edit,
    "h5": byte_mutation,
}


def mutate(fmt: str, files: Files, rng: random.Random) -> tuple[Files, str]:
    """One mutant of a seed: a structured edit half the time, byte-level otherwise; stacked now and then."""
    out = dict(files)
    names = list(files)
    descs = []
    for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 4)):
        name = names[0]
        if fmt == "sharded":
            name = rng.choice(names)
            edit = index_edit if name.endswith(".json") else safetensors_header_edit
        else:
            edit = STRUCTURED[fmt]
        if rng.random() < 0.5:
            edit = byte_mutation
        try:
            out[name], desc = edit(out[name], rng)
        except Exception:  # an edit that does not apply to this (already mutated) input: bytes instead
            out[name], desc = byte_mutation(out[name], rng)
        descs.append(f"{name}: {desc}" if fmt == "sharded" else desc)
    return out, "; ".join(descs)
