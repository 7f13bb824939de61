"""Real photos that ship inside installed packages (no download).

``chelsea`` (a cat), ``coffee``, ``astronaut``, ``rocket`` and ``motorcycle`` come from
scikit-image (the demo extra); ``grace_hopper`` from matplotlib's sample data; ``china`` and
``flower`` from scikit-learn (all in the demo extra). Each loads as a float tensor ``(3, H, W)``
in [0, 1], at its own size; :func:`captum_ext.models.preprocess_imagenet` resizes the whole photo
to 224×224 (the squash resize that gives the reference predictions: chelsea → 285 "Egyptian cat"
at 0.80, coffee → 967 "espresso" at 0.86).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["SAMPLE_PHOTOS", "load_photo", "load_sample_photos"]

logger = logging.getLogger(__name__)


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        if name == "motorcycle":
            left, _, _ = data.stereo_motorcycle()
            return left
        return getattr(data, name)()

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib
    import matplotlib.image as mpimg

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(mpimg.imread(path))


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")

    return load


#: name → loader of an ``(H, W, 3)`` uint8 array.
SAMPLE_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "astronaut": _skimage("astronaut"),
    "rocket": _skimage("rocket"),
    "motorcycle": _skimage("motorcycle"),
    "grace_hopper": _grace_hopper,
    "china": _sklearn("china"),
    "flower": _sklearn("flower"),
}


def _to_tensor(array: np.ndarray) -> Tensor:
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    array = array[..., :3]
    image = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).float()
    if array.dtype == np.uint8 or image.max() > 1.0:
        image = image / 255.0
    return image.contiguous()


def load_photo(name: str) -> Tensor:
    """Load one sample photo as ``(3, H, W)`` in [0, 1]."""
    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose from {', '.join(SAMPLE_PHOTOS)}.")
    return _to_tensor(SAMPLE_PHOTOS[name]())


def load_sample_photos(names: list[str] | None = None) -> dict[str, Tensor]:
    """Load the available sample photos (all by default), skipping packages that are absent."""
    photos = {}
    for name in names or list(SAMPLE_PHOTOS):
        try:
            photos[name] = load_photo(name)
        except ImportError:
            if names is not None:
                raise
            logger.info("sample photo %s skipped: its package is not installed", name)
    return photos
