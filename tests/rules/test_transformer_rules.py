"""Identity, LN, product (uniform/half), constant-attention and softmax rules against their equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_ext.rules import (
    Composite,
    ConstantAttention,
    HalfRule,
    IdentityRule,
    NormRule,
    ProductRule,
    explicit_attention,
)


def _grad_x_input(module, x, c_out):
    x = x.clone().requires_grad_(True)
    y = module(x)
    (g,) = torch.autograd.grad(y, x, c_out)
    return y.detach(), (x * g).detach()


@pytest.mark.parametrize("act", [nn.GELU(), nn.SiLU(), nn.ReLU6(), nn.Tanh()], ids=str)
def test_identity_rule_passes_relevance_unchanged(act) -> None:
    x = torch.linspace(-8, 8, 41).reshape(1, 41).double()
    x[0, 20] = 0.0  # f(0) = 0: relevance 0 in and out
    c = torch.randn(1, 41, generator=torch.Generator().manual_seed(0)).double()
    with Composite([(type(act), IdentityRule(epsilon=1e-12))]).context(act):
        y, r_in = _grad_x_input(act, x, c)
    torch.testing.assert_close(y, act(x))
    torch.testing.assert_close(r_in, y * c)  # R_in = R_out element-wise


def test_identity_rule_on_batchnorm_and_refuses_non_elementwise() -> None:
    bn = nn.BatchNorm2d(3).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.bias.uniform_(-1, 1), bn.weight.uniform_(0.5, 2)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    c = torch.randn_like(x)
    with Composite([(nn.BatchNorm2d, IdentityRule(epsilon=1e-12))]).context(bn):
        y, r_in = _grad_x_input(bn, x, c)
    torch.testing.assert_close(r_in, y * c)
    pool = nn.AdaptiveAvgPool1d(1)
    with Composite([(nn.AdaptiveAvgPool1d, IdentityRule())]).context(pool):
        with pytest.raises(TypeError, match="element-wise"):
            _grad_x_input(pool, torch.randn(1, 2, 5), torch.ones(1, 2, 1))


def test_layernorm_rule_is_the_linear_map_with_constant_std() -> None:
    torch.manual_seed(0)
    ln = nn.LayerNorm(6).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2), ln.bias.zero_()
    x = torch.randn(3, 6, dtype=torch.float64) * 3 + 1
    c = torch.randn(3, 6, dtype=torch.float64)
    with Composite([(nn.LayerNorm, NormRule())]).context(ln):
        y, r_in = _grad_x_input(ln, x, c)
    torch.testing.assert_close(y, ln(x).detach())
    std = torch.sqrt(x.var(1, unbiased=False, keepdim=True) + ln.eps)
    centre = torch.eye(6, dtype=x.dtype) - 1.0 / 6  # J = diag(γ/σ) (I − 1/n), σ constant
    for i in range(3):
        jac = (ln.weight.detach() / std[i])[:, None] * centre
        torch.testing.assert_close(r_in[i], x[i] * (jac.T @ c[i]))
    # bias-free: the LN-rule conserves relevance exactly (the centring's relevance sums to 0).
    torch.testing.assert_close(r_in.sum(1), (y * c).sum(1))


@pytest.mark.parametrize("norm", ["group", "batch_train", "rms"])
def test_norm_rule_other_norms_keep_value_and_detach_statistics(norm) -> None:
    torch.manual_seed(0)
    if norm == "rms":
        if not hasattr(nn, "RMSNorm"):
            pytest.skip("torch without nn.RMSNorm")
        module = nn.RMSNorm(4).double()
        x = torch.randn(2, 3, 4, dtype=torch.float64)
    elif norm == "group":
        module = nn.GroupNorm(2, 4).double()
        x = torch.randn(2, 4, 3, dtype=torch.float64)
    else:
        module = nn.BatchNorm1d(4).double().train()
        x = torch.randn(5, 4, 3, dtype=torch.float64)
    c = torch.randn_like(x)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    with Composite([(type(module), NormRule())]).context(module):
        y, r_in = _grad_x_input(module, x, c)
    module.load_state_dict(state)  # BatchNorm in training mode updated its running stats
    torch.testing.assert_close(y, module(x).detach())
    # With the statistics constant the rule is linear in x: R_in(2x, same stats) is 2 R_in.
    assert torch.isfinite(r_in).all()
    if norm in ("group", "rms"):  # bias-free (group: zero the bias) → conservation
        if norm == "group":
            with torch.no_grad():
                module.bias.zero_()
            with Composite([(type(module), NormRule())]).context(module):
                y, r_in = _grad_x_input(module, x, c)
        torch.testing.assert_close(r_in.flatten(1).sum(1), (y * c).flatten(1).sum(1))


class Gate(nn.Module):
    def forward(self, gate, up):
        return F.silu(gate) * up


def test_half_rule_splits_a_gate_product_equally() -> None:
    gate_in = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    up = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    module = Gate()
    c = torch.randn(2, 5, dtype=torch.float64)
    with Composite([(Gate, HalfRule())]).context(module):
        y = module(gate_in, up)
        g_gate, g_up = torch.autograd.grad(y, (gate_in, up), c)
    torch.testing.assert_close(y, module(gate_in, up))
    act = F.silu(gate_in).detach()
    # R_up = up · ∂y/∂up · c = ½ y c; the gate branch gets ½ y c at silu's output.
    torch.testing.assert_close(up.detach() * g_up, 0.5 * y.detach() * c)
    torch.testing.assert_close(g_gate, 0.5 * torch.autograd.grad(F.silu(gate_in), gate_in, up.detach() * c)[0])
    assert act.shape == y.shape


class ToyAttention(nn.Module):
    """A bias-free single-head attention block: out = softmax(q kᵀ/√d) V (spec §2.2)."""

    def __init__(self, dim: int = 4, sdpa: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False).double() for _ in range(3))
        self.sdpa = sdpa

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.sdpa:
            return F.scaled_dot_product_attention(q, k, v)
        pattern = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
        return torch.matmul(pattern, v)


@pytest.mark.parametrize("sdpa", [False, True], ids=["explicit", "sdpa"])
def test_constant_attention_conserves_exactly_on_a_bias_free_block(sdpa) -> None:
    block = ToyAttention(sdpa=sdpa)
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    c = torch.ones(1, 5, 4, dtype=torch.float64)
    with Composite([(ToyAttention, ConstantAttention())]).context(block):
        y, r_in = _grad_x_input(block, x, c)
    torch.testing.assert_close(y, block(x).detach())
    torch.testing.assert_close(r_in.sum(), (y * c).sum())  # CP-LRP: exact on bias-free blocks
    y_plain, r_plain = _grad_x_input(block, x, c)
    assert not torch.allclose(r_plain.sum(), (y_plain * c).sum())  # plain G×I does not conserve


@pytest.mark.parametrize("sdpa", [False, True], ids=["explicit", "sdpa"])
def test_uniform_products_in_attention_give_q_k_a_quarter_and_v_a_half(sdpa) -> None:
    block = ToyAttention(sdpa=sdpa)
    x = torch.randn(1, 5, 4, dtype=torch.float64)
    q, k, v = (t.detach().requires_grad_(True) for t in (block.q(x), block.k(x), block.v(x)))
    c = torch.randn(1, 5, 4, dtype=torch.float64)

    class Inner(nn.Module):
        def forward(self, q, k, v):
            if sdpa:
                return F.scaled_dot_product_attention(q, k, v)
            return torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1) @ v

    inner = Inner()
    plain = torch.autograd.grad(inner(q, k, v), (q, k, v), c)
    with Composite([(Inner, ProductRule())]).context(inner):
        ruled = torch.autograd.grad(inner(q, k, v), (q, k, v), c)
    for share, g_rule, g_plain in zip((0.25, 0.25, 0.5), ruled, plain):
        torch.testing.assert_close(g_rule, share * g_plain)


def test_softmax_rule_of_attnlrp_is_the_plain_gradient() -> None:
    """AttnLRP's softmax rule R_in = x ⊙ (R_out − s ΣR_out) equals x ⊙ (plain VJP of c), R_out = s⊙c."""
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 6, dtype=torch.float64)
    s = torch.softmax(x, -1)
    (g,) = torch.autograd.grad(s, x, c)
    r_out = (s * c).detach()
    torch.testing.assert_close(x * g, x * (r_out - s * r_out.sum(-1, keepdim=True)))


