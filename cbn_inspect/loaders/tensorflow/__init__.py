"""TensorFlow-family files: TFLite flatbuffers (:mod:`._tflite`), Keras ``.keras``/``.h5`` weights
(:mod:`._keras`), and the formats read elsewhere (a SavedModel folder, a Core ML package: :mod:`._foreign`),
recognised so that the error names the conversion route.

:func:`read` is the one entry the loaders' format table (:mod:`cbn_inspect.loaders._formats`) calls; the
``looks_like_*``/``is_*`` sniffs and the ``foreign_*`` checks are what it recognises these formats by.
Heavy or optional imports (``flatbuffers``, ``h5py``, numpy, torch) happen inside the readers.
"""

from __future__ import annotations

from pathlib import Path

from ._foreign import foreign_file_kind, foreign_folder_kind, refuse

__all__ = ["FORMATS", "foreign_file_kind", "foreign_folder_kind", "is_keras_archive", "looks_like_hdf5",
           "looks_like_tflite", "read", "refuse"]

FORMATS = ("tflite", "keras", "keras-h5", "savedmodel", "coreml")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def looks_like_tflite(head: bytes) -> bool:
    """The TFLite file identifier ``TFL3`` after the root offset."""
    return len(head) >= 8 and head[4:8] == b"TFL3"


def looks_like_hdf5(head: bytes) -> bool:
    return head[:8] == HDF5_SIGNATURE


def is_keras_archive(names: list[str]) -> bool:
    """A ``.keras`` zip: ``config.json`` and ``model.weights.h5`` at the top."""
    return "config.json" in names and "model.weights.h5" in names


def read(path: Path, fmt: str, *, fold_batchnorm: bool = True, input_size: tuple[int, ...] | None = None,
         max_memory_mb: int | None = None):
    """A :class:`~cbn_inspect.records.LoadedModel` of a ``tflite``, ``keras`` or ``keras-h5`` file; for a
    ``savedmodel`` or ``coreml`` source, the one-line error naming the conversion (exit 3)."""
    if fmt == "tflite":
        from ._tflite import read_tflite

        return read_tflite(path, input_size=input_size, max_memory_mb=max_memory_mb)
    if fmt in ("keras", "keras-h5"):
        from ._keras import read_h5, read_keras_archive

        reader = read_keras_archive if fmt == "keras" else read_h5
        return reader(path, fold_batchnorm=fold_batchnorm, input_size=input_size, max_memory_mb=max_memory_mb)
    refuse(path, fmt)
    raise AssertionError(fmt)  # refuse always raises
