"""A seeded synthetic task whose class is decided by one known region: a cue among distractors.

Each image (2D or 3D, one channel; in 1D the cue shapes would coincide) holds Gaussian background
noise, one **cue** shape and a few **distractor** shapes, each drawn in a cube of side
``2·radius + 1`` at a random place (the cubes never touch). The cue's shape decides the class; distractors come from shapes that are never
cues, so the only evidence for the label is the cue's region. The ground-truth mask is the cue's
cube (its bounding box); :attr:`SyntheticCueData.cue_pixels` also gives the exact cue pixels.

Shapes are defined on the integer offsets ``u ∈ {-r..r}^d`` of their cube, for any rank ``d``:

================  =====  ====================================  ==================================
shape             class  pixels                                2D picture
================  =====  ====================================  ==================================
``plus``          0      at most one ``u_i`` is non-zero        a thin ``+``
``diagonal``      1      every ``|u_i|`` is equal               a thin ``×`` (3D: 4 body diagonals)
``frame``         2      ``max |u_i| = r``                      a hollow square (3D: a hollow box)
``ball``          3      ``Σ u_i² ≤ r²``                        a filled disc
``box``           —      ``max |u_i| ≤ r − 1`` (a distractor)   a smaller filled square
``bar``           —      ``u`` zero except along one axis       a line (a distractor)
================  =====  ====================================  ==================================

Determinism: example ``i`` is drawn from its own ``torch.Generator`` seeded with
``seed · 1_000_003 + i``, so it does not depend on the dataset length or on the order in which
examples are read, and two calls with the same arguments return identical tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "CUE_SHAPES",
    "DISTRACTOR_SHAPES",
    "SyntheticCueData",
    "SyntheticCueDataset",
    "make_synthetic_cue_data",
    "shape_stencil",
]

CUE_SHAPES: tuple[str, ...] = ("plus", "diagonal", "frame", "ball")
DISTRACTOR_SHAPES: tuple[str, ...] = ("box", "bar")

#: Defaults per rank: (image side, shape radius, number of distractors).
_DEFAULTS: dict[int, tuple[int, int, int]] = {2: (32, 3, 3), 3: (14, 2, 2)}


def shape_stencil(name: str, radius: int, spatial_dims: int, axis: int = 0) -> Tensor:
    """The boolean footprint of a shape in its cube ``(2r+1,)*d`` (``axis``: a bar's direction)."""
    axes = torch.meshgrid(*[torch.arange(-radius, radius + 1)] * spatial_dims, indexing="ij")
    u = torch.stack(axes).abs()  # (d, side, ..., side)
    if name == "plus":
        return (u > 0).sum(0) <= 1
    if name == "diagonal":
        return (u == u[0]).all(0)
    if name == "frame":
        return u.amax(0) == radius
    if name == "ball":
        return (u**2).sum(0) <= radius**2
    if name == "box":
        return u.amax(0) <= radius - 1
    if name == "bar":
        others = torch.cat([u[:axis], u[axis + 1 :]])
        return (others == 0).all(0)
    raise ValueError(f"unknown shape {name!r}; known: {CUE_SHAPES + DISTRACTOR_SHAPES}.")


@dataclass(frozen=True)
class SyntheticCueData:
    """A generated split: ``images (N, 1, *S)`` float, ``labels (N,)`` long, ``masks (N, 1, *S)``
    bool (the cue's bounding cube), ``cue_pixels (N, 1, *S)`` bool (the cue's own pixels)."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    cue_pixels: Tensor


def _place_cubes(
    count: int, side: int, image_size: int, spatial_dims: int, generator: torch.Generator
) -> Tensor:
    """Corners of ``count`` cubes of side ``side`` with at least one empty pixel between them.

    Greedy placement over a batch of random candidate corners, restarted when it dead-ends.
    """
    for _ in range(100):
        candidates = torch.randint(
            image_size - side + 1, (8 * count, spatial_dims), generator=generator
        )
        apart = ((candidates[:, None] - candidates[None]).abs() > side).any(-1).tolist()
        chosen = [0]
        if count == 1:
            return candidates[:1]
        for index in range(1, len(candidates)):
            if all(apart[index][other] for other in chosen):
                chosen.append(index)
                if len(chosen) == count:
                    return candidates[chosen]
    raise ValueError(
        f"could not place {count} shapes of side {side} in an image of side {image_size}; use a "
        "larger image_size or fewer distractors."
    )


def _draw_example(
    index: int,
    seed: int,
    spatial_dims: int,
    image_size: int,
    radius: int,
    num_distractors: int,
    noise_std: float,
) -> tuple[Tensor, int, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    shape = (image_size,) * spatial_dims
    side = 2 * radius + 1
    image = noise_std * torch.randn((1,) + shape, generator=generator)
    label = int(torch.randint(len(CUE_SHAPES), (1,), generator=generator))
    names = [CUE_SHAPES[label]] + [
        DISTRACTOR_SHAPES[int(i)]
        for i in torch.randint(len(DISTRACTOR_SHAPES), (num_distractors,), generator=generator)
    ]
    corners = _place_cubes(len(names), side, image_size, spatial_dims, generator)
    mask = torch.zeros((1,) + shape, dtype=torch.bool)
    cue_pixels = torch.zeros_like(mask)
    for position, (name, corner) in enumerate(zip(names, corners)):
        axis = int(torch.randint(spatial_dims, (1,), generator=generator))
        intensity = 0.5 + 0.5 * float(torch.rand((), generator=generator))
        stencil = shape_stencil(name, radius, spatial_dims, axis=axis)
        region = (slice(None),) + tuple(slice(int(c), int(c) + side) for c in corner)
        image[region] = torch.where(stencil, intensity, image[region])
        if position == 0:
            mask[region] = True
            cue_pixels[region] = stencil
    return image, label, mask, cue_pixels


def _resolve(spatial_dims: int, image_size, radius, num_distractors) -> tuple[int, int, int]:
    if spatial_dims not in _DEFAULTS:
        raise ValueError(
            f"spatial_dims must be 2 or 3, got {spatial_dims} (in 1D the cue shapes coincide: a "
            "plus, a diagonal and a ball are all a segment)."
        )
    size0, radius0, distractors0 = _DEFAULTS[spatial_dims]
    return (
        size0 if image_size is None else int(image_size),
        radius0 if radius is None else int(radius),
        distractors0 if num_distractors is None else int(num_distractors),
    )


class SyntheticCueDataset(Dataset):
    """The synthetic cue task as a map-style dataset; item ``i`` is ``(image, label, mask)``.

    Items are generated on first access and cached; item ``i`` is the same whatever the length
    (see the module docstring). ``image_size``, ``radius`` and ``num_distractors`` default per
    rank to 32/3/3 (2D) and 14/2/2 (3D); ``noise_std`` is the background noise.
    """

    def __init__(
        self,
        num_samples: int,
        spatial_dims: int = 2,
        seed: int = 0,
        *,
        image_size: int | None = None,
        radius: int | None = None,
        num_distractors: int | None = None,
        noise_std: float = 0.1,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        self.num_samples = int(num_samples)
        self.spatial_dims = int(spatial_dims)
        self.seed = int(seed)
        self.image_size, self.radius, self.num_distractors = _resolve(
            spatial_dims, image_size, radius, num_distractors
        )
        self.noise_std = float(noise_std)
        self._cache: dict[int, tuple[Tensor, int, Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return self.num_samples

    def example(self, index: int) -> tuple[Tensor, int, Tensor, Tensor]:
        """``(image, label, mask, cue_pixels)`` of example ``index``."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} examples.")
        if index not in self._cache:
            self._cache[index] = _draw_example(
                index, self.seed, self.spatial_dims, self.image_size, self.radius,
                self.num_distractors, self.noise_std,
            )
        return self._cache[index]

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        image, label, mask, _ = self.example(int(index))
        return image, label, mask

    def tensors(self) -> SyntheticCueData:
        """Every example stacked into one :class:`SyntheticCueData`."""
        items = [self.example(i) for i in range(self.num_samples)]
        return SyntheticCueData(
            images=torch.stack([item[0] for item in items]),
            labels=torch.tensor([item[1] for item in items], dtype=torch.long),
            masks=torch.stack([item[2] for item in items]),
            cue_pixels=torch.stack([item[3] for item in items]),
        )


def make_synthetic_cue_data(
    num_samples: int,
    spatial_dims: int = 2,
    seed: int = 0,
    *,
    image_size: int | None = None,
    radius: int | None = None,
    num_distractors: int | None = None,
    noise_std: float = 0.1,
) -> SyntheticCueData:
    """Generate ``num_samples`` examples of the cue task as stacked tensors.

    Example::

        data = make_synthetic_cue_data(64, spatial_dims=2, seed=1)
        data.images.shape, data.labels.shape, data.masks.shape
        # (64, 1, 32, 32), (64,), (64, 1, 32, 32)
    """
    return SyntheticCueDataset(
        num_samples, spatial_dims, seed, image_size=image_size, radius=radius,
        num_distractors=num_distractors, noise_std=noise_std,
    ).tensors()
