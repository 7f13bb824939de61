"""LayerNormGrad: oracles (per-location hand computations and brute-force unfold), the
framework's other members (Captum's LayerGradCam / LayerGradientXActivation), the cost (one
forward and one backward pass for any number of layers), no trace, errors, batching."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from tests.attr._normgrad_testing import (
    CONV,
    SIZE,
    aggregate,
    layer_tensors,
    make_input,
    make_model,
    patches,
    positions,
)
from captum.attr import LayerGradCam, LayerGradientXActivation
from torch import nn

from captum_ext.attr import LayerNormGrad, NormGrad, tokens_to_grid
from captum_ext.attr._normgrad_ops import SaliencyChoice, WindowGeometry, saliency_map

# ---------------------------------------------------------------- oracles
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_normgrad_is_activation_norm_times_gradient_norm_per_location(rank):
    model, x = make_model(rank), make_input(rank)
    a, g = layer_tensors(model, model[3], x, 1)
    result = LayerNormGrad(model, model[3]).attribute(x, target=1)
    assert result.shape == (2, 1, *SIZE[rank])
    expected = torch.zeros_like(result)
    for n in range(2):
        for u in positions(SIZE[rank]):
            expected[(n, 0) + u] = a[(n, slice(None)) + u].norm() * g[(n, slice(None)) + u].norm()
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-7)
    assert bool((result > 0).all())


def test_attribute_to_layer_input():
    model, x = make_model(2), make_input(2)
    a, g = layer_tensors(model, model[2], x, 1, use_input=True)
    result = LayerNormGrad(model, model[2]).attribute(x, target=1, attribute_to_layer_input=True)
    torch.testing.assert_close(result, (a.norm(dim=1) * g.norm(dim=1))[:, None])


@pytest.mark.parametrize("phase1", ["conv1x1", "scaling", "bias"])
@pytest.mark.parametrize("phase2", ["norm", "sum", "max", "filter_norm"])
def test_pointwise_grid_matches_explicit_contributions(phase1, phase2):
    model, x = make_model(2), make_input(2)
    a, g = layer_tensors(model, model[2], x, 0)
    result = LayerNormGrad(model, model[2]).attribute(x, target=0, phase1=phase1, phase2=phase2)
    expected = torch.zeros_like(result)
    for n, u in itertools.product(range(2), positions(SIZE[2])):
        a_u, g_u = a[(n, slice(None)) + u], g[(n, slice(None)) + u]
        c = {"conv1x1": torch.outer(g_u, a_u), "scaling": g_u * a_u, "bias": g_u}[phase1]
        expected[(n, 0) + u] = aggregate(c, phase2)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("phase2", ["norm", "sum", "max", "filter_norm"])
def test_patch_variant_matches_unfolded_patches(rank, phase2):
    model, x = make_model(rank), make_input(rank)
    a, g = layer_tensors(model, model[3], x, 2)
    result = LayerNormGrad(model, model[3]).attribute(x, target=2, phase1="patch", phase2=phase2)
    p = patches(a, 3)
    expected = torch.zeros_like(result)
    for n, u in itertools.product(range(2), positions(SIZE[rank])):
        c = torch.outer(g[(n, slice(None)) + u], p[(n, slice(None)) + u].flatten())
        expected[(n, 0) + u] = aggregate(c, phase2)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("phase1", ["conv1x1", "patch"])
@pytest.mark.parametrize("phase2", ["max", "sum", "filter_norm"])
def test_outer_product_identities_with_one_signed_vectors(phase1, phase2):
    # Each position gets a sign pattern: both vectors signed, or one of them all-positive or
    # all-negative, so every one of the four extreme products can be the maximum.
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(3, 4, 5, 4, generator=gen)
    g = torch.randn(3, 4, 5, 4, generator=gen)
    a[0] = a[0].abs() + 0.1
    g[0, :, :2] = -g[0, :, :2].abs() - 0.1
    g[1] = g[1].abs() + 0.1
    a[1, :, 2:] = -a[1, :, 2:].abs() - 0.1
    choice = SaliencyChoice(phase1, phase2)
    geometry = WindowGeometry.centred(3, 2) if phase1 == "patch" else None
    result = saliency_map(a, g, choice, geometry)
    p = patches(a, 3) if phase1 == "patch" else a
    expected = torch.zeros_like(result)
    for n, u in itertools.product(range(3), positions((5, 4))):
        c = torch.outer(g[(n, slice(None)) + u], p[(n, slice(None)) + u].flatten())
        expected[(n, 0) + u] = aggregate(c, phase2)
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)


def test_conv3x3_matches_f_unfold_and_kernel_size_5():
    model, x = make_model(2), make_input(2)
    a, g = layer_tensors(model, model[1], x, 1)
    for k in (3, 5):
        unfolded = F.unfold(a, k, padding=k // 2)  # (N, K·k², H·W)
        expected = unfolded.norm(dim=1) * g.flatten(2).norm(dim=1)
        result = LayerNormGrad(model, model[1]).attribute(
            x, target=1, variant="conv3x3", kernel_size=k
        )
        torch.testing.assert_close(result.flatten(1), expected, rtol=1e-5, atol=1e-7)


def _proper_brute_force(conv, a_in, g_out, phase2, pad, mode):
    p = patches(a_in, conv.kernel_size[0], conv.stride[0], conv.dilation[0], pad, mode)
    groups, n_out = conv.groups, g_out.shape[2:]
    expected = torch.zeros(g_out.shape[0], 1, *n_out)
    weight_grad = torch.zeros_like(conv.weight)
    for n, u in itertools.product(range(g_out.shape[0]), positions(n_out)):
        blocks = []
        g_groups = g_out[(n, slice(None)) + u].chunk(groups)
        p_groups = p[(n, slice(None)) + u].chunk(groups)
        for g_group, p_group in zip(g_groups, p_groups):
            blocks.append(torch.outer(g_group, p_group.flatten()))
        expected[(n, 0) + u] = aggregate(torch.cat([b.flatten() for b in blocks]), phase2)
        weight_grad += torch.cat(blocks).reshape(conv.weight.shape)
    return expected, weight_grad


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("phase2", ["norm", "max", "filter_norm"])
def test_proper_matches_brute_force_and_sums_to_the_weight_gradient(rank, phase2):
    torch.manual_seed(3)
    conv = CONV[rank](4, 6, 3, stride=2, padding=1, groups=2)
    model = nn.Sequential(CONV[rank](2, 4, 1), nn.Tanh(), conv, nn.Tanh(), nn.Flatten())
    model.append(nn.Linear(model(make_input(rank)).shape[1], 3)).eval()
    x = make_input(rank)
    a_in, _ = layer_tensors(model, conv, x, 1, use_input=True)
    _, g_out = layer_tensors(model, conv, x, 1)
    result = LayerNormGrad(model, conv).attribute(x, target=1, phase1="proper", phase2=phase2)
    pad = [1] * 2 * rank
    expected, weight_grad = _proper_brute_force(conv, a_in, g_out, phase2, pad, "constant")
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)
    model.zero_grad()
    model(x)[:, 1].sum().backward()  # Σ_u c_u is the real weight gradient
    torch.testing.assert_close(weight_grad, conv.weight.grad, rtol=1e-4, atol=1e-6)


def test_proper_with_same_padding_reflect_mode_and_dilation():
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 4, 3, padding="same", dilation=2, padding_mode="reflect")
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Tanh(), conv, nn.Tanh(), nn.Flatten(),
                          nn.Linear(4 * 6 * 5, 3)).eval()
    x = make_input(2)
    a_in, _ = layer_tensors(model, conv, x, 0, use_input=True)
    _, g_out = layer_tensors(model, conv, x, 0)
    result = LayerNormGrad(model, conv).attribute(x, target=0, variant="proper")
    expected, _ = _proper_brute_force(conv, a_in, g_out, "norm", [2, 2, 2, 2], "reflect")
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)


def test_rank_two_layer_is_one_position_and_proper_linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).eval()
    x = torch.randn(4, 5)
    a, g = layer_tensors(model, model[1], x, 2)
    result = LayerNormGrad(model, model[1]).attribute(x, target=2)
    assert result.shape == (4, 1)
    torch.testing.assert_close(result, (a.norm(dim=1) * g.norm(dim=1))[:, None])
    a_in, _ = layer_tensors(model, model[2], x, 2, use_input=True)
    _, g_out = layer_tensors(model, model[2], x, 2)
    proper = LayerNormGrad(model, model[2]).attribute(x, target=2, variant="proper")
    torch.testing.assert_close(proper, (a_in.norm(dim=1) * g_out.norm(dim=1))[:, None])


def test_token_layer_through_reshape_transform():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 4, 2)).eval()
    x = torch.randn(2, 5, 3)  # 1 class token + a 2x2 grid of tokens
    a, g = layer_tensors(model, model[1], x, 1)
    method = LayerNormGrad(model, model[1], reshape_transform=tokens_to_grid(1))
    result = method.attribute(x, target=1)
    expected = (a[:, 1:].norm(dim=2) * g[:, 1:].norm(dim=2)).reshape(2, 1, 2, 2)
    torch.testing.assert_close(result, expected)


def test_input_level_normgrad():
    model, x = make_model(2), make_input(2)
    x_req = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(model(x_req)[:, 2].sum(), x_req)[0]
    result = NormGrad(model).attribute(x, target=2)
    torch.testing.assert_close(result, (x.norm(dim=1) * grad.norm(dim=1))[:, None])
    assert isinstance(NormGrad(model).attribute((x,), target=2), tuple)


# ---------------------------------------------------------------- the framework's other members
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_grad_cam_and_gradient_x_activation_are_members(rank):
    model, x = make_model(rank), make_input(rank)
    for layer in (model[1], model[3]):
        ours = LayerNormGrad(model, layer)
        torch.testing.assert_close(
            ours.attribute(x, target=[0, 2], variant="grad_cam"),
            LayerGradCam(model, layer).attribute(x, target=[0, 2]).detach(),
        )
        torch.testing.assert_close(
            ours.attribute(x, target=[0, 2], phase1="scaling", phase2="sum"),
            LayerGradientXActivation(model, layer).attribute(x, target=[0, 2]).sum(1, keepdim=True),
        )


def test_grad_cam_member_on_rank_two_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).eval()
    x = torch.randn(4, 5)
    torch.testing.assert_close(
        LayerNormGrad(model, model[1]).attribute(x, target=1, variant="grad_cam"),
        LayerGradCam(model, model[1]).attribute(x, target=1).detach(),
    )


# ---------------------------------------------------------------- several layers, and the cost
class _CountBackward(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        _CountBackward.calls += 1
        return grad


class Counted(nn.Module):
    """Counts forward passes (a forward hook on the model root) and backward passes (an
    autograd Function on the output that every backward pass must traverse)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return _CountBackward.apply(self.model(x))


