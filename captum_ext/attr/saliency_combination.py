"""Combining saliency maps from several layers (Rebuffi et al., CVPR 2020; spec §3).

Each layer map is upsampled to a common size (bilinear/linear/trilinear, ``align_corners=False``)
and min-max normalised to [0, 1] per sample, then

* ``mode="product"`` (the paper's standalone code): ``M = Π_ℓ (m_ℓ + eps)``;
* ``mode="sum"`` (TorchRay ``weighted_saliency``): ``M = Σ_ℓ λ̂_ℓ m_ℓ``;
* ``mode="geometric"``: ``M = Π_ℓ (m_ℓ + eps)^{λ̂_ℓ}``, the weighted geometric mean (with uniform
  weights it ranks pixels as the product does),

with ``λ̂_ℓ = λ_ℓ / Σ λ``. Plugin choices (documented, not from the paper): ``eps`` (default
1e-6) keeps one all-zero map from zeroing the product; a map that is constant for a sample has no
min-max normalisation and acts as the neutral element (1 in product and geometric mode; in sum
mode it is dropped for that sample and the remaining weights are renormalised; a sample whose maps
are all constant gets an all-zero map).
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from captum_ext._tensor_ops import upsample

__all__ = ["COMBINE_MODES", "check_combine_options", "combine_saliency_maps", "layer_weights"]

COMBINE_MODES = ("product", "sum", "geometric")
WeightsType = Union[str, Sequence[float], Tensor]


def layer_weights(weights: WeightsType, count: int, like: Tensor) -> Tensor:
    """The normalised weights ``λ̂`` ``(count,)``: ``"uniform"``, ``"linear"``
    (``linspace(0, 1, L + 1)[1:]``, deeper layers weigh more: order layers shallow → deep), or
    explicit non-negative weights, one per layer."""
    if isinstance(weights, str):
        if weights == "uniform":
            raw = torch.ones(count, dtype=like.dtype, device=like.device)
        elif weights == "linear":
            raw = torch.linspace(0, 1, count + 1, dtype=like.dtype, device=like.device)[1:]
        else:
            raise ValueError(
                f"unknown weights {weights!r}; use 'uniform', 'linear' or one number per layer."
            )
    else:
        raw = torch.as_tensor(weights, dtype=like.dtype, device=like.device).flatten()
        if raw.numel() != count:
            raise ValueError(
                f"got {raw.numel()} weights for {count} layer maps; give one per layer."
            )
        if not bool(torch.isfinite(raw).all()) or bool((raw < 0).any()) or float(raw.sum()) <= 0:
            raise ValueError(
                f"weights must be finite, non-negative and not all zero, got {raw.tolist()}."
            )
    return raw / raw.sum()


def check_combine_options(mode: str, weights: WeightsType, count: int) -> None:
    """Raise for an unknown mode, weights given to ``"product"``, or invalid weights."""
    if mode not in COMBINE_MODES:
        raise ValueError(f"unknown combine mode {mode!r}; choose one of {COMBINE_MODES}.")
    if mode == "product" and not (isinstance(weights, str) and weights == "uniform"):
        raise ValueError(
            "mode='product' takes no weights; use mode='geometric' (weighted geometric mean) "
            "or mode='sum' with weights."
        )
    layer_weights(weights, count, torch.zeros(()))


def _is_constant(raw: Tensor) -> Tensor:
    """Per-sample flag ``(N,)``: the map's range is within float rounding of its magnitude."""
    flat = raw.flatten(1)
    low, high = flat.amin(1), flat.amax(1)
    scale = torch.maximum(low.abs(), high.abs())
    return (high - low) <= 4 * torch.finfo(raw.dtype).eps * scale


def _normalised(raw: Tensor, size: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Upsample, then min-max normalise per sample; constant maps come back as ones."""
    constant = _is_constant(raw)
    resized = upsample(raw, size) if tuple(raw.shape[2:]) != size else raw
    flat = resized.flatten(1)
    low = flat.amin(1).reshape((-1,) + (1,) * (raw.dim() - 1))
    span = flat.amax(1).reshape(low.shape) - low
    mask = constant.reshape(low.shape)
    span = torch.where(mask, torch.ones_like(span), span)
    return torch.where(mask, torch.ones_like(resized), (resized - low) / span), constant


def combine_saliency_maps(
    maps: Sequence[Tensor],
    size: Sequence[int],
    mode: str = "product",
    weights: WeightsType = "uniform",
    eps: float = 1e-6,
) -> Tensor:
    """Combine per-layer maps ``(N, 1, *S_ℓ)`` into one map ``(N, 1, *size)``.

    Args:
        maps: one raw map per layer (e.g. the list :class:`LayerNormGrad` returns for a list of
            layers), all with the same batch size and spatial rank (1D, 2D or 3D).
        size: the common spatial size, usually the model input's (``x.shape[2:]``).
        mode: ``"product"``, ``"sum"`` or ``"geometric"`` (see the module docstring).
        weights: ``"uniform"``, ``"linear"`` or one non-negative number per map; ``"product"``
            takes no weights (use ``"geometric"`` for a weighted product).
        eps: added to each normalised map in product and geometric mode.
    """
    if len(maps) == 0:
        raise ValueError("combine_saliency_maps needs at least one map.")
    check_combine_options(mode, weights, len(maps))
    size = tuple(int(s) for s in size)
    for index, raw in enumerate(maps):
        if raw.dim() < 3 or raw.dim() - 2 != len(size) or raw.shape[1] != 1:
            raise ValueError(
                f"map {index} has shape {tuple(raw.shape)}; combining needs (N, 1, *S) maps with "
                f"{len(size)} spatial dims to match size {size} (rank-2 layers have no grid)."
            )
        if raw.shape[0] != maps[0].shape[0]:
            raise ValueError("all maps must have the same batch size.")
    lam = layer_weights(weights, len(maps), maps[0])
    prepared = [_normalised(raw, size) for raw in maps]
    if mode == "sum":
        valid = torch.stack([~constant for _, constant in prepared]).to(lam.dtype)  # (L, N)
        per_sample = lam[:, None] * valid
        total = per_sample.sum(0)
        per_sample = per_sample / torch.where(total > 0, total, torch.ones_like(total))
        combined = torch.zeros_like(prepared[0][0])
        for (normalised, _), weight in zip(prepared, per_sample):
            combined = combined + weight.reshape((-1,) + (1,) * (combined.dim() - 1)) * normalised
        return combined
    combined = torch.ones_like(prepared[0][0])
    for (normalised, constant), weight in zip(prepared, lam):
        factor = normalised + eps
        if mode == "geometric":
            factor = factor.pow(weight)
        neutral = constant.reshape((-1,) + (1,) * (factor.dim() - 1))
        combined = combined * torch.where(neutral, torch.ones_like(factor), factor)
    return combined
