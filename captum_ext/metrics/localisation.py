"""Localisation metrics against ground-truth masks: pointing game, energy pointing game, relevance
mass and relevance rank accuracy.

Shared conventions (all four functions):

* ``attributions`` are ``(N, C, *S')``: channels are **summed** (an input attribution becomes one
  map), and maps at layer resolution are upsampled to the mask's resolution ``S`` (linear,
  bilinear or trilinear, ``align_corners=False``).
* ``masks`` are ``(N, 1, *S)`` or ``(N, *S)``, boolean or 0/1; ``True`` marks the object.
* Results are per example, as float tensors ``(N,)`` in [0, 1]; the dataset figure is their
  ``nanmean`` (or :func:`per_class_mean`, TorchRay's per-class average).
* **An empty mask** (no object) gives NaN for that example, as in Quantus and TorchRay (which
  skips such images).
* All functions work on 1D, 2D and 3D data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_ext._tensor_ops import safe_divide
from captum_ext.metrics._common import as_single_channel, to_resolution

__all__ = [
    "energy_pointing_game",
    "per_class_mean",
    "pointing_game",
    "pointing_game_chance",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _prepare(attributions: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened ``(N, P)`` maps and boolean masks at mask resolution, and the empty-mask flags."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a torch.Tensor, got {type(masks).__name__}.")
    if isinstance(attributions, tuple) and len(attributions) == 1:
        attributions = attributions[0]
    if isinstance(attributions, Tensor) and masks.dim() == attributions.dim() - 1:
        masks = masks.unsqueeze(1)
    if masks.dim() < 3 or masks.shape[1] != 1:
        raise ValueError(
            f"masks must have shape (N, 1, *S) or (N, *S) with 1 to 3 spatial dims, got "
            f"{tuple(masks.shape)}."
        )
    maps = as_single_channel(attributions, masks.shape[0])
    maps = to_resolution(maps, masks.shape[2:])
    masks = masks.to(device=maps.device) != 0
    empty = ~masks.flatten(1).any(1)
    return maps, masks, empty


def _dilate(masks: Tensor, radius: float) -> Tensor:
    """Grow ``(N, 1, *S)`` masks by a Euclidean ball of ``radius`` pixels (rank-agnostic)."""
    reach = int(math.floor(radius))
    if reach < 1:
        return masks
    rank = masks.dim() - 2
    offsets = torch.stack(
        torch.meshgrid(*[torch.arange(-reach, reach + 1)] * rank, indexing="ij")
    ).to(masks.device)
    ball = ((offsets.float() ** 2).sum(0) <= radius**2 + 1e-9).float()
    grown = _CONV[rank](masks.float(), ball[None, None], padding=reach)
    return grown > 0.5


def pointing_game(attributions: Tensor, masks: Tensor, tolerance: float = 15.0) -> Tensor:
    """Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", 2016).

    A hit (1.0) if the map's maximum lies within ``tolerance`` pixels (Euclidean distance, at
    mask resolution) of the object, else a miss (0.0). TorchRay's benchmark uses 15 px at 224×224;
    scale it with the image (e.g. 2 px at 32×32).

    Conventions: **ties** — if several pixels share the maximum, it is a hit when *any* of them
    is within tolerance (Quantus counts any maximum inside the mask; TorchRay takes the first
    maximum). **A constant map** (e.g. all zeros) points nowhere and counts as a miss. An empty
    mask gives NaN. No normalisation is needed (the argmax is scale-invariant).
    """
    maps, masks, empty = _prepare(attributions, masks)
    flat = maps.flatten(1)
    peak = flat.amax(1, keepdim=True)
    at_max = (flat == peak) & (peak > flat.amin(1, keepdim=True))
    near = _dilate(masks, float(tolerance)).flatten(1)
    hits = (at_max & near).any(1).to(maps.dtype)
    return torch.where(empty, torch.nan, hits)


def pointing_game_chance(masks: Tensor, tolerance: float = 15.0) -> Tensor:
    """The pointing game's chance level per example: the share of pixels within ``tolerance``
    of the object, i.e. the hit rate of a uniformly random point. NaN for an empty mask."""
    if masks.dim() < 3 or masks.shape[1] != 1:
        raise ValueError(f"masks must have shape (N, 1, *S), got {tuple(masks.shape)}.")
    masks = masks != 0
    share = _dilate(masks, float(tolerance)).flatten(1).float().mean(1)
    return torch.where(masks.flatten(1).any(1), share, torch.nan)


def _bounding_boxes(masks: Tensor) -> Tensor:
    """The axis-aligned bounding box of each ``(N, 1, *S)`` mask, as a boolean mask."""
    rank = masks.dim() - 2
    box = torch.ones_like(masks)
    for axis in range(rank):
        spatial = [2 + other for other in range(rank) if other != axis]
        profile = masks.to(torch.uint8).amax(dim=spatial) > 0 if spatial else masks  # (N,1,S_axis)
        index = torch.arange(profile.shape[-1], device=masks.device)
        first = torch.where(profile, index, profile.shape[-1]).amin(-1, keepdim=True)
        last = torch.where(profile, index, -1).amax(-1, keepdim=True)
        inside = (index >= first) & (index <= last)  # (N, 1, S_axis)
        shape = [masks.shape[0], 1] + [1] * rank
        shape[2 + axis] = masks.shape[2 + axis]
        box = box & inside.reshape(shape)
    return box


def energy_pointing_game(
    attributions: Tensor, masks: Tensor, *, bounding_box: bool = True
) -> Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020).

    ``Σ_{p ∈ box} relu(m_p) / Σ_p relu(m_p)``: the share of the map's positive energy inside the
    object's bounding box (``bounding_box=False``: inside the mask itself). Negative values are
    clamped to 0 (Score-CAM maps are ReLU'd); the ratio is invariant to scaling, so no other
    normalisation is applied. **An all-zero map** (no positive energy) scores 0. An empty mask
    gives NaN.
    """
    maps, masks, empty = _prepare(attributions, masks)
    region = _bounding_boxes(masks) if bounding_box else masks
    energy = maps.clamp_min(0).flatten(1)
    inside = (energy * region.flatten(1)).sum(1)
    return torch.where(empty, torch.nan, safe_divide(inside, energy.sum(1)))


