"""The attribution region loss: hand computations, 1D/2D/3D, gradient flow, no trace, errors."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam, Saliency

from captum_ext.attr import LayerHiResCam
from captum_ext.losses import (
    AttributionRegionLoss,
    LogProbabilities,
    attribution_region_penalty,
    region_mass_fraction,
)
from tests._helpers import assert_unchanged, conv_input, conv_model, hook_count, snapshot

RANKS = [1, 2, 3]
MAPS = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]]])
REGION = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])


@pytest.mark.parametrize(
    ("transform", "expected"), [("abs", 1 / 6), ("relu", 1 / 4), ("square", 1 / 14)]
)
def test_mass_fraction_by_hand(transform, expected):
    fraction = region_mass_fraction(MAPS, REGION, transform=transform)
    torch.testing.assert_close(fraction, torch.tensor([expected]))


def test_penalty_variants_by_hand():
    def penalty(**kwargs):
        return attribution_region_penalty(MAPS, REGION, **kwargs)

    torch.testing.assert_close(penalty(), torch.tensor([1 / 6]))
    torch.testing.assert_close(penalty(region="allowed"), torch.tensor([5 / 6]))
    torch.testing.assert_close(penalty(normalization="sum"), torch.tensor([1.0]))
    torch.testing.assert_close(penalty(normalization="mean"), torch.tensor([1 / 4]))
    torch.testing.assert_close(penalty(region="allowed", normalization="sum"), torch.tensor([5.0]))
    # an input-shaped (N, C, H, W) mask counts a pixel if any channel marks it
    channels = torch.stack([REGION[0], torch.zeros(2, 2), REGION[0]])[None]
    torch.testing.assert_close(attribution_region_penalty(MAPS, channels), torch.tensor([1 / 6]))
    # an all-zero map has no mass anywhere
    torch.testing.assert_close(region_mass_fraction(MAPS * 0, REGION), torch.tensor([0.0]))


@pytest.mark.parametrize("rank", RANKS)
def test_constant_map_upsampled_gives_the_region_share(rank):
    """A constant low-resolution map stays constant when upsampled, so the mass share is the
    region's share of the pixels (1D, 2D and 3D)."""
    maps = torch.full((2, 1) + (2,) * rank, 0.7)
    region = torch.zeros((2,) + (6,) * rank)
    region[(0,) + (slice(0, 3),) * rank] = 1.0
    fraction = region_mass_fraction(maps, region)
    torch.testing.assert_close(fraction, torch.tensor([0.5**rank, 0.0]))


