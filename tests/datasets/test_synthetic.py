"""The synthetic cue task: deterministic given the seed, masks that match the cue."""

from __future__ import annotations

import pytest
import torch

from captum_ext.datasets import CUE_SHAPES, SyntheticCueDataset, make_synthetic_cue_data
from captum_ext.datasets.synthetic import shape_stencil


@pytest.mark.parametrize("rank", [2, 3])
def test_deterministic_given_the_seed(rank):
    first = make_synthetic_cue_data(12, rank, seed=3)
    second = make_synthetic_cue_data(12, rank, seed=3)
    other = make_synthetic_cue_data(12, rank, seed=4)
    for name in ("images", "labels", "masks", "cue_pixels"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    assert not torch.equal(first.images, other.images)
    # example i does not depend on the dataset length or on the reading order
    long = SyntheticCueDataset(40, rank, seed=3)
    assert torch.equal(long[11][0], first.images[11])
    assert torch.equal(SyntheticCueDataset(12, rank, seed=3)[5][2], first.masks[5])


@pytest.mark.parametrize("rank, side", [(2, 32), (3, 14)])
def test_shapes_labels_and_masks(rank, side):
    data = make_synthetic_cue_data(40, rank, seed=0)
    assert data.images.shape == (40, 1) + (side,) * rank and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.long and set(data.labels.tolist()) == {0, 1, 2, 3}
    assert data.masks.dtype == torch.bool and data.masks.shape == data.images.shape
    cube = (2 * (3 if rank == 2 else 2) + 1) ** rank
    assert data.masks.flatten(1).sum(1).tolist() == [cube] * 40  # one cue cube per image
    assert bool((data.cue_pixels <= data.masks).all())  # the cue lies inside its box
    for i in range(3):  # the pixels of the cue are those of the labelled shape
        radius = 3 if rank == 2 else 2
        box = data.masks[i, 0].nonzero()
        corner = box.min(0).values
        region = tuple(slice(int(c), int(c) + 2 * radius + 1) for c in corner)
        stencil = shape_stencil(CUE_SHAPES[int(data.labels[i])], radius, rank)
        assert torch.equal(data.cue_pixels[i, 0][region], stencil)
        assert bool((data.images[i, 0][region][stencil] >= 0.5).all())


def test_shapes_by_hand():
    assert shape_stencil("plus", 1, 2).int().tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert shape_stencil("diagonal", 1, 2).int().tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    assert shape_stencil("frame", 1, 2).int().tolist() == [[1, 1, 1], [1, 0, 1], [1, 1, 1]]
    assert shape_stencil("bar", 1, 2, axis=1).int().tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert int(shape_stencil("ball", 2, 3).sum()) == 33  # 3x3x3 core + 6 tips
    assert int(shape_stencil("box", 2, 3).sum()) == 27


def test_errors():
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        make_synthetic_cue_data(4, spatial_dims=1)
    with pytest.raises(ValueError, match="could not place"):
        make_synthetic_cue_data(2, 2, image_size=10, num_distractors=5)
    with pytest.raises(IndexError):
        SyntheticCueDataset(3)[3]
    with pytest.raises(ValueError, match="unknown shape"):
        shape_stencil("star", 2, 2)
