"""Pointing game, energy pointing game, relevance mass and rank accuracy, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from captum_ext.metrics import (
    energy_pointing_game,
    per_class_mean,
    pointing_game,
    pointing_game_chance,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)


def corner_case(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 5^rank map peaking at the origin and a one-pixel mask at (2, ..., 2)."""
    shape = (1, 1) + (5,) * rank
    maps = torch.zeros(shape)
    maps[(0, 0) + (0,) * rank] = 1.0
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[(0, 0) + (2,) * rank] = True
    return maps, mask


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_pointing_game_tolerance_is_euclidean(rank):
    maps, mask = corner_case(rank)
    distance = 2 * math.sqrt(rank)  # from the origin to (2, ..., 2)
    assert pointing_game(maps, mask, tolerance=0).tolist() == [0.0]
    assert pointing_game(maps, mask, tolerance=distance - 0.01).tolist() == [0.0]
    assert pointing_game(maps, mask, tolerance=distance).tolist() == [1.0]
    mask[(0, 0) + (0,) * rank] = True
    assert pointing_game(maps, mask, tolerance=0).tolist() == [1.0]


def test_pointing_game_conventions():
    mask = torch.tensor([[[False, False, True, False]]])
    tie = torch.tensor([[[5.0, 1.0, 5.0, 0.0]]])  # one of the two maxima is inside
    assert pointing_game(tie, mask, tolerance=0).tolist() == [1.0]
    assert pointing_game(torch.zeros(1, 1, 4), mask, tolerance=3).tolist() == [0.0]  # constant
    assert math.isnan(pointing_game(tie, torch.zeros(1, 1, 4, dtype=torch.bool)).item())
    # masks may come without the channel dim; layer maps are upsampled ([0, 4] -> [0, 1, 3, 4])
    assert pointing_game(torch.tensor([[[0.0, 4.0]]]), torch.tensor([[0, 0, 0, 1]]), 0).tolist() == [1.0]


def test_pointing_game_batch_and_channels():
    maps = torch.tensor([[[0.0, 1, 0, 0], [0, 1, 0, 0]], [[1.0, 0, 0, 0], [0, 0, 0, 3]]])
    mask = torch.tensor([[[0, 1, 0, 0]], [[0, 0, 0, 1]]], dtype=torch.bool)
    # example 2 sums its channels to [1, 0, 0, 3]: the peak is in the mask
    assert pointing_game(maps, mask, tolerance=0).tolist() == [1.0, 1.0]
    single = [pointing_game(maps[i : i + 1], mask[i : i + 1], 0).item() for i in range(2)]
    assert single == [1.0, 1.0]


def test_energy_pointing_game_by_hand():
    maps = torch.tensor([[[1.0, 2.0, 3.0, -4.0]]])
    mask = torch.tensor([[[1, 0, 1, 0]]], dtype=torch.bool)  # bounding box: pixels 0..2
    torch.testing.assert_close(energy_pointing_game(maps, mask), torch.tensor([1.0]))
    torch.testing.assert_close(
        energy_pointing_game(maps, mask, bounding_box=False), torch.tensor([4 / 6])
    )
    assert energy_pointing_game(torch.zeros(1, 1, 4), mask).tolist() == [0.0]


def test_energy_pointing_game_bounding_box_2d_3d():
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0, 1] = mask[0, 0, 2, 3] = True  # box rows 0..2, cols 1..3 (9 pixels)
    maps = torch.ones(1, 1, 4, 4)
    torch.testing.assert_close(energy_pointing_game(maps, mask), torch.tensor([9 / 16]))
    mask3 = torch.zeros(1, 1, 3, 3, 3, dtype=torch.bool)
    mask3[0, 0, 0, 0, 0] = mask3[0, 0, 1, 1, 0] = True  # box 2 x 2 x 1
    torch.testing.assert_close(
        energy_pointing_game(torch.ones(1, 1, 3, 3, 3), mask3), torch.tensor([4 / 27])
    )


def test_relevance_mass_accuracy_by_hand():
    maps = torch.tensor([[[1.0, 2.0, 3.0, -4.0]]])
    mask = torch.tensor([[[0, 0, 1, 1]]], dtype=torch.bool)
    torch.testing.assert_close(relevance_mass_accuracy(maps, mask), torch.tensor([3 / 6]))
    torch.testing.assert_close(
        relevance_mass_accuracy(maps, mask, positive_only=False), torch.tensor([-1 / 2])
    )
    assert relevance_mass_accuracy(torch.zeros(1, 1, 4), mask).tolist() == [0.0]
    assert math.isnan(relevance_mass_accuracy(maps, torch.zeros_like(mask)).item())


def test_relevance_rank_accuracy_by_hand():
    maps = torch.tensor([[[4.0, 3.0, 2.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]]])
    mask = torch.tensor([[[1, 0, 1, 0]], [[0, 1, 1, 0]]], dtype=torch.bool)
    # K = 2. Example 1: top-2 = {0, 1}, one inside. Example 2 (ties, stable): {0, 1}, one inside.
    torch.testing.assert_close(relevance_rank_accuracy(maps, mask), torch.tensor([0.5, 0.5]))
    volume = torch.arange(27.0).reshape(1, 1, 3, 3, 3)
    inside = volume >= 24  # the 3 largest values
    assert relevance_rank_accuracy(volume, inside).tolist() == [1.0]


def test_pointing_game_chance_by_hand():
    mask = torch.zeros(2, 1, 5, 5, dtype=torch.bool)
    mask[0, 0, 2, 2] = True  # grown by 1 px: a plus of 5 pixels; by 1.5 px: the 3x3 square
    assert pointing_game_chance(mask, 0)[0].item() == pytest.approx(1 / 25)
    assert pointing_game_chance(mask, 1)[0].item() == pytest.approx(5 / 25)
    assert pointing_game_chance(mask, 1.5)[0].item() == pytest.approx(9 / 25)
    assert math.isnan(pointing_game_chance(mask, 1)[1].item())


def test_per_class_mean():
    values = torch.tensor([1.0, 0.0, 1.0, float("nan"), float("nan")])
    labels = torch.tensor([0, 0, 1, 1, 2])
    torch.testing.assert_close(per_class_mean(values, labels), torch.tensor(0.75))


def test_errors():
    with pytest.raises(ValueError, match=r"\(N, 1, \*S\)"):
        pointing_game(torch.rand(1, 1, 4), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="N = 2"):
        relevance_mass_accuracy(torch.rand(1, 1, 4), torch.zeros(2, 1, 4))
    with pytest.raises(TypeError, match="masks"):
        relevance_rank_accuracy(torch.rand(1, 1, 4), [[0, 1]])
    with pytest.raises(ValueError, match="NaN"):
        energy_pointing_game(torch.full((1, 1, 4), float("nan")), torch.ones(1, 1, 4))
