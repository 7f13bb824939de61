"""Shared plumbing of the metrics: map preparation and scoring of (perturbed) inputs.

A *map* is an attribution of shape ``(N, C, *S)``: a layer map at layer resolution (``C = 1``)
or an input attribution (``C`` input channels). Metrics that need input resolution sum the
channels and upsample with :func:`captum_ext._tensor_ops.upsample` (linear, bilinear or
trilinear by rank, ``align_corners=False``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from captum_ext._captum import (
    ExpansionTypes,
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _select_targets,
)
from captum_ext._tensor_ops import safe_divide, upsample
from captum_ext._validation import check_target_against_output, validate_inputs, validate_target

__all__ = [
    "as_single_channel",
    "check_inputs_and_target",
    "minmax_normalise",
    "target_scores",
    "target_tensor",
    "to_resolution",
]


def check_inputs_and_target(inputs: Tensor, target: Any) -> int:
    """Validate a single input tensor and a Captum target; return the batch size."""
    if isinstance(inputs, tuple):
        raise TypeError(
            "the metrics take a single input tensor (N, C, *S); for a multi-input model, wrap "
            "the model in a function of one tensor."
        )
    batch_size = validate_inputs((inputs,))
    validate_target(target, batch_size)
    return batch_size


def as_single_channel(maps: Tensor, batch_size: int, name: str = "attributions") -> Tensor:
    """Sum ``(N, C, *S)`` maps over channels into ``(N, 1, *S)`` (float, detached)."""
    if isinstance(maps, tuple):
        if len(maps) != 1:
            raise TypeError(f"{name} must be one tensor, got a tuple of {len(maps)}.")
        maps = maps[0]
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(maps).__name__}.")
    if maps.dim() < 3 or maps.shape[0] != batch_size:
        raise ValueError(
            f"{name} must have shape (N, C, *S) with N = {batch_size} and 1 to 3 spatial dims, "
            f"got {tuple(maps.shape)}."
        )
    maps = maps.detach()
    if not maps.is_floating_point():
        maps = maps.float()
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} contains NaN or Inf values.")
    return maps.sum(1, keepdim=True)


def to_resolution(maps: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """Upsample ``(N, 1, *S)`` maps to ``spatial_shape`` when they differ (rank-agnostic)."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if tuple(maps.shape[2:]) == spatial_shape:
        return maps
    if maps.dim() - 2 != len(spatial_shape):
        raise ValueError(
            f"the maps {tuple(maps.shape)} have {maps.dim() - 2} spatial dims but the data has "
            f"{len(spatial_shape)} ({spatial_shape})."
        )
    return upsample(maps, spatial_shape)


def minmax_normalise(maps: Tensor) -> Tensor:
    """Per example, ReLU then ``(m − min) / (max − min)``; a constant map becomes all zeros."""
    flat = maps.clamp_min(0).flatten(1)
    low = flat.amin(1, keepdim=True)
    high = flat.amax(1, keepdim=True)
    return safe_divide(flat - low, high - low).reshape(maps.shape)


def target_scores(
    forward_func: Callable[..., Tensor],
    inputs: Tensor,
    target: Any,
    additional_forward_args: Any = None,
    *,
    apply_softmax: bool,
    repeats: int = 1,
) -> tuple[Tensor, Tensor]:
    """Score ``inputs`` (a stack of ``repeats`` copies of an ``N``-batch, copy-major).

    Returns ``(scores, predictions)``: the target's softmax probability (or raw output when
    ``apply_softmax=False``) and the top-1 class per row, both ``(repeats · N,)``.
    """
    args = _format_additional_forward_args(additional_forward_args)
    if repeats > 1:
        args = _expand_additional_forward_args(args, repeats, ExpansionTypes.repeat)
        target = _expand_target(target, repeats, ExpansionTypes.repeat)
    with torch.no_grad():
        output = forward_func(inputs, *args) if args is not None else forward_func(inputs)
    check_target_against_output(output, target)
    probabilities = torch.softmax(output, dim=1) if apply_softmax and output.dim() > 1 else output
    scores = _select_targets(probabilities, target).reshape(output.shape[0])
    predictions = output.flatten(1).argmax(1) if output.dim() > 1 else torch.zeros_like(scores)
    return scores.detach(), predictions


def target_tensor(target: Any, batch_size: int, device: torch.device) -> Tensor:
    """A class-index target as a ``(N,)`` long tensor (int, one-element tensor, list or 1-D)."""
    if target is None:
        raise ValueError("this metric needs a class target per example; pass target=labels.")
    if isinstance(target, Tensor):
        values = target.to(device=device, dtype=torch.long).reshape(-1)
    elif isinstance(target, list):
        if any(isinstance(entry, tuple) for entry in target):
            raise ValueError("this metric needs one class index per example, not index tuples.")
        values = torch.tensor(target, dtype=torch.long, device=device)
    elif isinstance(target, tuple):
        raise ValueError("this metric needs one class index per example, not an index tuple.")
    else:
        values = torch.tensor([int(target)], dtype=torch.long, device=device)
    return values.expand(batch_size) if values.numel() == 1 else values
