"""Each linear/conv rule against its defining LRP equation on a single layer (1D, 2D, 3D)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from captum_ext.rules import AbsZ, AlphaBeta, Composite, Epsilon, Gamma, ZPlus

def _layer(kind: str, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    if kind == "linear":
        return nn.Linear(5, 4, bias=bias).double()
    rank = int(kind[-2])
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
    return conv(2, 3, 2, stride=1, padding=1, bias=bias).double()


def _input(kind: str, positive: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (2, 5) if kind == "linear" else (2, 2) + (3,) * int(kind[-2])
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    return x.abs() if positive else x


def _dense(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer as a dense matrix W (out × in) and bias vector b on flattened features."""
    n_in = x[0].numel()
    basis = torch.eye(n_in, dtype=x.dtype).reshape((n_in,) + tuple(x.shape[1:]))
    with torch.no_grad():
        zero = layer(torch.zeros_like(x[:1])).reshape(-1)
        columns = layer(basis).reshape(n_in, -1) - zero
    return columns.T, zero


def _lrp(a, w, b, rule_parts, eps):
    """Hand-computed R_j = Σ_p κ_p Σ_k ρ(a)_j ρ(w)_jk / (z_pk + ε sign z_pk) R_k for one example."""

    def relevance(r_out):
        total = torch.zeros_like(a)
        for coef, combos, bias_fn in rule_parts:
            contrib = sum(fa(a)[None, :] * fw(w) for fa, fw in combos)  # (out, in)
            z = contrib.sum(1) + (bias_fn(b) if bias_fn else 0)
            z = z + eps * torch.where(z >= 0, 1.0, -1.0)
            total = total + coef * (contrib * (r_out / z)[:, None]).sum(0)
        return total

    return relevance


ident = lambda t: t  # noqa: E731
pos = lambda t: t.clamp(min=0)  # noqa: E731
neg = lambda t: t.clamp(max=0)  # noqa: E731

CASES = {
    "epsilon": (Epsilon(epsilon=0.01), [(1.0, [(ident, ident)], ident)], 0.01, False),
    "gamma": (
        Gamma(gamma=0.25, epsilon=1e-6),
        [(1.0, [(ident, lambda w: w + 0.25 * w.clamp(min=0))], lambda b: b + 0.25 * b.clamp(min=0))],
        1e-6,
        True,
    ),
    "zplus": (ZPlus(epsilon=1e-6), [(1.0, [(pos, pos), (neg, neg)], None)], 1e-6, False),
    "alpha2beta1": (
        AlphaBeta(2.0, 1.0, epsilon=1e-6),
        [(2.0, [(pos, pos), (neg, neg)], None), (-1.0, [(pos, neg), (neg, pos)], None)],
        1e-6,
        False,
    ),
    "absz": (AbsZ(), [(1.0, [(torch.abs, torch.abs)], None)], 0.0, False),
}


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d", "conv3d"])
@pytest.mark.parametrize("name", list(CASES))
def test_rule_matches_its_equation(kind: str, name: str) -> None:
    rule, parts, eps, positive = CASES[name]
    layer = _layer(kind)
    x = _input(kind, positive).requires_grad_(True)
    with Composite([(type(layer), rule)]).context(layer):
        y = layer(x)
        plain = layer(x.detach())
        assert torch.equal(y, plain), "the rule changed the forward value"
        c_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
        (grad,) = torch.autograd.grad(y, x, c_out)
    relevance_in = (x * grad).detach()
    w, b = _dense(layer, x.detach())
    for i in range(x.shape[0]):
        r_out = (y[i] * c_out[i]).reshape(-1).detach()
        expected = _lrp(x[i].detach().reshape(-1), w, b, parts, eps)(r_out)
        torch.testing.assert_close(relevance_in[i].reshape(-1), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["linear", "conv2d"])
@pytest.mark.parametrize("rule", [ZPlus(epsilon=1e-12), AbsZ(), Epsilon(1e-12)], ids=["zplus", "absz", "eps"])
def test_conservation_without_bias(kind: str, rule) -> None:
    """Σ R_in = Σ R_out for bias-free layers (exact for z⁺ and |z| wherever z > 0; ε → 0)."""
    layer = _layer(kind, bias=False)
    x = _input(kind, positive=True).requires_grad_(True)
    with Composite([(type(layer), rule)]).context(layer):
        y = layer(x)
        c_out = torch.rand(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
        c_out = c_out * (y > 0)  # units with y > 0 have a positive contribution, so z⁺ > 0
        (grad,) = torch.autograd.grad(y, x, c_out)
    r_in = (x * grad).flatten(1).sum(1)
    r_out = (y * c_out).flatten(1).sum(1)
    torch.testing.assert_close(r_in, r_out.detach(), rtol=1e-6, atol=1e-9)


def test_epsilon_differs_from_gradient_only_through_bias() -> None:
    """With no bias and ε = 0 the ε-rule is plain Gradient×Input (LRP-0 = G×I for linear maps)."""
    layer = _layer("conv2d", bias=False)
    x = _input("conv2d", positive=False).requires_grad_(True)
    (plain,) = torch.autograd.grad(layer(x).sum(), x)
    with Composite([(nn.Conv2d, Epsilon(0.0))]).context(layer):
        (ruled,) = torch.autograd.grad(layer(x).sum(), x)
    torch.testing.assert_close(ruled, plain)


def test_rule_refuses_wrong_layer_type() -> None:
    with pytest.raises(TypeError, match="nn.Linear and convolution"):
        with Composite([(nn.ReLU, Epsilon())]).context(nn.Sequential(nn.ReLU())):
            pass


def test_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(2.0, 2.0)
    with pytest.raises(ValueError, match="epsilon"):
        Epsilon(-1.0)
    with pytest.raises(ValueError, match="gamma"):
        Gamma(-0.5)
