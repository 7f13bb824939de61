"""Patch sets on a ``g^d`` grid and their batched, memoised insertion scores.

A patch set is a bitmask integer over the grid's cells in raster order (patch id
``row·g + col`` in 2D; the same raster order in 1D and 3D). :class:`PatchScorer` scores
``p(S) = score_c(x ⊙ U_S + b ⊙ (1 − U_S))`` where ``U_S`` is the grid with 1 on the cells of
``S`` upsampled to the input (bilinear with ``align_corners=True`` by default, the SAG code's
"tents"; ``"nearest"`` for crisp patches). Every set is pushed through the model at most once.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import Tensor

from captum_ext._captum import TargetType
from captum_ext._scores import ExampleScorer, OutputKind
from captum_ext._tensor_ops import interpolation_mode

__all__ = ["PatchScorer", "bits_of", "mask_of", "patches_of"]

_UPSAMPLE = ("bilinear_align_corners", "nearest")


def patches_of(bits: int) -> tuple[int, ...]:
    """Sorted patch ids of a bitmask."""
    out, index = [], 0
    while bits:
        if bits & 1:
            out.append(index)
        bits >>= 1
        index += 1
    return tuple(out)


def bits_of(patches: Iterable[int]) -> int:
    bits = 0
    for patch in patches:
        bits |= 1 << int(patch)
    return bits


def mask_of(bits: int, grid_shape: Sequence[int], device: Any = None) -> Tensor:
    """The boolean grid of a patch set (True = revealed)."""
    count = 1
    for size in grid_shape:
        count *= int(size)
    flat = torch.zeros(count, dtype=torch.bool, device=device)
    ids = list(patches_of(bits))
    if ids:
        flat[torch.tensor(ids, device=device)] = True
    return flat.reshape(tuple(grid_shape))


class PatchScorer:
    """Memoised, chunked scores ``p(S)`` of patch sets of one example.

    Attributes:
        p_full: the score of the unperturbed input.
        cache: bitmask → score.
        forward_images: images pushed through the model (the clean pass included).
        requests: scores asked for (cache hits included).
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        inputs: Tensor,
        baseline: Tensor,
        target: TargetType,
        additional_forward_args: Any,
        grid_shape: Sequence[int],
        *,
        upsample: str = "bilinear_align_corners",
        output: OutputKind = "softmax",
        batch_size: int = 64,
    ) -> None:
        if upsample not in _UPSAMPLE:
            raise ValueError(f"upsample must be one of {_UPSAMPLE}, got {upsample!r}.")
        self.x = inputs
        self.baseline = baseline
        self.grid_shape = tuple(int(g) for g in grid_shape)
        self.upsample = upsample
        self.batch_size = int(batch_size)
        with torch.no_grad():
            self._scorer = ExampleScorer(forward_func, (inputs,), target, additional_forward_args,
                                         output)
        self.target = self._scorer.target
        self.p_full = float(self._scorer.clean_scores[0])
        self.cache: dict[int, float] = {}
        self.requests = 0

    @property
    def forward_images(self) -> int:
        return self._scorer.forward_images

    def _composite(self, sets: Sequence[int]) -> Tensor:
        grids = torch.stack([mask_of(b, self.grid_shape, self.x.device) for b in sets])
        grids = grids.unsqueeze(1).to(self.x.dtype)
        size = tuple(self.x.shape[2:])
        if self.upsample == "nearest":
            up = torch.nn.functional.interpolate(grids, size=size, mode="nearest")
        else:
            up = torch.nn.functional.interpolate(grids, size=size,
                                                 mode=interpolation_mode(grids.dim()),
                                                 align_corners=True)
        return self.x * up + self.baseline * (1 - up)

    def scores(self, sets: Sequence[int]) -> list[float]:
        """Scores of ``sets`` (bitmasks), scoring the uncached ones in chunks of ``batch_size``."""
        self.requests += len(sets)
        todo = list(dict.fromkeys(b for b in sets if b not in self.cache))
        with torch.no_grad():
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start:start + self.batch_size]
                images = self._composite(chunk)
                index = torch.zeros(len(chunk), dtype=torch.long, device=self.x.device)
                values = self._scorer((images,), index).detach().cpu().tolist()
                self.cache.update(zip(chunk, (float(v) for v in values)))
        return [self.cache[b] for b in sets]

    def score(self, bits: int) -> float:
        return self.scores([bits])[0]

    def composite(self, bits: int) -> Tensor:
        """The insertion image of one set, ``(1, C, *S)``."""
        return self._composite([bits])


def optional_int(value: Optional[int], name: str, minimum: int = 1) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} or None, got {value!r}.")
    return value