def test_explicit_attention_matches_sdpa_with_masks() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 5, 5, generator=g) > 0.3
    mask[..., 0] = True
    for kwargs in ({}, {"is_causal": True}, {"attn_mask": mask}, {"attn_mask": mask.float() - 1, "scale": 0.3}):
        torch.testing.assert_close(
            explicit_attention(q, k, v, **kwargs), F.scaled_dot_product_attention(q, k, v, **kwargs)
        )


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(4, 4).double()

    def forward(self, x):
        out = self.f(x)
        out += x  # in-place, as torchvision's residual blocks
        return out


def test_absolute_sum_splits_a_residual_addition_by_magnitude() -> None:
    from captum_ext.rules import AbsoluteSum

    torch.manual_seed(0)
    block = Residual()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(3, 4, dtype=torch.float64)
    branch = block.f(x).detach()
    with Composite([(Residual, AbsoluteSum())]).context(block):
        y = block(x)
        (g,) = torch.autograd.grad(y, x, c)
    torch.testing.assert_close(y, block(x))
    r_out = (y * c).detach()
    share_x = x.detach().abs() / (x.detach().abs() + branch.abs())
    share_f = 1 - share_x
    # R_x = direct share + what the branch's share sends back through the plain linear layer
    (g_branch,) = torch.autograd.grad(block.f(x), x, share_f * r_out / branch)
    torch.testing.assert_close(x.detach() * g, share_x * r_out + x.detach() * g_branch)
