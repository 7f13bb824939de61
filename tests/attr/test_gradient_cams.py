"""Oracle tests for the gradient CAMs: closed forms on GAP→FC heads and hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam, LayerGradientXActivation
from torch import nn

from captum_ext.attr import (
    LayerClassActivationMap,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerLayerCam,
    LayerSmoothGradCamPlusPlus,
    LayerXGradCam,
    fuse_layer_cams,
)
from tests._helpers import conv_input, conv_model

RANKS = [1, 2, 3]


def _gap_head_terms(model, x, rank):
    """A = last ReLU output, W, b of the linear head, logits, and Z."""
    with torch.no_grad():
        activation = model.features(x)
        logits = model(x)
    z = activation[0, 0].numel()
    return activation, model.fc.weight, model.fc.bias, logits, z


@pytest.mark.parametrize("rank", RANKS)
def test_cam_mean_is_logit_minus_bias(rank):
    model, x = conv_model(rank), conv_input(rank)
    activation, weight, bias, logits, z = _gap_head_terms(model, x, rank)
    target = [0, 3, 1]
    cam = LayerClassActivationMap(model, model.features[-1], model.fc).attribute(x, target=target)
    assert cam.shape == (3, 1) + (5,) * rank
    means = cam.flatten(1).mean(1)
    expected = logits[torch.arange(3), target] - bias[target]
    torch.testing.assert_close(means, expected, rtol=1e-5, atol=1e-5)
    # and the map itself is Σ_k W[c,k] A^k
    hand = torch.einsum("nk,nk...->n...", weight[target], activation).unsqueeze(1)
    torch.testing.assert_close(cam, hand.detach())


@pytest.mark.parametrize("rank", RANKS)
def test_gap_head_identities(rank):
    """Grad-CAM (no ReLU) = HiResCAM = XGrad-CAM = CAM / Z on a GAP→FC head."""
    model, x = conv_model(rank), conv_input(rank)
    layer, target = model.features[-1], torch.tensor([2, 0, 4])
    cam = LayerClassActivationMap(model, layer, model.fc).attribute(x, target=target)
    z = cam[0, 0].numel()
    grad_cam = LayerGradCam(model, layer).attribute(x, target=target)
    for method in (LayerHiResCam, LayerXGradCam):
        out = method(model, layer).attribute(x, target=target)
        torch.testing.assert_close(out, cam / z, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_cam.detach(), cam / z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rank", RANKS)
def test_layer_cam_gap_head(rank):
    model, x = conv_model(rank), conv_input(rank)
    activation, weight, _, _, z = _gap_head_terms(model, x, rank)
    out = LayerLayerCam(model, model.features[-1]).attribute(x, target=1)
    hand = torch.einsum("k,nk...->n...", F.relu(weight[1]) / z, activation).unsqueeze(1)
    torch.testing.assert_close(out, hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("alpha_normalization", [False, True])
def test_grad_cam_pp_gap_head_closed_form(rank, alpha_normalization):
    """Paper form: w_k = ReLU(W[c,k]) / (2 + S_k W[c,k]/Z); official form: w_k = ReLU(W[c,k]) / Z."""
    model, x = conv_model(rank), conv_input(rank)
    activation, weight, _, _, z = _gap_head_terms(model, x, rank)
    target = [4, 1, 1]
    out = LayerGradCamPlusPlus(model, model.features[-1]).attribute(
        x, target=target, alpha_normalization=alpha_normalization
    )
    w = weight[target]  # (N, K)
    if alpha_normalization:
        expected_w = F.relu(w) / z
    else:
        s = activation.flatten(2).sum(-1)
        expected_w = F.relu(w) / (2 + s * w / z)
    hand = torch.einsum("nk,nk...->n...", expected_w, activation).unsqueeze(1)
    torch.testing.assert_close(out, hand.detach(), rtol=1e-4, atol=1e-6)


class _DeepHead(nn.Module):
    """conv → ReLU → [layer: ReLU] → conv → ReLU → max-pool → linear: a non-GAP head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        a = self.act(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(a)), 2)
        return self.fc(h.flatten(1))


