"""The confounded synthetic task: determinism, confounder statistics, masks, errors."""

from __future__ import annotations

import pytest
import torch

from captum_ext.datasets import CONFOUNDER_COLOURS, ConfoundedShapes, confounded_splits


def test_same_seed_same_tensors_and_different_seed_different_ones():
    a, b = ConfoundedShapes(40, seed=3), ConfoundedShapes(40, seed=3)
    for name in ("images", "labels", "cue_masks", "confounder_masks", "confounder_classes"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.images, ConfoundedShapes(40, seed=4).images)


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_confounder_agreement(num_classes):
    train, test = confounded_splits(600, 600, num_classes=num_classes)
    assert train.agreement_rate == 1.0
    assert abs(test.agreement_rate - 1 / num_classes) < 0.06  # decorrelated
    anti = ConfoundedShapes(300, num_classes=num_classes, confounder_agreement=0.0)
    assert anti.agreement_rate == 0.0
    partial = ConfoundedShapes(1000, num_classes=num_classes, confounder_agreement=0.8)
    assert abs(partial.agreement_rate - 0.8) < 0.05
    assert set(train.labels.tolist()) == set(range(num_classes))


def test_masks_and_pixels():
    data = ConfoundedShapes(50, num_classes=4, image_size=24, bar_length=7, mark_size=4,
                            noise=0.1, seed=1)
    image, label, cue, confounder = data[0]
    assert image.shape == (3, 24, 24) and cue.shape == confounder.shape == (1, 24, 24)
    assert int(label) == int(data.labels[0])
    assert torch.all(data.cue_masks.flatten(1).sum(1) == 7)
    assert torch.all(data.confounder_masks.flatten(1).sum(1) == 16)
    assert not bool((data.cue_masks * data.confounder_masks).any())  # disjoint
    colours = torch.tensor(CONFOUNDER_COLOURS)
    for n in range(50):
        mark = data.confounder_masks[n, 0].bool()
        rows, columns = mark.nonzero(as_tuple=True)
        assert {int(rows.min()), int(columns.min())} <= {0, 20}  # a 4x4 corner square
        pixels = data.images[n][:, mark]
        expected = colours[int(data.confounder_classes[n])][:, None].expand_as(pixels)
        assert torch.equal(pixels, expected)  # the square is the exact colour, no noise
        bar_rows, bar_columns = data.cue_masks[n, 0].nonzero(as_tuple=True)
        label = int(data.labels[n])
        if label == 0:
            assert bar_rows.unique().numel() == 1
        elif label == 1:
            assert bar_columns.unique().numel() == 1
        elif label == 2:
            assert torch.all(bar_rows - bar_columns == bar_rows[0] - bar_columns[0])
        else:
            assert torch.all(bar_rows + bar_columns == bar_rows[0] + bar_columns[0])
        # the bar is brighter than the noise: its gray level is added to every channel
        assert data.images[n][:, data.cue_masks[n, 0].bool()].mean() > 0.3


def test_clear_errors():
    with pytest.raises(ValueError, match="num_classes"):
        ConfoundedShapes(10, num_classes=5)
    with pytest.raises(ValueError, match="confounder_agreement"):
        ConfoundedShapes(10, confounder_agreement=1.5)
    with pytest.raises(ValueError, match="too small"):
        ConfoundedShapes(10, image_size=10)
    with pytest.raises(ValueError, match="size"):
        ConfoundedShapes(0)
