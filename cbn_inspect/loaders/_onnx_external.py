"""Loading an ONNX model whose tensors live in external data files, confined to the model's folder.

An ONNX file may say that a tensor's bytes are in another file (``external_data``: ``location``, ``offset``,
``length``). A hostile model could point that at ``../../etc/passwd``, an absolute path, a symlink to
anything, a FIFO (the read would block) or a device (``/dev/zero``: an endless read). Since release 1.22
the onnx library itself refuses paths outside the model's folder, symlinks, hardlinks and races between
check and open (``onnx/external_data_helper.py``; pinned as ``onnx>=1.22`` in the ``onnx`` extra). We check
first anyway, so that every refusal is one line with exit 3 whatever the onnx version, and nothing is read
before the check: :func:`load_onnx_model` reads the graph without external data, checks every location
(relative, inside the folder once resolved, no symlink on the way, a regular file, opened non-blocking,
``offset + length`` within the file, all the bytes within ``max_bytes``) and only then lets onnx load them.
The weights side (:mod:`._onnx`) and the runner (:mod:`cbn_inspect.activations._onnx`) both load through here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Iterator

from ..errors import ResourceLimitError, UnreadableInputError


def load_onnx_model(path: Path, max_bytes: int | None = None) -> Any:
    """The ModelProto of ``path`` with its external data loaded, after the checks above."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and the like
        raise UnreadableInputError(f"{path}: not a readable ONNX model ({' '.join(str(exc).split())[:160]})") from exc
    tensors = [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not tensors:
        return model
    folder = path.resolve().parent
    total = 0
    for tensor in tensors:
        info = {entry.key: entry.value for entry in tensor.external_data}
        total += check_location(folder, info, tensor.name, path)
        if max_bytes is not None and total > max_bytes:
            raise ResourceLimitError(f"{path}: external data of more than {total:,} bytes, past --max-memory",
                                     hint="a larger --max-memory")
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(folder))
    except Exception as exc:  # onnx's own refusals (its checks come on top of ours) and read errors
        raise UnreadableInputError(f"{path}: its external data cannot be read "
                                   f"({' '.join(str(exc).split())[:160]})") from exc
    return model


def check_location(folder: Path, info: dict[str, str], name: str, path: Path) -> int:
    """Bytes the tensor's external data takes; refuses (exit 3) a location outside ``folder``, through a
    symlink, not a regular file, or a range past the file's end."""
    location = info.get("location", "")

    def refuse(why: str) -> UnreadableInputError:
        return UnreadableInputError(f"{path}: tensor {name!r} has external data {location!r} {why}; refused",
                                    hint="external data must be regular files inside the model's folder")

    if not location or "\x00" in location:
        raise refuse("without a valid location")
    relative = Path(location)
    if relative.is_absolute() or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise refuse("at an absolute path")
    if ".." in relative.parts or ".." in location.replace("\\", "/").split("/"):
        raise refuse("outside the model's folder")
    current = folder
    for part in relative.parts:  # no symlink anywhere on the way (a linked folder as much as a linked file)
        current = current / part
        if current.is_symlink():
            raise refuse("through a symlink")
    target = (folder / relative).resolve()
    if folder != target and folder not in target.parents:
        raise refuse("outside the model's folder")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise refuse(f"that cannot be opened ({exc.strerror or type(exc).__name__})") from exc
    try:
        status = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(status.st_mode):
        raise refuse("that is not a regular file (a FIFO, device or socket)")
    try:
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") else status.st_size - offset
    except ValueError:
        raise refuse("with an offset or length that is not a number") from None
    if offset < 0 or length < 0 or offset + length > status.st_size:
        raise refuse(f"with bytes {offset}..{offset + length} past the file's {status.st_size}")
    return length


def _all_tensors(model: Any) -> Iterator[Any]:
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)