@pytest.mark.parametrize("rank", RANKS)
def test_loss_equals_hand_grad_cam_share(rank):
    """On a GAP→Linear head, Grad-CAM at the last ReLU is Σ_k W[c,k]/Z · A_k (cam-family)."""
    model, x = conv_model(rank), conv_input(rank)
    target = [0, 3, 1]
    forbidden = torch.zeros((3, 1) + (5,) * rank)
    forbidden[(slice(None), 0) + (slice(0, 2),) * rank] = 1.0
    loss = AttributionRegionLoss(
        LayerGradCam(model, model.features[-1]), lambda_explanation=2.0, reduction="none"
    )(x, target, forbidden)
    with torch.no_grad():
        activation = model.features(x)
    cam = torch.einsum("nk,nk...->n...", model.fc.weight[target], activation).abs()
    inside = (cam * forbidden[:, 0]).flatten(1).sum(1)
    expected = 2.0 * inside / cam.flatten(1).sum(1)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    for n in range(3):  # batch = stack of single examples
        alone = AttributionRegionLoss(
            LayerGradCam(model, model.features[-1]), lambda_explanation=2.0
        )(x[n : n + 1], target[n], forbidden[n : n + 1])
        torch.testing.assert_close(alone.detach(), expected[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("explainer", ["captum", "ours", "callable"])
def test_gradients_reach_every_weight_and_the_call_leaves_no_trace(explainer):
    model, x = conv_model(2), conv_input(2)
    model.train()
    layer = model.features[-1]
    if explainer == "captum":
        method = LayerGradCam(model, layer)
    elif explainer == "ours":
        method = LayerHiResCam(model, layer)
    else:
        def method(inputs, target):
            leaf = inputs.detach().requires_grad_(True)
            score = model(leaf).gather(1, torch.as_tensor(target)[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, leaf, create_graph=True)
            return gradient.abs().sum(1, keepdim=True)
    forbidden = torch.zeros(3, 5, 5)
    forbidden[:, :2] = 1.0
    before = snapshot(model, (x,))
    loss = AttributionRegionLoss(method)(x, [0, 1, 2], forbidden)
    assert_unchanged(model, (x,), before)  # no hook, no .grad, no parameter change
    assert model.training and loss.requires_grad
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss.backward()
    conv_grads = [model.features[0].weight.grad, model.features[2].weight.grad]
    assert all(g is not None and g.abs().sum() > 0 for g in conv_grads)
    old = model.features[0].weight.detach().clone()
    optimizer.step()
    assert not torch.equal(old, model.features[0].weight)
    assert hook_count(model) == 0


def test_training_lowers_the_forbidden_share():
    model, x = conv_model(2), conv_input(2, batch=4)
    forbidden = torch.zeros(4, 5, 5)
    forbidden[:, :, :2] = 1.0
    criterion = AttributionRegionLoss(LayerGradCam(model, model.features[-1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    first = criterion(x, [0, 1, 2, 3], forbidden).item()
    for _ in range(15):
        loss = criterion(x, [0, 1, 2, 3], forbidden)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert criterion(x, [0, 1, 2, 3], forbidden).item() < 0.5 * first


def test_under_no_grad_the_value_is_detached():
    model, x = conv_model(2), conv_input(2)
    criterion = AttributionRegionLoss(LayerGradCam(model, model.features[-1]))
    mask = torch.ones(3, 5, 5)
    mask[:, 2:] = 0
    value = criterion(x, [0, 1, 2], mask)
    with torch.no_grad():
        detached = criterion(x, [0, 1, 2], mask)
    assert not detached.requires_grad
    torch.testing.assert_close(detached, value.detach())


def test_clear_errors():
    model, x = conv_model(2), conv_input(2)
    mask = torch.ones(3, 5, 5)
    with pytest.raises(TypeError, match="grad_kwargs"):
        AttributionRegionLoss(Saliency(model))(x, [0, 1, 2], mask)
    with pytest.raises(ValueError, match="not differentiable"):
        AttributionRegionLoss(lambda inputs, target: torch.ones(3, 1, 5, 5))(x, 0, mask)
    with pytest.raises(ValueError, match="spatial dims"):
        attribution_region_penalty(torch.ones(3, 1, 5, 5), torch.ones(3, 5))
    with pytest.raises(ValueError, match="examples"):
        attribution_region_penalty(torch.ones(3, 1, 5, 5), torch.ones(2, 5, 5))
    with pytest.raises(ValueError, match="without spatial"):
        attribution_region_penalty(torch.ones(3, 1), torch.ones(3, 5))
    for bad in ({"region": "inside"}, {"transform": "log"}, {"normalization": "max"},
                {"lambda_explanation": -1.0}):
        with pytest.raises(ValueError):
            AttributionRegionLoss(LayerGradCam(model, model.features[-1]), **bad)


def test_log_probabilities_explainer():
    model, x = conv_model(2), conv_input(2)
    wrapped = LogProbabilities(model)
    torch.testing.assert_close(wrapped(x), torch.log_softmax(model(x), 1))
    # Grad-CAM of log p_y on a GAP→Linear head: weights (W_y − Σ_k p_k W_k) / Z
    maps = LayerGradCam(wrapped, model.features[-1]).attribute(x, target=[0, 1, 2])
    with torch.no_grad():
        activation, p = model.features(x), model(x).softmax(1)
    weights = model.fc.weight[[0, 1, 2]] - p @ model.fc.weight
    hand = torch.einsum("nk,nkhw->nhw", weights, activation)[:, None] / 25
    torch.testing.assert_close(maps.detach(), hand, rtol=1e-5, atol=1e-6)
    loss = AttributionRegionLoss(LayerGradCam(wrapped, model.features[-1]))(
        x, [0, 1, 2], torch.ones(3, 5, 5)
    )
    loss.backward()
    assert model.features[0].weight.grad is not None
