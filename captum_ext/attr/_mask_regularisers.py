"""Regularisers of the mask-optimisation methods, rank-agnostic (1D, 2D and 3D masks).

All return one value per example of a ``(B, 1, *m)`` mask batch; differences are taken along
every spatial axis of size > 1, so one code path serves every rank.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from captum_ext.attr._mask_optim import L1Schedule

__all__ = ["aaai_l1_schedule", "bilateral_tv", "edge_weights", "l1_term", "tv_term"]


def l1_term(mask: Tensor) -> Tensor:
    """``mean |1 - M|`` per example of ``(B, 1, *m)`` (pushes the mask towards keeping)."""
    return (1 - mask).abs().flatten(1).mean(1)


def _differences(t: Tensor) -> list[Tensor]:
    """Forward differences along every spatial axis of size > 1."""
    return [t.diff(dim=axis) for axis in range(2, t.dim()) if t.shape[axis] > 1]


def tv_term(mask: Tensor, beta: float = 2.0) -> Tensor:
    """Anisotropic ``Σ_axes mean |ΔM|^β`` per example, on the low-resolution mask (I-GOS)."""
    terms = [d.abs().pow(beta).flatten(1).mean(1) for d in _differences(mask)]
    return sum(terms) if terms else mask.new_zeros(mask.shape[0])


def edge_weights(image: Tensor, sigma: float = 0.01, official: bool = False) -> list[Tensor]:
    """Bilateral weights per spatial axis: ``mean_c exp(-(ΔI_c)² / σ)``, ``(N, 1, *S')``.

    ``official=True`` reproduces IGOS_pp's asymmetry on the first spatial axis (the vertical
    one in 2D): ``exp(-(mean_c ΔI_c)² / σ)``.
    """
    weights = []
    for index, axis in enumerate(a for a in range(2, image.dim()) if image.shape[a] > 1):
        diff = image.diff(dim=axis)
        if official and index == 0:
            weights.append(torch.exp(-diff.mean(1, keepdim=True).pow(2) / sigma))
        else:
            weights.append(torch.exp(-diff.pow(2) / sigma).mean(1, keepdim=True))
    return weights


def bilateral_tv(mask: Tensor, upsampled: Tensor, weights: Sequence[Tensor]) -> Tensor:
    """iGOS++'s BTV per example: ``½ (Σ mean (ΔM)² + Σ mean w ⊙ (ΔU)²)`` (low- and full-res)."""
    low = [d.pow(2).flatten(1).mean(1) for d in _differences(mask)]
    high = [(w * d.pow(2)).flatten(1).mean(1) for w, d in zip(weights, _differences(upsampled))]
    terms = low + high
    return 0.5 * sum(terms) if terms else mask.new_zeros(mask.shape[0])


def aaai_l1_schedule(iterations: int, clean_scores: Tensor) -> L1Schedule:
    """The AAAI code's adaptive L1: at ``⌊T/2⌋``, if ``p_c(Φ)`` moved by <= 0.001 from the
    clean score, divide L1 by 10; at ``⌊T/1.25⌋``, if it moved by <= 0.01, divide by 5."""
    checks = {int(iterations / 2): (1e-3, 10.0), int(iterations / 1.25): (1e-2, 5.0)}

    def schedule(it: int, active: Tensor, l1: Tensor, plain_score: Callable[[Tensor], Tensor]
                 ) -> None:
        if it not in checks or active.numel() == 0:
            return
        tolerance, divisor = checks[it]
        moved = (plain_score(active) - clean_scores[active]).abs()
        l1[active] = torch.where(moved <= tolerance, l1[active] / divisor, l1[active])

    return schedule
