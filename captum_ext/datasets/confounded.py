"""A seeded synthetic image task with a confounder, and ground-truth masks of both.

Every image ``(3, H, W)`` holds two things on a noisy gray background:

* the **true cue**: a gray bar whose orientation is the class (0: horizontal, 1: vertical,
  2: diagonal, 3: anti-diagonal), at a random position away from the corners;
* the **confounder**: a small coloured square in a random corner (class 0: red, 1: green,
  2: blue, 3: yellow). In a training split the square's colour agrees with the class with
  probability ``confounder_agreement`` (1.0: a perfect shortcut, as in Decoy-MNIST of Ross et
  al. 2017); ``None`` draws the colour independently of the class (decorrelated) and 0.0 always
  draws another class's colour (anti-correlated).

A classifier that learns the colour instead of the shape scores well on a correlated split and
near chance on a decorrelated one, and its attributions sit on the corner square.
``cue_masks`` and ``confounder_masks`` give the pixels of each, for heatmap losses and for
metrics such as the attribution mass on the confounder.

Generation uses only a ``torch.Generator`` seeded from ``seed``: the same arguments give the
same tensors on every machine.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["CONFOUNDER_COLOURS", "ConfoundedShapes", "confounded_splits"]

#: RGB colour of the corner square of each class.
CONFOUNDER_COLOURS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
)


def _bar_offsets(label: int, length: int) -> list[tuple[int, int]]:
    """Pixel offsets ``(row, column)`` of the bar of class ``label``, centred at (0, 0)."""
    half = length // 2
    steps = range(-half, length - half)
    if label == 0:
        return [(0, s) for s in steps]
    if label == 1:
        return [(s, 0) for s in steps]
    if label == 2:
        return [(s, s) for s in steps]
    return [(s, -s) for s in steps]


class ConfoundedShapes(Dataset):
    """Bars (the true cue) and class-coloured corner squares (the confounder).

    Args:
        size: number of examples.
        num_classes: 2, 3 or 4 (one bar orientation and one colour per class).
        image_size: side of the square images.
        confounder_agreement: probability that the corner square has the colour of the image's
            class; ``None`` draws it uniformly over the classes, independently of the label.
        bar_length: length of the bar in pixels.
        bar_intensity: ``(low, high)`` range of the bar's gray level (added to every channel).
        mark_size: side of the corner square.
        noise: standard deviation of the Gaussian background noise (independent per channel).
        seed: seeds the generator; different seeds give independent splits.

    Items are ``(image, label, cue_mask, confounder_mask)``: a float ``(3, H, W)`` image, an
    integer label, and two float ``(1, H, W)`` masks in {0, 1}. The whole split is also
    available as stacked tensors: ``images``, ``labels``, ``cue_masks``, ``confounder_masks``
    and ``confounder_classes`` (the class whose colour the square has).
    """

    def __init__(
        self,
        size: int,
        *,
        num_classes: int = 2,
        image_size: int = 24,
        confounder_agreement: Optional[float] = 1.0,
        bar_length: int = 7,
        bar_intensity: tuple[float, float] = (0.5, 0.9),
        mark_size: int = 4,
        noise: float = 0.2,
        seed: int = 0,
    ) -> None:
        if not 2 <= num_classes <= len(CONFOUNDER_COLOURS):
            raise ValueError(f"num_classes must be 2, 3 or 4, got {num_classes}.")
        if size < 1:
            raise ValueError(f"size must be positive, got {size}.")
        if confounder_agreement is not None and not 0.0 <= confounder_agreement <= 1.0:
            raise ValueError(
                f"confounder_agreement must be in [0, 1] or None, got {confounder_agreement}."
            )
        margin = mark_size + bar_length // 2 + 1
        if image_size - 2 * margin < 1:
            raise ValueError(
                f"image_size {image_size} is too small for bars of length {bar_length} away from "
                f"{mark_size}-pixel corner squares; use at least {2 * margin + 1}."
            )
        self.num_classes = num_classes
        self.image_size = image_size
        self.confounder_agreement = confounder_agreement
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(num_classes, (size,), generator=generator)
        self.confounder_classes = self._draw_confounder_classes(generator)
        self.images = noise * torch.randn((size, 3, image_size, image_size), generator=generator)
        self.cue_masks = torch.zeros(size, 1, image_size, image_size)
        self.confounder_masks = torch.zeros(size, 1, image_size, image_size)
        centres = torch.randint(margin, image_size - margin, (size, 2), generator=generator)
        corners = torch.randint(4, (size,), generator=generator)
        low, high = bar_intensity
        levels = low + (high - low) * torch.rand(size, generator=generator)
        offsets = torch.tensor([_bar_offsets(k, bar_length) for k in range(num_classes)])
        rows = centres[:, :1] + offsets[self.labels, :, 0]
        columns = centres[:, 1:] + offsets[self.labels, :, 1]
        examples = torch.arange(size)[:, None].expand_as(rows)
        self.cue_masks[examples, 0, rows, columns] = 1.0
        top = torch.where(corners < 2, 0, image_size - mark_size)[:, None]
        left = torch.where(corners % 2 == 0, 0, image_size - mark_size)[:, None]
        pixels = torch.arange(image_size)[None]
        in_rows = (pixels >= top) & (pixels < top + mark_size)
        in_columns = (pixels >= left) & (pixels < left + mark_size)
        self.confounder_masks[:, 0] = (in_rows[:, :, None] & in_columns[:, None, :]).float()
        colours = torch.tensor(CONFOUNDER_COLOURS)[self.confounder_classes].view(size, 3, 1, 1)
        self.images = torch.lerp(self.images, colours, self.confounder_masks)
        self.images += levels.view(size, 1, 1, 1) * self.cue_masks

    def _draw_confounder_classes(self, generator: torch.Generator) -> Tensor:
        size, k = self.labels.numel(), self.num_classes
        if self.confounder_agreement is None:
            return torch.randint(k, (size,), generator=generator)
        agree = torch.rand(size, generator=generator) < self.confounder_agreement
        other = (self.labels + torch.randint(1, k, (size,), generator=generator)) % k
        return torch.where(agree, self.labels, other)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (
            self.images[index],
            self.labels[index],
            self.cue_masks[index],
            self.confounder_masks[index],
        )

    @property
    def agreement_rate(self) -> float:
        """The measured fraction of examples whose corner colour matches the label."""
        return float((self.confounder_classes == self.labels).float().mean())


def confounded_splits(
    train_size: int = 2000,
    test_size: int = 1000,
    *,
    train_agreement: float = 1.0,
    test_agreement: Optional[float] = None,
    seed: int = 0,
    **options: object,
) -> tuple[ConfoundedShapes, ConfoundedShapes]:
    """A confounded training split and a test split where the confounder is decorrelated.

    ``test_agreement=None`` (default) draws the test squares' colours independently of the
    labels; ``0.0`` anti-correlates them. The two splits use different seeds derived from
    ``seed``; ``options`` are passed to both (``num_classes``, ``image_size``, ``noise``, ...).
    """
    train = ConfoundedShapes(
        train_size,
        confounder_agreement=train_agreement,
        seed=2 * seed,
        **options,  # type: ignore[arg-type]
    )
    test = ConfoundedShapes(
        test_size,
        confounder_agreement=test_agreement,
        seed=2 * seed + 1,
        **options,  # type: ignore[arg-type]
    )
    return train, test