def test_grad_cam_pp_matches_per_entry_hand_computation():
    """α, w and the map computed entry by entry with Python loops, on a non-GAP head."""
    model = _DeepHead().eval()
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    target = [0, 2]
    out = LayerGradCamPlusPlus(model, model.act).attribute(x, target=target)
    for n in range(2):
        xa = x[n : n + 1]
        activation = model.act(model.conv1(xa)).detach().requires_grad_(True)
        h = F.max_pool2d(F.relu(model.conv2(activation)), 2)
        y = model.fc(h.flatten(1))[0, target[n]]
        (g,) = torch.autograd.grad(y, activation)
        a, g = activation[0].detach(), g[0]
        expected = torch.zeros(4, 4)
        for k in range(3):
            s = float(a[k].sum())
            w = 0.0
            for i in range(4):
                for j in range(4):
                    gij = float(g[k, i, j])
                    if gij > 0:
                        den = 2 * gij**2 + s * gij**3
                        alpha = gij**2 / den if den != 0 else 0.0
                        w += alpha * gij
            expected += w * a[k]
        torch.testing.assert_close(out[n, 0], expected, rtol=1e-4, atol=1e-6)


def test_exp_trick_derivative_identity():
    """On a piecewise-linear path, ∂²e^y/∂a² = e^y g² and ∂³e^y/∂a³ = e^y g³ for one entry."""
    model = _DeepHead().eval()
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    base = model.act(model.conv1(x)).detach()
    index = (0, 1, 2, 1)

    def exp_score(entry):
        a = base.clone()
        a[index] = entry
        h = F.max_pool2d(F.relu(model.conv2(a)), 2)
        return torch.exp(model.fc(h.flatten(1))[0, 1])

    entry = base[index].clone().requires_grad_(True)
    big_y = exp_score(entry)
    (d1,) = torch.autograd.grad(big_y, entry, create_graph=True)
    (d2,) = torch.autograd.grad(d1, entry, create_graph=True)
    (d3,) = torch.autograd.grad(d2, entry)
    g = d1 / big_y
    torch.testing.assert_close(d2, big_y * g**2, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(d3, big_y * g**3, rtol=1e-4, atol=1e-8)


def test_hires_cam_completeness_on_flatten_linear_head():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 6)).eval()
    x = conv_input(2)
    out = LayerHiResCam(model, model[1]).attribute(x, target=[5, 2, 0])
    with torch.no_grad():
        logits = model(x)
    expected = logits[torch.arange(3), [5, 2, 0]] - model[3].bias[[5, 2, 0]]
    torch.testing.assert_close(out.flatten(1).sum(1), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", RANKS)
def test_hires_cam_equals_captum_gradient_x_activation_summed(rank):
    torch.manual_seed(0)
    model = nn.Sequential(
        {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank](3, 4, 3, padding=1),
        nn.Tanh(),
        {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank](4, 2, 3, padding=1),
        nn.Flatten(),
        nn.LazyLinear(3),
    )
    x = conv_input(rank, size=4)
    model(x)
    model.eval()
    ours = LayerHiResCam(model, model[1]).attribute(x, target=1)
    captum = LayerGradientXActivation(model, model[1]).attribute(x, target=1).sum(1, keepdim=True)
    torch.testing.assert_close(ours, captum.detach(), rtol=1e-5, atol=1e-7)


def test_xgrad_cam_guards_zero_activation_channels():
    model, x = conv_model(2), conv_input(2)
    with torch.no_grad():
        model.features[2].weight[0].zero_()
        model.features[2].bias[0] = -1.0  # channel 0 of the last ReLU is always 0
    out = LayerXGradCam(model, model.features[-1]).attribute(x, target=0)
    assert torch.isfinite(out).all()


def test_smooth_grad_cam_pp_moments_by_hand():
    """D1, D2, D3 averaged over the same noise draws, α on the clean activation."""
    model = _DeepHead().eval()
    x = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    n, sigma = 4, 0.3
    out = LayerSmoothGradCamPlusPlus(model, model.act).attribute(
        x, target=1, n_samples=n, stdevs=sigma, generator=torch.Generator().manual_seed(11)
    )
    noise = torch.randn((n,) + tuple(x.shape), generator=torch.Generator().manual_seed(11))
    grads = []
    for m in range(n):
        a = model.act(model.conv1(x + sigma * noise[m])).detach().requires_grad_(True)
        y = model.fc(F.max_pool2d(F.relu(model.conv2(a)), 2).flatten(1))[:, 1].sum()
        grads.append(torch.autograd.grad(y, a)[0])
    g = torch.stack(grads)
    d1, d2, d3 = g.mean(0), (g**2).mean(0), (g**3).mean(0)
    clean = model.act(model.conv1(x)).detach()
    s = clean.flatten(2).sum(-1)[..., None, None]
    den = 2 * d2 + s * d3
    alpha = torch.where((d1 > 0) & (den != 0), d2 / den, torch.zeros_like(den))
    w = (alpha * F.relu(d1)).flatten(2).sum(-1)
    expected = (w[..., None, None] * clean).sum(1, keepdim=True)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rank", RANKS)
def test_smooth_grad_cam_pp_equals_grad_cam_pp_on_gap_head(rank):
    """On GAP→FC the gradient is constant, so every noise draw gives the same moments."""
    model, x = conv_model(rank), conv_input(rank)
    layer = model.features[-1]
    plain = LayerGradCamPlusPlus(model, layer).attribute(x, target=2)
    smooth = LayerSmoothGradCamPlusPlus(model, layer).attribute(
        x, target=2, n_samples=3, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(smooth, plain, rtol=1e-4, atol=1e-6)


def test_smooth_grad_cam_pp_chunking_and_generator():
    model = _DeepHead().eval()
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    method = LayerSmoothGradCamPlusPlus(model, model.act)

    def run(**kwargs):
        return method.attribute(
            x, target=[0, 1, 2], n_samples=5, generator=torch.Generator().manual_seed(3), **kwargs
        )

    whole, chunked = run(), run(internal_batch_size=3)
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-7)
    different = method.attribute(
        x, target=[0, 1, 2], n_samples=5, generator=torch.Generator().manual_seed(4)
    )
    assert not torch.allclose(whole, different)


def test_stdev_spread_scales_with_input_range():
    model = _DeepHead().eval()
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    method = LayerSmoothGradCamPlusPlus(model, model.act)
    spread = (x.max() - x.min()).item() * 0.2
    a = method.attribute(x, target=0, n_samples=3, stdev_spread=0.2,
                         generator=torch.Generator().manual_seed(9))
    b = method.attribute(x, target=0, n_samples=3, stdevs=spread,
                         generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(a, b)


def test_fuse_layer_cams_max_of_tanh_rescaled_maps():
    small = torch.tensor([[[[0.0, 2.0], [1.0, -1.0]]]])
    large = torch.rand(1, 1, 4, 4)
    fused = fuse_layer_cams([small, large])
    assert fused.shape == (1, 1, 4, 4)
    up = F.interpolate(torch.tanh(2 * F.relu(small) / 2.0), size=(4, 4), mode="bilinear")
    expected = torch.maximum(up, torch.tanh(2 * large / large.max()))
    torch.testing.assert_close(fused, expected)


def test_cam_rejects_mismatched_classifier_and_missing_target():
    model, x = conv_model(2), conv_input(2)
    with pytest.raises(ValueError, match="classifier takes"):
        LayerClassActivationMap(model, model.features[1], model.fc).attribute(x, target=0)
    with pytest.raises(ValueError, match="class index"):
        LayerClassActivationMap(model, model.features[-1], model.fc).attribute(x)
    with pytest.raises(ValueError, match="1x1"):
        LayerClassActivationMap(model, model.features[-1], model.features[2])
