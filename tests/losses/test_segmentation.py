"""Segmentation-style heatmap losses: hand computations, ranks, ignore index, gradient flow."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam

from captum_ext.losses import (
    HeatmapSegmentationLoss,
    class_heatmaps,
    heatmap_segmentation_loss,
    normalize_heatmap,
)
from tests._helpers import conv_input, conv_model

RANKS = [1, 2, 3]
EPS = 1e-6


def test_cross_entropy_over_class_heatmaps_by_hand():
    # two classes, two pixels; the second pixel is ignored (-1)
    heatmaps = torch.tensor([[[[2.0, 5.0]], [[0.0, -1.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[1, -1]]])
    expected = -math.log(math.exp(0.0) / (math.exp(2.0) + math.exp(0.0)))
    loss = heatmap_segmentation_loss(heatmaps, labels)
    torch.testing.assert_close(loss, torch.tensor(expected))
    torch.testing.assert_close(HeatmapSegmentationLoss()(heatmaps, labels), loss)


def test_binary_losses_by_hand():
    heatmap = torch.tensor([[[[2.0, 1.0], [0.0, -1.0]]]])  # max-normalised: [1, .5, 0, 0]
    labels = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    p = normalize_heatmap(heatmap)
    torch.testing.assert_close(p, torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]]))
    bce = (-math.log(1 - EPS) - math.log(0.5) - math.log(1 - EPS) - math.log(EPS)) / 4
    dice = 1 - (2 * 1.0 + 1.0) / (1.5 + 2.0 + 1.0)
    torch.testing.assert_close(
        heatmap_segmentation_loss(heatmap, labels, kind="bce"), torch.tensor(bce), rtol=1e-4,
        atol=1e-5,
    )
    torch.testing.assert_close(
        heatmap_segmentation_loss(heatmap, labels, kind="dice"), torch.tensor(dice)
    )
    torch.testing.assert_close(
        heatmap_segmentation_loss(heatmap, labels, kind="bce_dice"), torch.tensor(bce + dice),
        rtol=1e-4, atol=1e-5,
    )
    # ignoring the badly predicted pixel removes its -log(EPS) term
    ignored = labels.clone()
    ignored[0, 1, 1] = -1
    bce_ignored = (-math.log(1 - EPS) - math.log(0.5) - math.log(1 - EPS)) / 3
    torch.testing.assert_close(
        heatmap_segmentation_loss(heatmap, ignored, kind="bce"), torch.tensor(bce_ignored),
        rtol=1e-4, atol=1e-5,
    )
    sigmoid = heatmap_segmentation_loss(heatmap, labels, kind="bce", normalization="sigmoid")
    torch.testing.assert_close(
        sigmoid, F.binary_cross_entropy(torch.sigmoid(heatmap)[:, 0], labels)
    )


@pytest.mark.parametrize("rank", RANKS)
def test_low_resolution_heatmaps_are_upsampled_per_rank(rank):
    """A constant heatmap upsampled stays constant: the max-normalised map is 1 everywhere, so
    the BCE is −log ε (the clamp) on background pixels only, weighted by their share; float32
    rounds 1 − ε, hence the tolerance."""
    heatmaps = torch.full((2, 1) + (2,) * rank, 3.0)
    labels = torch.zeros((2,) + (4,) * rank)
    labels[(0,) + (slice(0, 2),) * rank] = 1.0
    per_example = heatmap_segmentation_loss(heatmaps, labels, kind="bce", reduction="none")
    background = torch.tensor([1 - 0.5**rank, 1.0])
    torch.testing.assert_close(per_example, background * -math.log(EPS), rtol=2e-3, atol=1e-4)
    classes = torch.randn((2, 3) + (2,) * rank)
    pixel_labels = torch.randint(3, (2,) + (4,) * rank)
    ce = heatmap_segmentation_loss(classes, pixel_labels)
    upsampled = F.interpolate(classes, size=(4,) * rank,
                              mode={1: "linear", 2: "bilinear", 3: "trilinear"}[rank])
    torch.testing.assert_close(ce, F.cross_entropy(upsampled, pixel_labels))


def test_class_heatmaps_are_differentiable_per_class():
    model, x = conv_model(2), conv_input(2)
    layer = model.features[-1]
    heatmaps = class_heatmaps(LayerGradCam(model, layer), x, [0, 2])
    assert heatmaps.shape == (3, 2, 5, 5) and heatmaps.requires_grad
    for index, c in enumerate([0, 2]):
        single = LayerGradCam(model, layer).attribute(x, target=c)
        torch.testing.assert_close(heatmaps[:, index : index + 1].detach(), single.detach())
    labels = torch.randint(2, (3, 5, 5), generator=torch.Generator().manual_seed(0))
    loss = HeatmapSegmentationLoss()(heatmaps, labels)
    loss.backward()
    assert model.features[0].weight.grad is not None
    assert model.features[0].weight.grad.abs().sum() > 0


def test_clear_errors():
    with pytest.raises(ValueError, match="integer labels"):
        heatmap_segmentation_loss(torch.ones(1, 2, 3, 3), torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match="kind"):
        heatmap_segmentation_loss(torch.ones(1, 2, 3, 3), torch.ones(1, 3, 3), kind="focal")
    with pytest.raises(ValueError, match="do not match"):
        heatmap_segmentation_loss(torch.ones(1, 1, 3, 3), torch.ones(3, 3), kind="bce")
    with pytest.raises(ValueError, match="normalization"):
        HeatmapSegmentationLoss(normalization="softmax")
