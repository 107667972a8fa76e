"""Checks on activation inputs, made before any of them is materialised or fed to a model.

Inputs are untrusted files like checkpoints. What is checked, and where (:mod:`.inputs` calls these):

- **the file itself**: only regular files are opened (a FIFO, a device or a socket named as a tensor file or
  lying in an image folder is refused or skipped, never read, so nothing blocks), with ``O_NONBLOCK`` and an
  ``fstat`` on the open descriptor, so a file swapped for a FIFO after the listing is caught too;
- **tensor files**: a ``.pt`` goes through the loaders' prescan (storages against their records and
  ``--max-memory``: zip bombs and storages larger than the file are refused before torch allocates them);
  the number of inputs is bounded (:data:`MAX_INPUTS`), each input's size is checked against the memory
  left, and the values are scanned in chunks of a few inputs (a view with stride 0 over a huge shape is
  never materialised whole): non-finite values are refused (or, with ``nonfinite="skip"``, the inputs
  holding them are skipped and counted), and values beyond :data:`INPUT_ABS_LIMIT` are refused, since the
  model and the float32 FFT would overflow on them;
- **images**: the header's size against a pixel budget (Pillow's decompression-bomb limit, as an error
  rather than a warning, and the memory left) before any pixel is decoded, and the resized size too (a
  1 x 100,000,000 strip would otherwise be resized to billions of pixels).

Everything here raises :class:`CbnError` subclasses with one-line messages, or returns a reason to skip.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..errors import ResourceLimitError, UnreadableInputError, UsageError

MAX_INPUTS = 1_000_000  # a Gram profile converges long before; more is a mistake (or an attack)
# The largest input magnitude accepted: products of two such values (every conv, every Gram entry) stay
# far inside float32 (3.4e38), so only the model itself can overflow (reported per layer, exit 6).
INPUT_ABS_LIMIT = 1e15
SCAN_BYTES = 64 * 2**20  # values scanned per chunk (float32 copies of this size at most)
IMAGE_BYTES_PER_PIXEL = 64  # decoded RGB(A), converted, resized and float32 copies: an upper estimate


def check_input_count(count: int, what: str) -> None:
    if count > MAX_INPUTS:
        raise ResourceLimitError(f"{what}: {count:,} inputs, more than the {MAX_INPUTS:,} an activation profile takes",
                                 hint=f"pass --max-inputs (at most {MAX_INPUTS:,})")


def require_regular(path: Path) -> None:
    """Refuse (exit 3) anything but a regular file, without blocking on a FIFO or reading a device."""
    reason = not_regular(path)
    if reason:
        raise UnreadableInputError(f"{path}: {reason}, not a file of inputs")


def not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file that can be read (None when it is one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return f"cannot be opened ({exc.strerror or type(exc).__name__})"
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISREG(mode):
        return None
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file")
    return kind


def list_folder(folder: Path) -> tuple[list[Path], list[str]]:
    """The folder's visible entries that are regular files (symlinks to regular files included), sorted,
    and notes for what was passed over. Not recursive: symlink loops and links to folders are never walked."""
    files, other = [], []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise UnreadableInputError(f"{folder}: cannot list the folder ({exc.strerror or type(exc).__name__})") from exc
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            regular = entry.is_file()  # follows a symlink; a loop or a dangling link is not a file
        except OSError:
            regular = False
        if regular:
            files.append(Path(entry.path))
        else:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                other.append(entry.name)
    return files, other


def torch_file_prescan(path: Path, budget_bytes: int) -> None:
    """The loaders' check of a torch.save file's storages (zip bombs, storages past the budget)."""
    from ..loaders.pytorch._script_archive import prescan_torch_file

    prescan_torch_file(path, budget_bytes)


def check_input_size(shape: tuple[int, ...], room_bytes: int, what: str) -> None:
    """One input, in float32, must fit many times in the memory left (a batch and the model's activations)."""
    per = 4 * math.prod(shape)
    if per * 16 > room_bytes:
        from ..analysis.budget import format_bytes

        raise ResourceLimitError(f"{what}: one input of shape {tuple(shape)} takes {format_bytes(per)}; "
                                 f"--max-memory leaves {format_bytes(max(room_bytes, 0))}",
                                 hint="smaller inputs, or a larger --max-memory")


def scan_values(tensor: Any, count: int, what: str, nonfinite: str = "refuse") -> list[int]:
    """Scan inputs ``0..count-1`` of an array ``(N, ...)`` in chunks; returns the indices to skip.

    Non-finite values: refused (exit 3), or with ``nonfinite="skip"`` the inputs holding them are returned.
    Values beyond :data:`INPUT_ABS_LIMIT` are refused (exit 3) either way.
    """
    per = max(1, math.prod(tuple(tensor.shape[1:])))
    step = max(1, SCAN_BYTES // (8 * per))
    bad: list[int] = []
    largest = 0.0
    for start in range(0, count, step):
        chunk = tensor[start:min(count, start + step)]
        values = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk))
        if not (values.is_floating_point() or values.is_complex()):
            values = values.to(torch.float64)
        flat = values.reshape(len(values), -1)
        finite = torch.isfinite(flat).all(dim=1)
        if not bool(finite.all()):
            bad.extend(start + int(i) for i in torch.nonzero(~finite).flatten())
            flat = flat[finite]
        if flat.numel():
            largest = max(largest, float(flat.abs().max()))
    if bad and nonfinite != "skip":
        raise UnreadableInputError(f"{what}: {len(bad)} of {count} inputs hold non-finite values (NaN or Inf), "
                                   f"the first input {bad[0]}",
                                   hint="clean the file, or pass --skip-nonfinite to skip those inputs")
    if largest > INPUT_ABS_LIMIT:
        raise UnreadableInputError(f"{what}: values up to {largest:.3g} in magnitude; inputs beyond "
                                   f"{INPUT_ABS_LIMIT:.0e} would overflow the model's float32 arithmetic",
                                   hint="rescale the inputs")
    if len(bad) == count:
        raise UnreadableInputError(f"{what}: every input holds non-finite values (NaN or Inf)")
    return bad


