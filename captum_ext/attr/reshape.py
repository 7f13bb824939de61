"""Reshape transforms for layers whose output is not ``(N, K, *S)``.

Vision-transformer blocks output tokens ``(N, T, D)``: a class token (and possibly distillation
or register tokens) followed by ``h · w`` patch tokens. Pass
``reshape_transform=tokens_to_grid(n_prefix=1)`` to any CAM; it is applied identically to the
activations and the gradients. Grid mismatches were the most common ViT complaint in the
anchor libraries, so the grid is checked, never guessed silently.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from torch import Tensor

__all__ = ["channels_last_to_first", "tokens_to_grid"]


def tokens_to_grid(
    n_prefix: int = 1, grid_size: Optional[tuple[int, ...]] = None
) -> Callable[[Tensor], Tensor]:
    """Return a transform ``(N, T, D) → (N, D, *grid)`` that drops ``n_prefix`` tokens.

    Args:
        n_prefix: leading tokens that are not patches (1 for a CLS token, 2 with a
            distillation token, more with register tokens).
        grid_size: the patch grid, e.g. ``(14, 14)``, or ``(d, h, w)`` for video/volume
            tokens. By default a square grid is inferred from ``T - n_prefix``.
    """
    if n_prefix < 0:
        raise ValueError(f"n_prefix must be >= 0, got {n_prefix}.")

    def transform(tokens: Tensor) -> Tensor:
        if tokens.dim() != 3:
            raise ValueError(
                f"tokens_to_grid expects (N, T, D) tokens, got shape {tuple(tokens.shape)}."
            )
        patches = tokens[:, n_prefix:, :]
        count = patches.shape[1]
        grid = grid_size
        if grid is None:
            side = math.isqrt(count)
            if side * side != count:
                raise ValueError(
                    f"{count} patch tokens (after dropping {n_prefix}) do not form a square "
                    "grid; pass grid_size=(h, w) or the right n_prefix."
                )
            grid = (side, side)
        if math.prod(grid) != count:
            raise ValueError(
                f"grid_size {tuple(grid)} holds {math.prod(grid)} tokens but there are {count} "
                f"patch tokens (T={tokens.shape[1]}, n_prefix={n_prefix})."
            )
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)

    return transform


def channels_last_to_first(tensor: Tensor) -> Tensor:
    """``(N, *S, C) → (N, C, *S)``, e.g. for Swin-style ``(N, H, W, C)`` outputs."""
    return tensor.movedim(-1, 1)
