"""A folder of photographs for the benchmarks, written at run time from images shipped inside scikit-image and
scikit-learn (nothing downloaded, nothing committed).

:func:`write_photo_folder` writes ``count`` PNG crops, seeded: each is a window of one photograph (40-95% of
its shorter side, aspect ratio 0.5 to 2, or a wide strip for the text pages) at a random position, so the
folder's inputs differ from the ``samples`` spec (which feeds each photograph whole, centre-cropped) even
where the photograph is the same. ``bgr=True`` swaps the red and blue planes in the files, for models
trained on OpenCV's BGR order (the tool reads files as RGB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (package, name): photographs and scans bundled with the packages themselves.
PHOTOS = (
    ("skimage", "astronaut"), ("skimage", "camera"), ("skimage", "cat"), ("skimage", "chelsea"),
    ("skimage", "clock"), ("skimage", "coffee"), ("skimage", "coins"), ("skimage", "rocket"),
    ("skimage", "page"), ("skimage", "text"), ("skimage", "moon"), ("skimage", "hubble_deep_field"),
    ("skimage", "immunohistochemistry"), ("skimage", "retina"), ("skimage", "motorcycle_left"),
    ("skimage", "motorcycle_right"), ("sklearn", "china.jpg"), ("sklearn", "flower.jpg"),
)
TEXT_PAGES = ("page", "text")


def _photo(package: str, name: str) -> np.ndarray:
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(skimage.data, name)()


def _crop(image: np.ndarray, rng: np.random.Generator, strip: bool) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    if strip:  # a text-line-like strip: a quarter to a half of the height, most of the width
        h = int(rng.uniform(0.25, 0.5) * height)
        w = int(rng.uniform(0.7, 1.0) * width)
    else:
        h = int(rng.uniform(0.4, 0.95) * side)
        w = int(min(width, h * rng.uniform(0.5, 2.0)))
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return image[top:top + h, left:left + w]


def write_photo_folder(folder: str | Path, count: int = 48, seed: int = 0, bgr: bool = False) -> list[Path]:
    """Write ``count`` seeded PNG crops of the bundled photographs into ``folder``; return their paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [(name, _photo(package, name)) for package, name in PHOTOS]
    paths = []
    for i in range(count):
        name, image = photos[i % len(photos)]
        crop = np.ascontiguousarray(_crop(image, rng, strip=name in TEXT_PAGES))
        if crop.ndim == 3 and crop.shape[2] == 4:
            crop = crop[..., :3]
        if bgr and crop.ndim == 3:
            crop = np.ascontiguousarray(crop[..., ::-1])
        path = folder / f"{i:03d}_{name.split('.')[0]}.png"
        Image.fromarray(crop).save(path)
        paths.append(path)
    return paths