def check_dtype(tensor: Any, what: str) -> None:
    dtype = tensor.dtype
    if isinstance(tensor, torch.Tensor):
        ok = dtype.is_floating_point or dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    else:
        ok = np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
    if not ok:
        raise UsageError(f"{what}: inputs of dtype {dtype}, not real numbers")


# ---------------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------------


def pixel_budget(room_bytes: int) -> int:
    """Pixels an image may have: Pillow's decompression-bomb limit, and what the memory left can decode."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS or 89_478_485
    return int(max(1, min(limit, room_bytes // IMAGE_BYTES_PER_PIXEL)))


def image_refusal(size: tuple[int, int], target: tuple[int, int], crop_pct: float, budget: int) -> str | None:
    """Why an image of ``size`` (width, height) is not decoded: too many pixels in the file or once resized
    to cover ``target`` (height, width); None when it fits."""
    width, height = size
    if width <= 0 or height <= 0:
        return "an empty image"
    if width * height > budget:
        return f"{width}x{height} pixels, over the pixel budget of {budget:,}"
    th, tw = target
    scale = max(th / height, tw / width) / crop_pct
    resized = max(tw, round(width * scale)) * max(th, round(height * scale))
    if resized > budget:
        return f"{width}x{height} pixels, {resized:,} once resized for the model: over the pixel budget of {budget:,}"
    return None


def open_image(path: Path, target: tuple[int, int], crop_pct: float, budget: int) -> tuple[Any, str | None]:
    """A decoded PIL image of a regular file, or (None, the reason it is skipped). Pillow's
    decompression-bomb warning is an error here, and the header is checked before decoding."""
    import warnings

    from PIL import Image

    reason = not_regular(path)
    if reason:
        return None, reason
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with path.open("rb") as handle:
                image = Image.open(handle)
                refused = image_refusal(image.size, target, crop_pct, budget)
                if refused:
                    return None, refused
                image.load()
                return image, None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return None, f"over Pillow's decompression-bomb limit ({' '.join(str(exc).split())[:80]})"
        except MemoryError:
            return None, "too large to decode"
        except Exception as exc:  # Pillow raises many kinds for damaged files (OSError, ValueError, SyntaxError, ...)
            return None, type(exc).__name__


def finite_image(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def indices_except(count: int, skip: list[int]) -> Iterator[int]:
    """0..count-1 without the skipped indices."""
    skipped = set(skip)
    return (i for i in range(count) if i not in skipped)