def relevance_mass_accuracy(
    attributions: Tensor, masks: Tensor, *, positive_only: bool = True
) -> Tensor:
    """Relevance mass accuracy (Arras et al., "CLEVR-XAI", Information Fusion 2022).

    ``R_within / R_total``: the relevance inside the mask over the relevance in the whole map.
    With ``positive_only=True`` (the default) negative relevance is set to 0 first, so the score
    is in [0, 1]; ``positive_only=False`` uses signed values, as Quantus does (then the ratio can
    leave [0, 1]). **An all-zero map** scores 0. An empty mask gives NaN.
    """
    maps, masks, empty = _prepare(attributions, masks)
    relevance = (maps.clamp_min(0) if positive_only else maps).flatten(1)
    inside = (relevance * masks.flatten(1)).sum(1)
    return torch.where(empty, torch.nan, safe_divide(inside, relevance.sum(1)))


def relevance_rank_accuracy(attributions: Tensor, masks: Tensor) -> Tensor:
    """Relevance rank accuracy (Arras et al., "CLEVR-XAI", 2022).

    With ``K`` = the number of mask pixels, the fraction of the ``K`` most relevant pixels that
    lie inside the mask. **Ties** are broken by position (a stable descending sort: the first
    pixel in row-major order ranks first), so a constant map scores the share of the first ``K``
    pixels that are in the mask. Raw (signed) values are ranked; no normalisation is needed.
    An empty mask gives NaN.
    """
    maps, masks, empty = _prepare(attributions, masks)
    flat = maps.flatten(1)
    inside = masks.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    count = inside.sum(1, keepdim=True)
    rank = torch.arange(flat.shape[1], device=flat.device)[None]
    top = (rank < count) & inside.gather(1, order)
    accuracy = safe_divide(top.sum(1).to(flat.dtype), count[:, 0].to(flat.dtype))
    return torch.where(empty, torch.nan, accuracy)


def per_class_mean(values: Tensor, labels: Tensor) -> Tensor:
    """The mean over classes of each class's ``nanmean`` (TorchRay's per-class accuracy).

    Classes whose values are all NaN are left out.
    """
    if values.shape != labels.shape:
        raise ValueError(f"values {tuple(values.shape)} and labels {tuple(labels.shape)} differ.")
    means = [values[labels == label].nanmean() for label in labels.unique()]
    means = [mean for mean in means if not bool(mean.isnan())]
    if not means:
        return torch.tensor(torch.nan, dtype=values.dtype)
    return torch.stack(means).mean()
