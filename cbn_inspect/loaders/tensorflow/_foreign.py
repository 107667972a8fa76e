"""Formats of the TensorFlow family that cbn-inspect does not read, recognised so that the error names the
conversion route instead of "not a checkpoint" or "no convolution weights".

- A TensorFlow **SavedModel**: a folder with ``saved_model.pb`` (or ``.pbtxt``) and ``variables/``; its graph is
  TensorFlow code. Route: ``tf2onnx`` to ONNX, or TensorFlow's TFLite converter.
- A **Core ML** model: an ``.mlpackage`` folder (``Manifest.json``, ``Data/com.apple.CoreML/model.mlmodel``)
  or a single ``.mlmodel``. Route: analyse the PyTorch/TensorFlow model it was converted from (coremltools
  converts to Core ML, not back); ``onnxmltools.convert_coreml`` reads old neural-network ``.mlmodel`` files.

``saved_model.pb`` and ``.mlmodel`` are protobufs whose first bytes look like an ONNX model's, so these two
are recognised by name before content; the folders by their layout. Either way: one line, exit 3.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UnreadableInputError

SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
SAVEDMODEL_HINT = ("convert it to ONNX with tf2onnx (python -m tf2onnx.convert --saved-model DIR --output "
                   "model.onnx) or to .tflite with tf.lite.TFLiteConverter, and analyse that")
COREML_HINT = ("analyse the PyTorch/TensorFlow/ONNX model it was converted from (coremltools converts to Core "
               "ML, not back); onnxmltools.convert_coreml turns a neural-network .mlmodel into ONNX")


def _is_mlpackage(path: Path) -> bool:
    return path.name.lower().endswith(".mlpackage") or (
        (path / "Manifest.json").is_file() and (path / "Data" / "com.apple.CoreML").is_dir())


def foreign_folder_kind(path: Path) -> str | None:
    """``savedmodel`` or ``coreml`` for a folder in one of those layouts, else None."""
    try:
        if any((path / name).is_file() for name in SAVEDMODEL_FILES):
            return "savedmodel"
        if _is_mlpackage(path):
            return "coreml"
    except OSError:
        return None
    return None


def foreign_file_kind(path: Path) -> str | None:
    """``savedmodel`` or ``coreml`` for a file that is (by name) part of one of them, else None."""
    name = path.name.lower()
    if name in SAVEDMODEL_FILES:
        return "savedmodel"
    if name.endswith(".mlmodel") or any(p.name.lower().endswith(".mlpackage") for p in path.parents):
        return "coreml"
    return None


def refuse(path: Path, kind: str) -> None:
    """Raise the one-line error (exit 3) for a SavedModel or Core ML source."""
    if kind == "savedmodel":
        raise UnreadableInputError(f"{path}: a TensorFlow SavedModel, which cbn-inspect does not read",
                                   hint=SAVEDMODEL_HINT)
    what = "a Core ML package (.mlpackage)" if path.is_dir() or ".mlpackage" in str(path).lower() else "a Core ML model (.mlmodel)"
    raise UnreadableInputError(f"{path}: {what}, which cbn-inspect does not read", hint=COREML_HINT)
