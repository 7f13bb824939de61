"""Toy models whose decision is an explicit function of patch contents (spec §9 tests)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn


def patch_means(x: Tensor, patches: Sequence[int], grid: int) -> Tensor:
    """``(N, len(patches))`` means of the patches (raster ids on a ``grid^d`` grid)."""
    spatial = x.shape[2:]
    cells = x.reshape(x.shape[0], x.shape[1], *[v for s in spatial for v in (grid, s // grid)])
    dims = tuple(range(3, cells.dim(), 2))
    per_cell = cells.mean(dim=(1,) + dims).reshape(x.shape[0], -1)
    return per_cell[:, list(patches)]


class PatchRule(nn.Module):
    """Two-class model: logit_1 = scale·rule(patch means) − bias, logit_0 = 0."""

    def __init__(self, patches: Sequence[int], rule: Callable[[Tensor], Tensor], grid: int = 7,
                 scale: float = 8.0, bias: float = 4.0) -> None:
        super().__init__()
        self.patches, self.rule, self.grid = list(patches), rule, grid
        self.scale = nn.Parameter(torch.tensor(scale))
        self.bias = bias
        self.calls: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append(x.shape[0])
        evidence = self.rule(patch_means(x, self.patches, self.grid))
        positive = self.scale * evidence - self.bias
        return torch.stack([torch.zeros_like(positive), positive], dim=1)


def or_model(a: int = 3, b: int = 10, grid: int = 7) -> PatchRule:
    return PatchRule([a, b], lambda m: m.max(dim=1).values, grid)


def and_model(a: int = 3, b: int = 10, grid: int = 7) -> PatchRule:
    return PatchRule([a, b], lambda m: m.min(dim=1).values, grid)


def additive_model(patches: Sequence[int] = (3, 10, 24), grid: int = 7) -> PatchRule:
    """Each patch adds a third of the margin: p({a,b,c}) = σ(6), p(2 of 3) = σ(2), p(1) = σ(−2)."""
    return PatchRule(patches, lambda m: m.sum(dim=1), grid, scale=4.0, bias=6.0)


def multiplicative_model(patches: Sequence[int] = (3, 10, 24), grid: int = 7) -> PatchRule:
    """High only if all three are present: p = σ(12·Π m − 6)."""
    return PatchRule(patches, lambda m: m.prod(dim=1), grid, scale=12.0, bias=6.0)


def ones_image(spatial: Sequence[int] = (28, 28)) -> Tensor:
    return torch.ones((1, 1) + tuple(spatial))
