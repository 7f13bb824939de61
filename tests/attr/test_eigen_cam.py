"""Oracle tests for Eigen-CAM and EigenGrad-CAM: hand-computed projections with the sign rule."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradientXActivation
from torch import nn

from captum_ext.attr import LayerEigenCam, LayerEigenGradCam
from captum_ext.attr.eigen_cam import principal_projection
from tests._helpers import assert_unchanged, conv_input, conv_model, hook_count, snapshot

RANKS = [1, 2, 3]


def hand_projection(maps: torch.Tensor, center: bool = False) -> torch.Tensor:
    """p = M v₁ from a float64 thin SVD, flipped so that cov(p, channel sum) >= 0."""
    out = []
    for example in maps.double():
        matrix = example.reshape(example.shape[0], -1).T  # (Z, K)
        if center:
            matrix = matrix - matrix.mean(0)
        _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        p = matrix @ vh[0]
        r = matrix.sum(1)
        covariance = ((p - p.mean()) * (r - r.mean())).sum()
        if covariance < 0 or (covariance == 0 and p.sum() < 0):
            p = -p
        out.append(p.reshape(example.shape[1:]))
    return torch.stack(out).unsqueeze(1)


def layer_output(model, x):
    with torch.no_grad():
        return model.features(x)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("channels", [(6, 8), (6, 40)], ids=["K<Z", "K>Z"])
@pytest.mark.parametrize("center", [False, True])
def test_eigen_cam_equals_hand_projection(rank, channels, center):
    model, x = conv_model(rank, channels=channels), conv_input(rank)
    out = LayerEigenCam(model, model.features[-1]).attribute(x, target=0, center=center)
    assert out.shape == (3, 1) + (5,) * rank and out.dtype == torch.float32
    expected = hand_projection(layer_output(model, x), center).float()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    if center:  # centred columns: the projection sums to zero
        torch.testing.assert_close(out.flatten(1).sum(1), torch.zeros(3), atol=1e-3, rtol=0)
    else:  # post-ReLU activations: Perron-Frobenius, one-signed and non-negative after the rule
        assert (out >= -1e-5).all()


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_rank_one_activation_is_recovered_with_the_sign_rule(rank, sign):
    """A^k_u = s·a_k·b_u with a, b >= 0 gives p = s·|a|·b: positive for s = +1, and for
    s = -1 the map still correlates positively with the (negative) channel sum."""
    generator = torch.Generator().manual_seed(3)
    a = torch.rand(7, generator=generator) + 0.1
    b = torch.rand((2,) + (4,) * rank, generator=generator) + 0.1
    x = sign * a.reshape((1, 7) + (1,) * rank) * b.unsqueeze(1)  # (2, 7, *S)
    model = nn.Sequential(nn.Identity(), nn.Flatten(), nn.LazyLinear(3))
    model(x)  # materialise the lazy layer
    out = LayerEigenCam(model, model[0]).attribute(x, target=1)
    expected = sign * a.norm() * b.unsqueeze(1)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_sign_falls_back_to_the_sum_when_the_covariance_is_zero():
    # p and the channel-sum map uncorrelated: r is constant, p is not.
    maps = torch.tensor([[[3.0, 1.0, 2.0], [-1.0, 1.0, 0.0]]])  # (1, K=2, Z=3); r = (2, 2, 2)
    out = principal_projection(maps)
    assert out.sum() >= 0
    torch.testing.assert_close(out, hand_projection(maps).float(), rtol=1e-5, atol=1e-5)


def test_half_precision_is_computed_in_float32():
    maps = torch.rand(2, 5, 4, 4)
    out = principal_projection(maps.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), principal_projection(maps), rtol=1e-2, atol=1e-2)


def test_rank_two_layer_is_one_position():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.randn(3, 4)
    out = LayerEigenCam(model, model[1]).attribute(x, target=0)
    assert out.shape == (3, 1)
    with torch.no_grad():
        hidden = model[1](model[0](x))
    torch.testing.assert_close(out.squeeze(1), hidden.norm(dim=1))


@pytest.mark.parametrize("rank", RANKS)
def test_eigen_grad_cam_projects_gradient_times_activation(rank):
    model, x = conv_model(rank), conv_input(rank)
    layer, target = model.features[-1], [1, 4, 0]
    out = LayerEigenGradCam(model, layer).attribute(x, target=target)
    product = LayerGradientXActivation(model, layer).attribute(x, target=target).detach()
    torch.testing.assert_close(out, hand_projection(product).float(), rtol=1e-4, atol=1e-6)
    centred = LayerEigenGradCam(model, layer).attribute(x, target=target, center=True)
    torch.testing.assert_close(
        centred, hand_projection(product, center=True).float(), rtol=1e-4, atol=1e-6
    )


def test_eigen_cam_is_class_agnostic_and_eigen_grad_cam_is_not():
    model, x = conv_model(2), conv_input(2)
    layer = model.features[-1]
    eigen = LayerEigenCam(model, layer)
    torch.testing.assert_close(eigen.attribute(x, target=0), eigen.attribute(x, target=3))
    grad = LayerEigenGradCam(model, layer)
    assert not torch.allclose(grad.attribute(x, target=0), grad.attribute(x, target=3))


@pytest.mark.parametrize("method", [LayerEigenCam, LayerEigenGradCam])
@pytest.mark.parametrize("rank", RANKS)
def test_batch_equals_stacked_singles(method, rank):
    model, x = conv_model(rank), conv_input(rank)
    cam = method(model, model.features[-1])
    targets = [2, 0, 4]
    batched = cam.attribute(x, target=targets)
    singles = torch.cat([cam.attribute(x[i : i + 1], target=t) for i, t in enumerate(targets)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", [LayerEigenCam, LayerEigenGradCam])
def test_no_trace_and_no_backward_for_eigen_cam(method):
    model, x = conv_model(2), conv_input(2)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before = snapshot(model, (x,))
    out = method(model, model.features[-1]).attribute(x, target=[0, 1, 2])
    assert not out.requires_grad
    assert_unchanged(model, (x,), before)


def test_eigen_cam_differentiable_on_request():
    model, x = conv_model(2), conv_input(2)
    out = LayerEigenCam(model, model.features[-1]).attribute(
        x, target=0, grad_kwargs={"create_graph": True}
    )
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out.sum(), [model.features[0].weight])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_errors_are_clear_and_leave_no_hooks():
    model, x = conv_model(2), conv_input(2)
    method = LayerEigenCam(model, model.features[-1])
    with pytest.raises(ValueError, match="out of range"):
        method.attribute(x, target=99)
    with pytest.raises(ValueError, match="one target per example"):
        method.attribute(x, target=[0, 1])
    assert hook_count(model) == 0