@pytest.mark.parametrize("variant", ["normgrad", "conv3x3", "proper", "selective"])
def test_one_forward_and_one_backward_for_any_number_of_layers(variant):
    model, x = make_model(2), make_input(2)
    counted = Counted(model)
    convs = [model[0], model[2], model[4]]
    others = [model[1], model[3], model[4], model[5]]
    for count in (1, 2, 3):
        layers = convs[:count] if variant == "proper" else others[:count]
        forwards = []
        handle = counted.register_forward_hook(lambda *_: forwards.append(1))
        _CountBackward.calls = 0
        try:
            maps = LayerNormGrad(counted, layers).attribute(x, target=1, variant=variant)
        finally:
            handle.remove()
        assert (len(forwards), _CountBackward.calls) == (1, 1)
        assert isinstance(maps, list) and len(maps) == count


def test_multi_layer_equals_single_layers_and_combinations_by_hand():
    model, x = make_model(2), make_input(2, batch=3)
    layers = [model[1], model[3], model[4]]
    target = [0, 1, 2]
    together = LayerNormGrad(model, layers).attribute(x, target=target)
    singles = [LayerNormGrad(model, layer).attribute(x, target=target) for layer in layers]
    for joint, single in zip(together, singles):
        torch.testing.assert_close(joint, single)

    def normalised(m):
        m = F.interpolate(m, size=x.shape[2:], mode="bilinear", align_corners=False)
        out = torch.empty_like(m)
        for n in range(m.shape[0]):
            out[n] = (m[n] - m[n].min()) / (m[n].max() - m[n].min())
        return out

    parts = [normalised(m) for m in singles]
    product = (parts[0] + 1e-6) * (parts[1] + 1e-6) * (parts[2] + 1e-6)
    combined = LayerNormGrad(model, layers).attribute(x, target=target, combine="product")
    torch.testing.assert_close(combined, product)
    weights = [1.0, 2.0, 5.0]
    weighted = sum(w / 8.0 * p for w, p in zip(weights, parts))
    torch.testing.assert_close(
        LayerNormGrad(model, layers).attribute(x, target=target, combine="sum", weights=weights),
        weighted,
    )
    lam = torch.tensor([1 / 3, 2 / 3, 3 / 3]) / 2.0  # "linear": linspace(0, 1, 4)[1:], normalised
    geometric = math.prod((p + 1e-6) ** w for p, w in zip(parts, lam))
    torch.testing.assert_close(
        LayerNormGrad(model, layers).attribute(
            x, target=target, combine="geometric", weights="linear"
        ),
        geometric,
    )


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_batch_equals_stacked_single_examples(rank):
    model, x = make_model(rank), make_input(rank, batch=3)
    target = torch.tensor([2, 0, 1])
    for kwargs in ({}, {"variant": "conv3x3"}, {"variant": "proper"}, {"combine": "product"}):
        layers = [model[2], model[4]] if kwargs.get("variant") == "proper" else [model[1], model[3]]
        method = LayerNormGrad(model, layers)
        batched = method.attribute(x, target=target, **kwargs)
        singles = [
            method.attribute(x[i : i + 1], target=int(target[i]), **kwargs) for i in range(3)
        ]
        if isinstance(batched, list):
            for j, joint in enumerate(batched):
                torch.testing.assert_close(joint, torch.cat([s[j] for s in singles]))
        else:
            torch.testing.assert_close(batched, torch.cat(singles))


@pytest.mark.real_model
def test_real_model_grad_cam_member_and_four_layers():
    from captum_ext.datasets import load_photo
    from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet

    model = load_efficientnet_lite0()
    x = preprocess_imagenet(load_photo("chelsea"), size=128)  # small: a fast test
    torch.testing.assert_close(
        LayerNormGrad(model, model._bn1).attribute(x, target=285, variant="grad_cam"),
        LayerGradCam(model, model._bn1).attribute(x, target=285).detach(),
    )
    layers = [model._blocks[5], model._blocks[10], model._blocks[15], model._bn1]
    maps = LayerNormGrad(model, layers).attribute(x, target=285)
    shapes = [tuple(m.shape[2:]) for m in maps]
    assert shapes == [(8, 8), (8, 8), (4, 4), (4, 4)]
    assert all(bool((m > 0).all()) for m in maps)
