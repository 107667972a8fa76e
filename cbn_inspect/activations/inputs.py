"""Input readers for activation profiles: what is fed to the model, and how it is preprocessed.

An INPUTS spec is one of:

- ``noise``: seeded standard Gaussian tensors of the model's input shape, drawn one input at a time from
  one generator (the same inputs whatever the batch size); ``--max-inputs`` of them (default 64);
- ``samples``: real photographs shipped inside installed packages (scikit-learn's ``load_sample_images``,
  scikit-image's bundled ``data`` images), never downloaded;
- a folder: the image files in it (PNG, JPEG and whatever else Pillow opens), sorted by name; a file
  Pillow cannot read is skipped with a note;
- a tensor file: ``.npy`` (memory-mapped, no pickles), ``.pt``/``.pth`` (``torch.load(weights_only=True)``),
  ``.safetensors``; an array ``(N, C, *spatial)`` (or one ``(C, *spatial)`` input) taken as model inputs
  as they are, without resizing or normalisation.

Images are preprocessed like timm's evaluation transform: converted to the model's channels (``L`` for 1,
``RGB`` for 3), the shorter side resized to ``size / crop_pct`` with the model's interpolation, centre
cropped to the input size, scaled to [0, 1] and normalised with the model's mean and std. The model's own
config decides each step (timm's ``pretrained_cfg``, the ONNX input's shape) unless a flag overrides it;
:meth:`InputStream.describe` records what was done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..errors import ResourceLimitError, UnreadableInputError, UsageError
from ..records import ActivationSettings
from . import _guard

DEFAULT_NOISE_COUNT = 64
TENSOR_SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")
from .._parse import INTERPOLATIONS  # noqa: E402  (defined without torch for the command line)
# Photographs shipped inside the packages themselves (no download): (package, name).
SAMPLE_IMAGES = (
    ("sklearn", "china.jpg"), ("sklearn", "flower.jpg"),
    ("skimage", "astronaut"), ("skimage", "camera"), ("skimage", "coffee"), ("skimage", "chelsea"),
    ("skimage", "rocket"), ("skimage", "coins"), ("skimage", "moon"), ("skimage", "hubble_deep_field"),
    ("skimage", "immunohistochemistry"), ("skimage", "retina"), ("skimage", "grass"), ("skimage", "gravel"),
    ("skimage", "brick"),
)


@dataclass(frozen=True)
class ModelInput:
    """What a model expects, from its own config: ``(channels, *spatial)`` and the image preprocessing."""

    channels: int
    spatial: tuple[int, ...] | None  # None: not declared (then --input-size must say)
    ndim: int = 2  # spatial axes
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    source: str = "default"  # where the values came from: "timm pretrained_cfg", "onnx input", "metadata", ...
    fixed_batch: int | None = None  # an ONNX input with a static batch axis


@dataclass(frozen=True)
class Preprocessing:
    """The preprocessing actually applied (model config, then flags)."""

    channels: int
    spatial: tuple[int, ...]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    interpolation: str
    crop_pct: float
    source: str
    overridden: tuple[str, ...] = ()

    def describe(self, kind: str) -> dict[str, Any]:
        images = kind in ("folder", "samples")
        out: dict[str, Any] = {
            "input_shape": [self.channels, *self.spatial],
            "config_source": self.source,
            "overridden": list(self.overridden),
        }
        if images:
            out.update({
                "resize": (f"shorter side to {_fmt(tuple(math.floor(s / self.crop_pct) for s in self.spatial))} "
                           f"({self.interpolation}), centre crop to {_fmt(self.spatial)}"),
                "crop_pct": self.crop_pct,
                "interpolation": self.interpolation,
                "color": {1: "L (luminance)", 3: "RGB"}.get(self.channels, str(self.channels)),
                "scale": "pixel / 255",
                "mean": list(self.mean) if self.mean else None,
                "std": list(self.std) if self.std else None,
            })
        elif kind == "noise":
            out["distribution"] = "standard Gaussian, one input at a time from one seeded generator"
        else:
            out["transform"] = "none: the file's tensors are fed as they are"
        return out


def resolve_preprocessing(model: ModelInput, settings: ActivationSettings) -> Preprocessing:
    """The model's config, overridden by the flags in ``settings``; errors for what cannot be decided."""
    overridden = []
    spatial = model.spatial
    channels = model.channels
    if settings.input_size is not None:
        size = tuple(int(v) for v in settings.input_size)
        if len(size) == model.ndim + 1:
            channels, size = size[0], size[1:]
        elif len(size) == 1:
            size = size * model.ndim
        elif len(size) != model.ndim:
            raise UsageError(f"--input-size {_fmt(size)}: the model takes {model.ndim}-D inputs")
        spatial = tuple(size)
        overridden.append("input_size")
    if spatial is None:
        raise UsageError("the model does not declare its input size: pass --input-size (N, HxW or CxHxW)")
    mean, std = model.mean, model.std
    if settings.mean is not None:
        mean, _ = tuple(settings.mean), overridden.append("mean")
    if settings.std is not None:
        std, _ = tuple(settings.std), overridden.append("std")
    for label, value in (("mean", mean), ("std", std)):
        if value is not None and len(value) not in (1, channels):
            raise UsageError(f"--{label} has {len(value)} values; the model takes {channels} channels")
    if std is not None and any(v == 0 for v in std):
        raise UsageError("--std values must be non-zero")
    interpolation = model.interpolation if model.interpolation in INTERPOLATIONS else "bilinear"
    if settings.interpolation is not None:
        if settings.interpolation not in INTERPOLATIONS:
            raise UsageError(f"--interpolation {settings.interpolation!r}: use one of {', '.join(INTERPOLATIONS)}")
        interpolation = settings.interpolation
        overridden.append("interpolation")
    return Preprocessing(channels=channels, spatial=spatial, mean=mean, std=std, interpolation=interpolation,
                         crop_pct=model.crop_pct, source=model.source,
                         overridden=tuple(overridden))


