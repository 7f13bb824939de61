"""Input conversion and validation shared by the plotting functions.

Conventions (the same as ``captum.attr.visualization`` for NumPy, the same as PyTorch for tensors):

- images: a torch tensor is channels-first, ``(C, H, W)``, ``(1, C, H, W)`` or ``(H, W)``; a NumPy
  array is channels-last, ``(H, W, C)`` or ``(H, W)``. ``C`` is 1, 3 or 4. Floats are in [0, 1]
  (or in [0, 255], as Captum also accepts); integers are in [0, 255].
- attribution maps: a torch tensor is ``(*S)``, ``(C, *S)`` or ``(1, C, *S)`` (a Captum layer map
  ``(N, 1, *S)`` for one example); a NumPy image map is ``(H, W)`` or ``(H, W, C)``. Channels are
  summed, as Captum's ``visualize_image_attr`` does.

Nothing here imports ``matplotlib.pyplot`` or Captum.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ImageLike = Union[Tensor, np.ndarray]
MapLike = Union[Tensor, np.ndarray]

_IMAGE_CHANNELS = (1, 3, 4)
_SMOOTH_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
_SMOOTH_ALIASES = ("linear", "bilinear", "trilinear", "smooth")
_RANK_NAMES = {1: "1D signal", 2: "2D image", 3: "3D volume"}


def as_array(value: Any, name: str) -> tuple[np.ndarray, bool]:
    """Return ``(array, channels_first)``: tensors are channels-first, everything else channels-last."""
    if isinstance(value, Tensor):
        tensor = value.detach().cpu()
        if tensor.is_floating_point():  # float16/bfloat16 included (NumPy has no bfloat16)
            tensor = tensor.double()
        return tensor.numpy(), True
    if isinstance(value, np.ndarray):
        return value, False
    if value is None:
        raise TypeError(f"{name} is None: pass a torch tensor or a NumPy array.")
    try:  # PIL images and other array-likes
        return np.asarray(value), False
    except Exception as error:  # pragma: no cover - defensive
        raise TypeError(f"{name} must be a torch tensor or a NumPy array, got {type(value)}.") from error


def check_finite(array: np.ndarray, name: str) -> None:
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}).")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(
            f"{name} contains {bad} NaN or Inf value(s); an attribution method probably failed "
            "(check for a zero denominator or a diverging optimisation) before plotting."
        )


def image_to_hwc(image: ImageLike, *, name: str = "image", rescale: bool = False) -> np.ndarray:
    """Convert an image to a float64 ``(H, W, C)`` array in [0, 1], ``C`` in (1, 3, 4).

    ``rescale=True`` min-max rescales values outside [0, 1] (e.g. a mean/std-normalised image)
    instead of raising.
    """
    array, channels_first = as_array(image, name)
    shape = tuple(array.shape)
    if array.dtype == bool:
        array = array.astype(np.float64)
    if channels_first and array.ndim == 4:
        if shape[0] != 1:
            raise ValueError(
                f"{name} has shape {shape}, a batch of {shape[0]}: pass one image (C, H, W), or use "
                "overlay_batch / comparison_grid for a batch."
            )
        array = array[0]
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3:
        if channels_first:
            if array.shape[0] not in _IMAGE_CHANNELS and array.shape[-1] in _IMAGE_CHANNELS:
                raise ValueError(
                    f"{name} is a tensor of shape {shape}, which looks channels-last: torch images "
                    "are (C, H, W); use image.permute(2, 0, 1), or pass a NumPy (H, W, C) array."
                )
            array = np.moveaxis(array, 0, -1)
        elif shape[-1] not in _IMAGE_CHANNELS and shape[0] in _IMAGE_CHANNELS:
            raise ValueError(
                f"{name} is a NumPy array of shape {shape}, which looks channels-first: NumPy images "
                "are channels-last (H, W, C) as in captum.attr.visualization; use "
                "image.transpose(1, 2, 0), or pass a torch tensor (C, H, W)."
            )
    else:
        raise ValueError(
            f"{name} has shape {shape}; expected a torch tensor (C, H, W) / (1, C, H, W) / (H, W) "
            "or a NumPy array (H, W, C) / (H, W)."
        )
    if array.shape[-1] not in _IMAGE_CHANNELS:
        raise ValueError(
            f"{name} has {array.shape[-1]} channels (shape {shape}); expected 1 (grey), 3 (RGB) or "
            "4 (RGBA)."
        )
    integer = np.issubdtype(array.dtype, np.integer)
    array = array.astype(np.float64)
    check_finite(array, name)
    low, high = float(array.min()), float(array.max())
    if integer:
        if low < 0 or high > 255:
            raise ValueError(f"{name} is an integer image with values in [{low:g}, {high:g}]; expected [0, 255].")
        return array / 255.0
    if low >= -1e-2 and high <= 1 + 1e-2:
        return np.clip(array, 0.0, 1.0)
    if rescale:
        return (array - low) / (high - low) if high > low else np.zeros_like(array)
    if low >= 0 and high <= 255:
        return array / 255.0  # Captum's other convention: floats in [0, 255]
    raise ValueError(
        f"{name} has values in [{low:.3g}, {high:.3g}]; expected [0, 1] (or [0, 255]). It looks "
        "mean/std-normalised: pass the un-normalised image (e.g. x * std + mean), or "
        "rescale_image=True to min-max rescale it for display."
    )


def map_to_tensor(attribution: MapLike, rank: int, *, name: str = "attribution") -> Tensor:
    """Convert one attribution map to a float ``(1, 1, *S)`` tensor with ``len(S) == rank``.

    Tensors (and NumPy arrays of 1D/3D maps) are ``(*S)``, ``(C, *S)`` or ``(1, C, *S)``; NumPy 2D
    maps are ``(H, W)`` or ``(H, W, C)`` (Captum's convention). Channels are summed.
    """
    array, channels_first = as_array(attribution, name)
    shape = tuple(array.shape)
    if array.dtype == bool or np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"{name} has dtype {array.dtype}; expected a real-valued map.")
    if not channels_first and rank == 2 and array.ndim == 3:
        if shape[-1] not in _IMAGE_CHANNELS and shape[0] in _IMAGE_CHANNELS:
            raise ValueError(
                f"{name} is a NumPy array of shape {shape}, which looks channels-first: NumPy maps "
                "are (H, W) or (H, W, C) as in captum.attr.visualization; use "
                "attribution.transpose(1, 2, 0) or pass the torch tensor."
            )
        array = np.moveaxis(array, -1, 0)
    if array.ndim == rank + 2:
        if array.shape[0] != 1:
            raise ValueError(
                f"{name} has shape {shape}: a batch of {array.shape[0]} maps. Pass one example "
                "(1, 1, *S), or use overlay_batch / comparison_grid for a batch."
            )
        array = array[0]
    if array.ndim == rank:
        array = array[None]
    if array.ndim != rank + 1:
        raise ValueError(
            f"{name} has shape {shape}, which is not a {_RANK_NAMES[rank]} map: expected "
            f"{rank} spatial dim(s), as (*S), (C, *S) or (1, C, *S)"
            + (", or a NumPy (H, W) / (H, W, C) array." if rank == 2 else ".")
        )
    array = array.astype(np.float64)
    check_finite(array, name)
    return torch.from_numpy(array.sum(axis=0, keepdims=True)[None])


def interpolation_mode(interpolation: str, rank: int) -> str:
    """Map a user interpolation name to the F.interpolate mode for ``rank`` spatial dims.

    ``"linear"``, ``"bilinear"`` and ``"trilinear"`` all mean the smooth mode of the rank (so one
    keyword works for 1D, 2D and 3D); ``"bicubic"`` is 2D only; ``"nearest"`` and ``"area"`` any rank.
    """
    if interpolation in _SMOOTH_ALIASES:
        return _SMOOTH_MODES[rank]
    if interpolation in ("nearest", "nearest-exact", "area"):
        return interpolation
    if interpolation == "bicubic" and rank == 2:
        return "bicubic"
    raise ValueError(
        f"interpolation={interpolation!r} is not available for a {_RANK_NAMES[rank]}; choose "
        f"'nearest', '{_SMOOTH_MODES[rank]}'" + (", 'bicubic'" if rank == 2 else "") + " or 'area'."
    )


def upsample_map(attribution: Tensor, size: Sequence[int], interpolation: str) -> np.ndarray:
    """Resize a ``(1, 1, *S)`` map to ``size`` and return it as a float64 ``size`` array."""
    size = tuple(int(s) for s in size)
    if tuple(attribution.shape[2:]) == size:
        return attribution[0, 0].numpy()
    mode = interpolation_mode(interpolation, len(size))
    if mode in ("nearest", "nearest-exact", "area"):
        resized = F.interpolate(attribution, size=size, mode=mode)
    else:
        resized = F.interpolate(attribution, size=size, mode=mode, align_corners=False)
    return resized[0, 0].numpy()


def split_batch(batch: Any, name: str) -> list[Any]:
    """A batch tensor/array ``(N, ...)`` or a sequence, as a list of single examples."""
    if isinstance(batch, (Tensor, np.ndarray)):
        if batch.ndim == 0:
            raise ValueError(f"{name} is a scalar; expected a batch (N, ...) or a sequence.")
        return [batch[i] for i in range(batch.shape[0])]
    if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
        raise TypeError(f"{name} must be a batch tensor/array (N, ...) or a sequence, got {type(batch)}.")
    return list(batch)


def rescale_unit(array: np.ndarray) -> np.ndarray:
    """Min-max rescale to [0, 1] for display (signals and volumes carry arbitrary units)."""
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def to_captum_hwc(
    attribution: MapLike, size: Sequence[int] | None = None, *, interpolation: str = "bilinear"
) -> np.ndarray:
    """Upsample one CAM to ``size`` and return it as Captum's ``(H, W, 1)`` NumPy layout.

    ``captum.attr.visualization.visualize_image_attr(to_captum_hwc(cam, x.shape[-2:]), image_hwc,
    method="blended_heat_map", use_pyplot=False)`` then works in Captum 0.6 to 0.9 (which all need
    a 3-D channels-last array). Accepts a layer map ``(1, 1, h, w)``, ``(1, h, w)`` or ``(h, w)``
    (tensor) or ``(h, w)`` / ``(h, w, C)`` (NumPy). ``size=None`` keeps the map's resolution.
    Note that Captum raises ``AssertionError: Cannot normalize by scale factor = 0`` on an
    all-zero map; the functions of this package render such maps blank instead.
    """
    cam = map_to_tensor(attribution, 2)
    out_size = tuple(cam.shape[2:]) if size is None else tuple(int(s) for s in size)
    if len(out_size) != 2:
        raise ValueError(f"size must be (H, W), got {size!r}.")
    return upsample_map(cam, out_size, interpolation)[..., None]


def to_captum_image(image: ImageLike, *, rescale_image: bool = False) -> np.ndarray:
    """Convert an image (torch ``(C, H, W)`` or NumPy ``(H, W, C)``) to an ``(H, W, C)`` float array in
    [0, 1], the ``original_image`` layout of ``captum.attr.visualization``."""
    return image_to_hwc(image, rescale=rescale_image)
