"""The input size of a model that leaves it open (an ONNX input with dynamic spatial axes), taken from the
images it is run on when no ``--input-size`` is given.

All inputs of one profile must share one grid (the per-frequency Gram matrices are summed over them), so the
size is one for all: the smallest height and the smallest width over the images used, each rounded down to
a multiple of :data:`MULTIPLE` (the largest stride of common backbones and detectors, whose up-sampling
paths need it) and capped at :data:`CAP` (the per-frequency Gram matrices of larger grids take gigabytes).
Every image then goes through the documented preprocessing of a model with a declared size: shorter side
resized, centre crop to that size, ``crop_pct`` 1. The rule and its result are written into the notes and
the JSON (``inputs.preprocessing.size_from``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .inputs import SAMPLE_IMAGES, ModelInput

MULTIPLE = 32
CAP = 512


def _sizes(spec: str, limit: int | None) -> list[tuple[int, int]]:
    """(height, width) of each image ``spec`` names (the first ``limit``); header reads only for a folder."""
    if spec == "samples":
        from .inputs import _sample_images  # the same reader the stream uses

        names = SAMPLE_IMAGES[:limit] if limit else SAMPLE_IMAGES
        return [tuple(int(v) for v in image.shape[:2]) for image in _sample_images(names)]
    from PIL import Image, UnidentifiedImageError

    out = []
    for path in sorted(p for p in Path(spec).iterdir() if p.is_file() and not p.name.startswith(".")):
        if limit and len(out) >= limit:
            break
        try:
            with Image.open(path) as image:
                out.append((int(image.height), int(image.width)))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            continue  # the stream skips it too, and says so
    return out


def size_from_images(model: ModelInput, spec: str, limit: int | None) -> tuple[ModelInput, str] | None:
    """``model`` with its spatial size taken from the images of ``spec`` (``samples`` or a folder), and the note
    that says how; None when the model declares its size, the inputs are no images, or no image is readable."""
    if model.spatial is not None or model.ndim != 2:
        return None
    if spec != "samples" and not Path(spec).is_dir():
        return None
    import importlib.util

    for package in ("PIL", *(("sklearn", "skimage") if spec == "samples" else ())):
        if importlib.util.find_spec(package) is None:
            from ..errors import MissingExtraError

            raise MissingExtraError(f"image inputs need the {package} package",
                                    hint="pip install 'cbn-inspect[activations]'")
    sizes = _sizes(spec, limit)
    if not sizes:
        return None
    low = (min(h for h, _ in sizes), min(w for _, w in sizes))
    size = tuple(min(CAP, max(MULTIPLE, v // MULTIPLE * MULTIPLE)) for v in low)
    note = (f"the model's input has dynamic spatial axes and no --input-size was given: inputs sized from the "
            f"{len(sizes)} image(s), {size[0]}x{size[1]} (the smallest height and width, {low[0]}x{low[1]}, rounded "
            f"down to a multiple of {MULTIPLE}, at most {CAP}); each image's shorter side resized and centre-cropped "
            f"to it")
    return replace(model, spatial=size, crop_pct=1.0, source=f"{model.source}, size from the images"), note