@dataclass
class InputStream:
    """Inputs of one kind, produced batch by batch (never all in memory unless the file itself is)."""

    kind: str
    source: str
    count: int  # inputs that will be produced (the folder's candidates: skipped files lower the final count)
    prep: Preprocessing
    produce: Callable[[], Iterator[torch.Tensor]] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    seen: int = 0

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Batches ``(b, C, *spatial)`` of float32 inputs, in order."""
        pending: list[torch.Tensor] = []
        for item in self.produce():
            pending.append(item)
            if len(pending) == batch_size:
                self.seen += len(pending)
                yield torch.stack(pending)
                pending = []
        if pending:
            self.seen += len(pending)
            yield torch.stack(pending)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.source, "count": self.seen,
                "preprocessing": self.prep.describe(self.kind), "notes": list(self.notes)}


def open_inputs(spec: str, prep: Preprocessing, settings: ActivationSettings,
                room_bytes: int | None = None) -> InputStream:
    """The stream for an INPUTS spec (``noise``, ``samples``, a folder of images or a tensor file).

    Checked here, before any input is produced (:mod:`._guard`): the number of inputs, that a path is a
    folder or a regular file, a tensor file's storages, shape, size and values. ``room_bytes`` is the memory
    left under ``--max-memory`` (default: the default bound less what the process uses).
    """
    limit = settings.max_inputs
    if limit is not None:
        _guard.check_input_count(limit, f"--max-inputs {limit}")
    if room_bytes is None:
        from .._limits import current_rss_bytes
        from ..loaders._policy import default_max_memory_mb

        room_bytes = default_max_memory_mb() * 2**20 - current_rss_bytes()
    _guard.check_input_size((prep.channels, *prep.spatial), room_bytes, f"--activations {spec}")
    if spec == "noise":
        count = limit or DEFAULT_NOISE_COUNT
        return InputStream("noise", f"noise (seed {settings.seed})", count, prep,
                           lambda: _noise(count, (prep.channels, *prep.spatial), settings.seed))
    if spec == "samples":
        _need_images(prep, "sklearn", "skimage")
        names = SAMPLE_IMAGES[:limit] if limit else SAMPLE_IMAGES
        stream = InputStream("samples", "samples (scikit-learn, scikit-image)", len(names), prep, lambda: iter(()))
        stream.produce = lambda: (_image_tensor(img, prep) for img in _sample_images(names))
        return stream
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"--activations {spec!r}: no such file or folder (or use noise, samples)")
    if path.is_dir():
        _need_images(prep)
        files, other = _guard.list_folder(path)
        stream = InputStream("folder", str(path), min(len(files), limit) if limit else len(files), prep,
                             lambda: iter(()))
        if other:
            stream.notes.append(f"{len(other)} entr{'y' if len(other) == 1 else 'ies'} passed over (not a regular "
                                f"file: FIFO, device, socket, broken or looping link): {', '.join(other[:5])}")
        _guard.check_input_count(stream.count, f"--activations {spec}")
        budget = _guard.pixel_budget(room_bytes)
        stream.produce = lambda: _folder(files, prep, stream, limit, budget)
        return stream
    _guard.require_regular(path)
    tensor = _read_tensor_file(path, room_bytes)
    if tensor.ndim == 1 + len(prep.spatial):
        tensor = tensor[None]
    if tensor.ndim != 2 + len(prep.spatial) or tensor.shape[1] != prep.channels:
        raise UsageError(f"{path}: tensors of shape {tuple(tensor.shape)} do not fit the model's input "
                         f"({prep.channels}, {_fmt(prep.spatial)}): expected (N, {prep.channels}, ...)")
    count = min(tensor.shape[0], limit) if limit else tensor.shape[0]
    if count == 0:
        raise UsageError(f"{path}: holds no inputs (first axis is 0)")
    _guard.check_input_count(count, str(path))
    _guard.check_dtype(tensor, str(path))
    _guard.check_input_size(tuple(tensor.shape[1:]), room_bytes, str(path))
    skip = _guard.scan_values(tensor, count, str(path), settings.nonfinite)
    prep = replace(prep, spatial=tuple(int(v) for v in tensor.shape[2:]), source="tensor file")
    stream = InputStream("tensor-file", str(path), count - len(skip), prep,
                         lambda: (_item(tensor, i) for i in _guard.indices_except(count, skip)))
    if skip:
        stream.notes.append(f"{len(skip)} input(s) skipped for non-finite values (--skip-nonfinite): "
                            f"{', '.join(str(i) for i in skip[:8])}{' ...' if len(skip) > 8 else ''}")
    return stream


def _item(tensor: Any, i: int) -> torch.Tensor:
    """Input ``i`` of a file's array (torch, or a memory-mapped numpy array) as a float32 tensor of its own."""
    if isinstance(tensor, torch.Tensor):
        return tensor[i].to(torch.float32).clone()
    return torch.from_numpy(np.array(tensor[i], dtype=np.float32))


