"""AttributionGuidedFactorization: hand-computed LRP oracle, conservation, the factorisation,
a small ResNet-style model, no trace, errors, and EfficientNet-Lite0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_ext.attr import AttributionGuidedFactorization
from captum_ext.attr._agf_rules import factorize
from captum_ext.attr.agf import reweighted_score
from tests._helpers import assert_unchanged, conv_input, conv_model, hook_count, snapshot

OFF = dict(use_a=False, use_fx=False, use_fdx=False, use_m=False)


def _seed(logits: torch.Tensor, t: int) -> torch.Tensor:
    """ỹ_t written out for one example (the official Linear.AGF initial step)."""
    y_t = logits[t]
    sigma = max((logits - y_t).abs().max(), torch.tensor(1e-30))
    return torch.softmax(y_t * torch.exp(-0.5 * ((logits - y_t) / sigma) ** 2), 0)[t]


def test_reweighted_score_matches_the_formula() -> None:
    logits = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    got = reweighted_score(logits, torch.tensor([0, 4, 2]))
    torch.testing.assert_close(got, torch.stack([_seed(logits[i], t) for i, t in enumerate([0, 4, 2])]))


def _dense(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    n_in = x.numel()
    basis = torch.eye(n_in, dtype=x.dtype).reshape((n_in,) + tuple(x.shape))
    with torch.no_grad():
        return (layer(basis) - layer(torch.zeros_like(x)[None])).reshape(n_in, -1).T


def test_with_residual_terms_off_agf_is_the_abs_z_lrp_with_zbox_input_layer() -> None:
    """Hand-computed LRP, layer by layer with dense matrices, on conv-ReLU-conv-ReLU-GAP-FC (1D)."""
    torch.manual_seed(0)
    model = conv_model(1, channels=(3, 4)).double()
    x = conv_input(1, batch=1).double()[0]
    conv1, conv2 = model.features[0], model.features[2]
    with torch.no_grad():
        y1 = conv1(x[None])[0]; a1 = y1.clamp(min=0)
        y2 = conv2(a1[None])[0]; a2 = y2.clamp(min=0)
        pooled = a2.mean(-1)
    target = 3
    feats = pooled.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_seed(model.fc(feats), target), feats)
    r_pool = (pooled * grad).detach()
    r_a2 = a2 / a2.shape[-1] / torch.where(pooled > 0, pooled, 1.0)[:, None] * r_pool[:, None]
    w2 = _dense(conv2, a1).abs()
    z2 = w2 @ a1.reshape(-1).abs()
    r_a1 = a1.reshape(-1).abs() * (w2.T @ torch.where(z2 > 0, r_a2.reshape(-1) / z2, 0.0))
    w1 = _dense(conv1, x)
    low, high = x.min(), x.max()
    xf = x.reshape(-1)
    contrib = w1 * xf[None] - low * w1.clamp(min=0) - high * w1.clamp(max=0)
    expected = (contrib * (r_a1 / contrib.sum(1))[:, None]).sum(0).reshape(x.shape)
    got = AttributionGuidedFactorization(model, **OFF).attribute(x[None], target=target)[0]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_relevance_is_conserved_after_the_shift(rank) -> None:
    """With every residual term on, Σ R_input = Σ X_fc ⊙ ∂ỹ_t/∂X_fc (bias-free ReLU nets)."""
    model = conv_model(rank, bias=False, channels=(5, 6)).double()
    x = conv_input(rank, batch=2).double()
    got = AttributionGuidedFactorization(model).attribute(x, target=[1, 4])
    feats = model.pool(model.features(x)).flatten(1).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(reweighted_score(model.fc(feats), torch.tensor([1, 4])).sum(), feats)
    torch.testing.assert_close(got.flatten(1).sum(1), (feats * grad).sum(1).detach())
    plain = AttributionGuidedFactorization(model, **OFF).attribute(x, target=[1, 4])
    assert not torch.allclose(got, plain)  # the residual terms did change the map


def test_factorization_solves_the_two_coefficient_ridge_problem() -> None:
    g = torch.Generator().manual_seed(0)
    x, grad = torch.rand(1, 3, 2, 2, generator=g).double(), torch.randn(1, 3, 2, 2, generator=g).double()
    phi = torch.tensor([[[[1.0, -1.0], [0.5, 0.0]]]], dtype=torch.float64)
    f_x, f_dx = factorize(x, grad, phi)
    for t, f in ((x, f_x), (grad, f_dx)):
        h = torch.sigmoid(10 * t / t.max())[0].reshape(3, 4)
        fg, bg = torch.tensor([1.0, 0, 1, 0]).double(), torch.tensor([0.0, 1, 0, 0]).double()
        reps = torch.stack([(h * bg).sum(1) / bg.sum(), (h * fg).sum(1) / fg.sum()], 1)  # (K, 2)
        for p in range(4):
            w = torch.linalg.inv(reps.T @ reps + torch.eye(2, dtype=torch.float64)) @ reps.T @ h[:, p]
            w = w.clamp(min=0)
            expected = (w[1] - w[0]).clamp(min=0)
            torch.testing.assert_close(f[0, :, p // 2, p % 2], expected.expand(3))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, inplace_add: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.inplace_add = inplace_add

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.down is None else self.down(x)
        if self.inplace_add:
            out += identity  # torchvision style: invisible to module hooks, fine in this form
        else:
            out = out + identity
        return self.relu2(out)


class TinyResNet(nn.Module):
    def __init__(self, inplace_add: bool = False, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.layer1, self.layer2 = Block(8, 8, 1, inplace_add), Block(8, 12, 2, inplace_add)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(12, classes)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
        self.eval()

    def forward(self, x):
        return self.fc(self.pool(self.layer2(self.layer1(self.stem(x)))).flatten(1))


def _image(batch: int = 2):
    return torch.randn(batch, 3, 12, 12, generator=torch.Generator().manual_seed(5))


def test_small_resnet_per_class_maps_batches_and_residual_rules() -> None:
    model, x = TinyResNet().double(), _image(3).double()
    agf = AttributionGuidedFactorization(model)
    maps = {t: agf.attribute(x, target=t) for t in (0, 2)}
    assert maps[0].shape == x.shape and torch.isfinite(maps[0]).all()
    assert not torch.allclose(maps[0], maps[2])  # class-specific
    singles = torch.cat([agf.attribute(x[i : i + 1], target=[2]) for i in range(3)])
    torch.testing.assert_close(maps[2], singles)
    with torch.no_grad():  # outer no_grad is fine
        torch.testing.assert_close(agf.attribute(x, target=2), maps[2])
    inplace = AttributionGuidedFactorization(TinyResNet(inplace_add=True).double()).attribute(x, target=2)
    torch.testing.assert_close(inplace, maps[2])  # `out += identity` is handled like `out + identity`
    absolute = AttributionGuidedFactorization(model, residual_rule="abs").attribute(x, target=2)
    assert torch.isfinite(absolute).all() and not torch.allclose(absolute, maps[2])
    inplace_abs = AttributionGuidedFactorization(TinyResNet(inplace_add=True).double(), residual_rule="abs")
    torch.testing.assert_close(inplace_abs.attribute(x, target=2), absolute)
    heat = AttributionGuidedFactorization.heatmap(maps[2])
    assert heat.shape == (3, 1, 12, 12)
    assert torch.allclose(heat, (maps[2] / maps[2].flatten(1).amax(1)[:, None, None, None]).sum(1, keepdim=True))
    explicit = AttributionGuidedFactorization(model, factorized_layers=[model.layer1.conv1, model.layer2.conv1])
    assert not torch.allclose(explicit.attribute(x, target=2), maps[2])


class Boom(nn.Identity):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom")
        return x


def test_no_trace_including_after_an_exception() -> None:
    model, x = TinyResNet(), _image()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before = snapshot(model, (x,))
    AttributionGuidedFactorization(model).attribute(x, target=1)
    assert_unchanged(model, (x,), before)
    boom = Boom()
    wrapped = nn.Sequential(boom, model)
    before = snapshot(wrapped, (x,))
    with pytest.raises(RuntimeError, match="boom"):  # fails in the second (rule) pass
        AttributionGuidedFactorization(wrapped).attribute(x, target=1)
    assert_unchanged(wrapped, (x,), before)
    assert all("forward" not in vars(m) for m in wrapped.modules())


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        h = self.conv(x)
        return self.fc((h * torch.sigmoid(h)).mean((2, 3)))


def test_clear_errors_for_unsupported_layers_and_bad_calls() -> None:
    x = _image()
    silu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"SiLU \(1\)"):
        AttributionGuidedFactorization(silu).attribute(x, target=0)
    with pytest.raises(TypeError, match="sigmoid"):
        AttributionGuidedFactorization(Gated()).attribute(x, target=0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 2))
    with pytest.raises(TypeError, match="reads the input"):
        AttributionGuidedFactorization(mlp).attribute(x, target=0)
    agf = AttributionGuidedFactorization(TinyResNet())
    with pytest.raises(ValueError, match="target"):
        agf.attribute(x)
    with pytest.raises(ValueError, match="out of range"):
        agf.attribute(x, target=9)
    with pytest.raises(ValueError, match="single input"):
        agf.attribute((x, x), target=0)
    with pytest.raises(TypeError, match="nn.Module"):
        AttributionGuidedFactorization(lambda t: t)
    with pytest.raises(ValueError, match="residual_rule"):
        AttributionGuidedFactorization(TinyResNet(), residual_rule="z")
    for model in (silu, mlp):
        assert hook_count(model) == 0


@pytest.mark.real_model
def test_efficientnet_lite0_is_supported_and_maps_are_class_specific() -> None:
    from captum_ext.datasets import load_photo
    from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet

    model = load_efficientnet_lite0()
    x = F.interpolate(preprocess_imagenet(load_photo("chelsea")), size=(112, 112), mode="bilinear")
    agf = AttributionGuidedFactorization(model)
    cat, tiger = agf.attribute(x, target=285), agf.attribute(x, target=282)
    assert torch.isfinite(cat).all() and cat.shape == x.shape
    corr = torch.corrcoef(torch.stack([cat.sum(1).flatten(), tiger.sum(1).flatten()]))[0, 1]
    assert corr < 0.9, corr
    assert hook_count(model) == 0
