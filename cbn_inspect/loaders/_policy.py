"""The one place that says what may execute, per format, and the default resource bounds.

A checkpoint is untrusted input. :data:`FORMATS` states, for every format the loaders read, what is read as
data and what would run code from the file, and so needs ``trust_code`` (``--trust-code``; the older
``--trust-pickle`` is an alias). SECURITY.md is written from this table, and the sentinel tests
(``tests/test_hostile_torchscript.py``) check the rule for TorchScript.

Resource bounds: ``--max-memory`` defaults to :func:`default_max_memory_mb` (half the physical memory);
layers are capped at :data:`DEFAULT_MAX_LAYERS` (``--max-layers``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class FormatPolicy:
    """What reading one format does with the file, with and without trust."""

    name: str
    static: str  # what is read without running anything from the file
    needs_trust: str  # what only ``trust_code`` allows ("" when nothing)


FORMATS = (
    FormatPolicy("safetensors", "header (JSON) and tensor bytes; sharded indexes as JSON", ""),
    FormatPolicy("pytorch", "state dicts through torch's weights-only unpickler (tensors and plain containers)",
                 "unpickling whole modules and other non-tensor globals (arbitrary Python runs)"),
    FormatPolicy("torchscript", "data.pkl through an inert unpickler, tensors from the archive's records, "
                 "code files parsed as text for geometry and call order",
                 "torch.jit.load and running the program (tracing grids with --input-size)"),
    FormatPolicy("onnx", "the graph and initializers through onnx, ONNX shape inference; a graph run in "
                 "onnxruntime runs only onnxruntime's kernels (no code from the file)",
                 "graphs with custom-op domains, should a runner load their native library"),
    FormatPolicy("tflite", "the flatbuffer's tables and tensor bytes, every offset bounds-checked (no TensorFlow, "
                 "no interpreter)", ""),
    FormatPolicy("keras", "config.json / model_config as JSON (Lambda and custom layers are names, never imported "
                 "or run) and numeric HDF5 datasets through h5py", ""),
    FormatPolicy("timm", "the architecture is timm's own code, built with pretrained=False", ""),
)

DEFAULT_MAX_LAYERS = 10_000
MEMORY_FRACTION = 0.5


# (format, action) pairs that run code from the file: allowed only with trust_code.
RUNS_FILE_CODE = frozenset({
    ("pytorch", "unpickle-objects"),  # torch.load(weights_only=False): any global, any __reduce__
    ("torchscript", "run-program"),  # torch.jit.load (runs __setstate__) and the forward pass of a trace
    ("onnx", "custom-ops"),  # a native custom-op library named by the graph's domains
})


def needs_trust(fmt: str, action: str) -> bool:
    """Whether ``action`` on format ``fmt`` runs code from the file."""
    return (fmt, action) in RUNS_FILE_CODE


def allowed(fmt: str, action: str, trust_code: bool) -> bool:
    """The one check every loader makes before doing ``action``: trusted, or it runs nothing from the file."""
    return trust_code or not needs_trust(fmt, action)


def physical_memory_mb() -> int | None:
    """The machine's physical memory in MiB, or None where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError, AttributeError):
        return None


def default_max_memory_mb() -> int:
    """Half the physical memory (4096 MiB where it cannot be read): the default of ``--max-memory``."""
    total = physical_memory_mb()
    return max(256, int(total * MEMORY_FRACTION)) if total else 4096


TRACE_ACTIVATION_FACTOR = 16  # a traced forward pass holds a few activations of the input's order of size


def check_trace_input(shape: tuple[int, ...], itemsize: int = 4, max_memory_mb: int | None = None) -> None:
    """Refuse (exit 7) a real (not ``meta``) trace whose zero input alone would be a sizeable part of the
    memory bound: a ``config.json`` or ``--input-size`` of 100000 must not reach the allocator."""
    from ..errors import ResourceLimitError

    elements = 1
    for n in shape:
        elements *= int(n)
    need = elements * itemsize * TRACE_ACTIVATION_FACTOR
    limit = (max_memory_mb or default_max_memory_mb()) * 2**20
    if need > limit:
        size = "x".join(str(n) for n in shape)
        raise ResourceLimitError(f"tracing at input {size} would need about {need // 2**20} MB, more than "
                                 f"--max-memory {limit // 2**20} MB", hint="pass a smaller --input-size")