def _need_images(prep: Preprocessing, *packages: str) -> None:
    """Image inputs need 2-D models of 1 or 3 channels, and Pillow (plus the packages holding the samples)."""
    import importlib.util

    for package in ("PIL", *packages):
        if importlib.util.find_spec(package) is None:
            from ..errors import MissingExtraError  # an installation missing a part, not a wrong command (exit 10)

            raise MissingExtraError(f"image inputs need the {package} package",
                                    hint="pip install 'cbn-inspect[activations]'")
    if len(prep.spatial) != 2:
        raise UsageError(f"image inputs need a model with 2-D inputs; this one takes {len(prep.spatial)}-D "
                         "inputs: use noise or a tensor file")
    if prep.channels not in (1, 3):
        raise UsageError(f"image inputs give 1 or 3 channels; this model takes {prep.channels}: use noise or "
                         "a tensor file")


def _noise(count: int, shape: tuple[int, ...], seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield torch.randn(shape, generator=generator)


def _sample_images(names) -> Iterator[np.ndarray]:
    """The bundled photographs as uint8 arrays (H, W) or (H, W, 3)."""
    for package, name in names:
        if package == "sklearn":
            from sklearn.datasets import load_sample_image

            yield load_sample_image(name)
        else:
            import skimage.data

            yield getattr(skimage.data, name)()


def _folder(files: list[Path], prep: Preprocessing, stream: InputStream, limit: int | None,
            budget: int) -> Iterator[torch.Tensor]:
    """The folder's images in order; a file that is not a readable image within the pixel budget is skipped
    (noted once, on the first pass over the inputs)."""
    produced = 0
    skipped: list[str] = []
    over = 0
    for path in files:
        if limit and produced >= limit:
            break
        image, reason = _guard.open_image(path, prep.spatial, prep.crop_pct, budget)
        tensor = None
        if image is not None:
            try:
                with image:
                    tensor = _image_tensor(image, prep)
            except Exception as exc:  # a decoded image Pillow cannot convert or resize (exotic modes)
                reason = type(exc).__name__
        if tensor is not None and not _guard.finite_image(tensor):
            tensor, reason = None, "non-finite pixel values"
        if tensor is None:
            over += "pixel budget" in (reason or "") or "bomb" in (reason or "")
            skipped.append(f"{path.name} ({reason})")
            continue
        produced += 1
        yield tensor
    if skipped and not any(n.startswith("file(s) skipped") for n in stream.notes):  # noted on the first pass
        stream.notes.append(f"file(s) skipped (not an image Pillow reads within the limits): {len(skipped)}: "
                            f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}")
    if produced == 0:
        if over:
            raise ResourceLimitError(f"--activations {stream.source}: no image within the pixel budget "
                                     f"({', '.join(skipped[:2])})", hint="smaller images, or a larger --max-memory")
        raise UsageError(f"--activations {stream.source}: no readable image in the folder")


def _image_tensor(image: Any, prep: Preprocessing) -> torch.Tensor:
    """One image (PIL or uint8 array) -> (C, H, W) float32, preprocessed as :class:`Preprocessing` says."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("L" if prep.channels == 1 else "RGB")
    height, width = prep.spatial
    scale = max(height / image.height, width / image.width) / prep.crop_pct
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resample = getattr(Image.Resampling, prep.interpolation.upper())
    image = image.resize(size, resample=resample)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if prep.mean is not None:
        tensor = tensor - torch.tensor(prep.mean, dtype=torch.float32).reshape(-1, 1, 1)
    if prep.std is not None:
        tensor = tensor / torch.tensor(prep.std, dtype=torch.float32).reshape(-1, 1, 1)
    return tensor.contiguous()


def _read_tensor_file(path: Path, room_bytes: int) -> Any:
    """An array-like ``(N, C, ...)`` from .npy (memory-mapped), .pt (weights_only, after the storage
    prescan) or .safetensors (memory-mapped); nothing is converted or copied here."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if not np.issubdtype(array.dtype, np.number):
                raise UsageError(f"{path}: a .npy of dtype {array.dtype}, not numbers")
            return array
        if suffix in (".pt", ".pth"):
            _guard.torch_file_prescan(path, max(room_bytes // 2, 1))
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=_is_zip(path))
            return _single_tensor(path, obj)
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                names = list(handle.keys())
                picked = next((k for k in ("inputs", "input", "x", "images") if k in names), None)
                if picked is None and len(names) != 1:
                    raise UsageError(f"{path}: holds {len(names)} tensors; name the inputs 'inputs' (or keep only one)")
                name = picked or names[0]
                shape = handle.get_slice(name).get_shape()
                if 8 * math.prod(shape) > room_bytes // 2:
                    raise ResourceLimitError(f"{path}: tensor {name!r} of shape {tuple(shape)} does not fit in the "
                                             "memory left under --max-memory", hint="split the file")
                return handle.get_tensor(name)
    except (UsageError, UnreadableInputError, ResourceLimitError):
        raise
    except Exception as exc:  # numpy, torch and safetensors raise many kinds for a bad file
        text = " ".join(str(exc).split())[:160]
        raise UnreadableInputError(f"{path}: not a readable tensor file ({type(exc).__name__}: {text})") from exc
    raise UsageError(f"--activations {path}: not a folder of images or a tensor file "
                     f"({', '.join(TENSOR_SUFFIXES)}); or use noise, samples")


def _is_zip(path: Path) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


def _single_tensor(path: Path, obj: Any) -> Any:
    """The inputs tensor of a loaded object, as stored (converted to float32 one input at a time later, so
    that a view with stride 0 over a huge shape is never materialised)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        for key in ("inputs", "input", "x", "images"):
            if key in tensors:
                return tensors[key].detach()
        if len(tensors) == 1:
            return next(iter(tensors.values())).detach()
        raise UsageError(f"{path}: holds {len(tensors)} tensors; name the inputs 'inputs' (or keep only one)")
    raise UsageError(f"{path}: holds a {type(obj).__name__}, not a tensor")


def _fmt(shape) -> str:
    return "x".join(str(v) for v in shape)
