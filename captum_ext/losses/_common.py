"""Shared helpers of the explanation losses: reductions, masks and grad-mode handling."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from captum_ext._tensor_ops import upsample

__all__ = ["ExplanationLossTerms", "reduce_per_example", "spatial_mask_like"]

REDUCTIONS = ("mean", "sum", "none")


class ExplanationLossTerms(NamedTuple):
    """The parts of an explanation loss.

    ``total = task + explanation``; ``task`` is the classification term (0 when the loss does
    not compute one), ``explanation`` the weighted explanation penalty, and ``logits`` the model
    output of the forward pass the loss ran (``None`` when it ran none of its own).
    """

    total: Tensor
    task: Tensor
    explanation: Tensor
    logits: Optional[Tensor]


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")


def reduce_per_example(values: Tensor, reduction: str) -> Tensor:
    """Reduce a per-example ``(N,)`` tensor like PyTorch losses do."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def spatial_mask_like(mask: Tensor, maps: Tensor, *, name: str = "mask") -> Tensor:
    """Bring a pixel mask to the ``(N, 1, *S)`` layout of input-resolution maps.

    ``mask`` may be ``(N, *S)``, ``(N, 1, *S)`` or ``(N, C, *S)`` (input-shaped; reduced with a
    max over channels, so a pixel is in the region if any of its channels is). ``maps`` is
    ``(N, 1, *s)`` at any resolution; the returned mask is at the mask's own resolution ``S``.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(mask).__name__}.")
    spatial_rank = maps.dim() - 2
    if spatial_rank < 1:
        raise ValueError(
            f"the attribution maps have shape {tuple(maps.shape)}, without spatial dimensions; "
            "a region loss needs maps of shape (N, 1, *S) (explain a conv layer, not a linear one)."
        )
    if mask.dim() == spatial_rank + 1:
        mask = mask.unsqueeze(1)
    if mask.dim() != spatial_rank + 2:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but the maps {tuple(maps.shape)} have "
            f"{spatial_rank} spatial dims; give the mask as (N, *S), (N, 1, *S) or (N, C, *S)."
        )
    if mask.shape[0] != maps.shape[0]:
        raise ValueError(
            f"{name} has {mask.shape[0]} examples but the maps have {maps.shape[0]}; give one "
            "mask per example."
        )
    mask = mask.to(device=maps.device, dtype=maps.dtype)
    if mask.shape[1] != 1:
        mask = mask.amax(1, keepdim=True)
    return mask


def maps_at(maps: Tensor, size: torch.Size) -> Tensor:
    """``maps`` resized to ``size`` with :func:`captum_ext._tensor_ops.upsample` (a no-op when
    the sizes already match)."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    return upsample(maps, size)
