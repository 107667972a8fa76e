"""Values a user types (``--grid``, ``--input-size``, the choices of ``--activation-side`` and
``--interpolation``), parsed in plain Python with no torch or numpy, so that the command line can refuse a bad
value before it imports anything heavy. :mod:`cbn_inspect.loaders`, :mod:`cbn_inspect.records` and
:mod:`cbn_inspect.activations.inputs` re-export what they own from here.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UsageError

# The largest grid, stride, dilation or group count a file may declare: beyond it the numbers are not a
# geometry but an attack on memory (bounds on what an analysis may cost are the resource limits' business).
MAX_DECLARED = 2**20
ACTIVATION_SIDES = ("input", "output")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


FIGURE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def figure_format(path: str | Path) -> str:
    """The ``--plot`` output format from the file's extension, or a usage error naming the ones supported."""
    fmt = FIGURE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"--plot {path}: unknown image type; use a .png, .svg or .pdf file name")
    return fmt


def parse_grid(text: str) -> tuple[int, ...]:
    """``"32"``, ``"14x14"`` or ``"8x8x8"`` -> a tuple of positive ints. Raises ValueError.

    Strict: numbers joined by ``x`` (or ``×``), nothing else -- ``"3x"``, ``"3,3"`` and ``"3 x"`` are errors."""
    cleaned = text.strip().lower()
    if not re.fullmatch(r"\d{1,9}(?:[x×]\d{1,9}){0,2}", cleaned):
        raise ValueError(f"not a grid: {text!r}")
    values = tuple(int(p) for p in re.split(r"[x×]", cleaned))
    if not values or min(values) < 1 or len(values) > 3 or max(values) > MAX_DECLARED:
        raise ValueError(f"not a grid: {text!r}")
    return values


def parse_input_size(text: str | tuple[int, ...] | None) -> tuple[int, ...] | None:
    """``"224"``, ``"256x192"``, ``"3x224x224"`` (or a tuple) -> a tuple of positive ints; None stays None."""
    if text is None or isinstance(text, tuple):
        return text
    cleaned = str(text).strip().lower()
    strict = re.fullmatch(r"\d+(?:[x×]\d+){0,3}", cleaned)
    values = tuple(int(p) for p in re.split(r"[x×]", cleaned)) if strict else ()
    if not values or min(values) < 1 or len(values) > 4:
        raise UsageError(f"--input-size {text!r}: use N, HxW or CxHxW, e.g. 224, 256x192 or 3x224x224")
    return values
