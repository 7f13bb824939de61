"""The CAM base's plumbing: tuple inputs, extra forward args, layer inputs, multi-output layers,
rank-2 layers and token layers."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

import captum_ext
from captum_ext.attr import (
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerXGradCam,
    channels_last_to_first,
    tokens_to_grid,
)
from captum_ext.models import TinyViT
from tests._helpers import conv_input, hook_count


class TwoInputNet(nn.Module):
    """Two image inputs and a scale passed through ``additional_forward_args``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv_a, self.conv_b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, a, b, scale):
        h = self.act(self.conv_a(a) + self.conv_b(b))
        return self.fc(h.mean((-2, -1))) * scale


def test_tuple_inputs_and_additional_forward_args():
    model = TwoInputNet().eval()
    a, b = conv_input(2, seed=1), conv_input(2, seed=2)
    ours = LayerHiResCam(model, model.act).attribute((a, b), target=1, additional_forward_args=2.0)
    single = LayerHiResCam(model, model.act).attribute((a, b), target=1, additional_forward_args=1.0)
    assert isinstance(ours, torch.Tensor) and ours.shape == (3, 1, 5, 5)
    torch.testing.assert_close(ours, 2.0 * single)


def test_attribute_to_layer_input():
    model = TwoInputNet().eval()
    a, b = conv_input(2, seed=1), conv_input(2, seed=2)
    out = LayerXGradCam(model, model.act).attribute(
        (a, b), target=0, additional_forward_args=1.0, attribute_to_layer_input=True
    )
    captum = LayerGradCam(model, model.act).attribute(
        (a, b), target=0, additional_forward_args=1.0, attribute_to_layer_input=True
    )
    assert out.shape == captum.shape == (3, 1, 5, 5)
    pre_relu = model.conv_a(a) + model.conv_b(b)
    assert not torch.allclose(out, LayerXGradCam(model, model.act).attribute(
        (a, b), target=0, additional_forward_args=1.0))
    assert (pre_relu < 0).any()  # the input of the ReLU is signed, so the maps differ


class TwoOutput(nn.Module):
    def forward(self, x):
        return torch.relu(x), torch.relu(-x)


class MultiOutputNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.split = TwoOutput()
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        p, n = self.split(self.conv(x))
        return self.fc(torch.cat([p, n], 1).mean((-2, -1)))


def test_multi_output_layer_returns_a_tuple_like_captum():
    model, x = MultiOutputNet().eval(), conv_input(2)
    ours = LayerHiResCam(model, model.split).attribute(x, target=2)
    captum = LayerGradCam(model, model.split).attribute(x, target=2)
    assert isinstance(ours, tuple) and len(ours) == 2
    z = 25
    for o, c in zip(ours, captum):
        # GAP head: HiResCAM = Grad-CAM per output tensor
        torch.testing.assert_close(o, c.detach(), rtol=1e-5, atol=1e-7)
        assert o.shape == (3, 1, 5, 5)
    assert z == x[0, 0].numel()


def test_rank_two_layer_matches_captum_and_keeps_examples_apart():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.randn(5, 4)
    targets = [0, 1, 2, 1, 0]
    ours = LayerGradCamPlusPlus(model, model[1]).attribute(x, target=targets)
    assert ours.shape == (5, 1)
    singles = torch.cat([
        LayerGradCamPlusPlus(model, model[1]).attribute(x[i:i + 1], target=t)
        for i, t in enumerate(targets)
    ])
    torch.testing.assert_close(ours, singles)
    hires = LayerHiResCam(model, model[1]).attribute(x, target=targets)
    captum = LayerGradCam(model, model[1]).attribute(x, target=targets)
    torch.testing.assert_close(hires, captum.detach())


def test_tiny_vit_token_layer_with_reshape_transform():
    torch.manual_seed(0)
    model = TinyViT(image_size=16, patch=4, dim=16).eval()
    x = torch.randn(2, 3, 16, 16)
    layer = model.blocks[-1]
    method = LayerHiResCam(model, layer, reshape_transform=tokens_to_grid(n_prefix=1))
    out = method.attribute(x, target=[1, 3])
    assert out.shape == (2, 1, 4, 4)
    # hand computation on the tokens: Σ_d g·A over the patch tokens, laid out row-major
    tokens = {}
    handle = layer.register_forward_hook(lambda m, i, o: tokens.setdefault("a", o))
    try:
        y = model(x)
    finally:
        handle.remove()
    scores = y[[0, 1], [1, 3]].sum()
    (g,) = torch.autograd.grad(scores, tokens["a"])
    expected = (g * tokens["a"])[:, 1:, :].sum(-1).reshape(2, 1, 4, 4)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-5, atol=1e-6)
    assert hook_count(model) == 0


def test_token_grid_errors_are_explicit():
    transform = tokens_to_grid(n_prefix=1)
    with pytest.raises(ValueError, match="square"):
        transform(torch.zeros(1, 1 + 12, 8))
    with pytest.raises(ValueError, match="holds"):
        tokens_to_grid(n_prefix=1, grid_size=(3, 5))(torch.zeros(1, 13, 8))
    assert tokens_to_grid(n_prefix=0, grid_size=(3, 4))(torch.zeros(2, 12, 8)).shape == (2, 8, 3, 4)
    assert channels_last_to_first(torch.zeros(2, 3, 4, 8)).shape == (2, 8, 3, 4)


def test_resolve_layer_suggests_close_names():
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU()))
    assert captum_ext.resolve_layer(model, "features.1") is model.features[1]
    with pytest.raises(ValueError, match="Did you mean: features.1"):
        captum_ext.resolve_layer(model, "feature.1")


def test_plain_function_forward_and_layer_argument_checks():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 2)).eval()

    def forward(x):
        return model(x) * 2

    out = LayerHiResCam(forward, model[1]).attribute(torch.randn(2, 2, 8), target=1)
    assert out.shape == (2, 1, 6)
    with pytest.raises(TypeError, match="nn.Module"):
        LayerHiResCam(model, "1").attribute(torch.randn(2, 2, 8), target=1)
