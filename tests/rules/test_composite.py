"""Composites, canonizers and the restoring context manager."""

from __future__ import annotations

import pytest
import torch
from captum.attr import InputXGradient, LayerGradientXActivation
from torch import nn

from captum_ext.rules import (
    Composite,
    ConstantAttention,
    Epsilon,
    IdentityRule,
    MergeBatchNorm,
    ZPlus,
    epsilon_gamma,
    epsilon_plus,
    find_batchnorm_pairs,
    transformer_rules,
)
from tests._helpers import conv_input, conv_model, hook_count, snapshot, assert_unchanged


def _bn_net(rank: int = 2) -> nn.Sequential:
    torch.manual_seed(0)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[rank]
    pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[rank]
    net = nn.Sequential(
        conv(3, 4, 3, padding=1, bias=False), bn(4), nn.ReLU(),
        conv(4, 5, 3, padding=1), bn(5), nn.ReLU(),
        pool(1), nn.Flatten(), nn.Linear(5, 3),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(-1.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_merge_batchnorm_preserves_the_output_and_restores_bit_for_bit(rank) -> None:
    net = _bn_net(rank)
    x = conv_input(rank, batch=2)
    before = snapshot(net, (x,))
    names_before = [n for n, _ in net.named_parameters()]
    expected = net(x)
    with Composite([], canonizers=[MergeBatchNorm()]).context(net):
        assert net[0].bias is not None  # added for the fold
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
    assert net[0].bias is None
    assert [n for n, _ in net.named_parameters()] == names_before
    assert_unchanged(net, (x,), before)


def test_zplus_after_merge_uses_the_folded_weights() -> None:
    net = _bn_net()
    conv, bn = net[0], net[1]
    x = conv_input(2, batch=1).abs().requires_grad_(True)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale[:, None, None, None])
        folded.bias.copy_(bn.bias - bn.running_mean * scale)
    c = torch.rand(1, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    with Composite([(nn.Conv2d, ZPlus())], canonizers=[MergeBatchNorm([(conv, bn)])]).context(net):
        (g_merged,) = torch.autograd.grad(bn(conv(x)), x, c)
    with Composite([(nn.Conv2d, ZPlus())]).context(folded):
        (g_folded,) = torch.autograd.grad(folded(x), x, c)
    torch.testing.assert_close(g_merged, g_folded, rtol=1e-4, atol=1e-6)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)) + x)


def test_find_batchnorm_pairs_traces_non_sequential_models() -> None:
    model = Residual().eval()
    pairs = find_batchnorm_pairs(model, torch.randn(1, 3, 4, 4))
    assert pairs == [(model.conv, model.bn)]
    assert hook_count(model) == 0


def test_context_restores_after_an_exception_inside_the_block() -> None:
    net = _bn_net()
    x = conv_input(2, batch=2)
    net[0].weight.grad = torch.ones_like(net[0].weight)
    before = snapshot(net, (x,))
    forward_before = {n: m.forward for n, m in net.named_modules()}
    composite = epsilon_gamma()
    composite.entries.append((nn.Sequential, ConstantAttention()))  # a functional rule too
    with pytest.raises(RuntimeError, match="boom"):
        with composite.context(net):
            assert hook_count(net) > 0 and "forward" in vars(net)
            xg = x.clone().requires_grad_(True)
            torch.autograd.grad(net(xg).sum(), xg)
            raise RuntimeError("boom")
    for n, m in net.named_modules():
        assert "forward" not in vars(m), f"{n}.forward still wrapped"
        assert m.forward == forward_before[n]
    assert_unchanged(net, (x,), before)


def test_context_restores_when_a_rule_fails_to_attach() -> None:
    net = _bn_net()
    before = snapshot(net, ())
    bad = Composite([(nn.Linear, Epsilon()), (nn.ReLU, ZPlus())], canonizers=[MergeBatchNorm()])
    with pytest.raises(TypeError, match="nn.Linear and convolution"):
        with bad.context(net):
            pass
    assert_unchanged(net, (), before)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_epsilon_plus_conserves_the_logit_on_a_bias_free_relu_net(rank) -> None:
    model = conv_model(rank, bias=False)
    x = conv_input(rank, batch=3).abs()
    with epsilon_plus(epsilon=1e-12, stabilizer=1e-12).context(model):
        attribution = InputXGradient(model).attribute(x, target=1)
        logits = model(x).detach()
    torch.testing.assert_close(attribution.flatten(1).sum(1), logits[:, 1], rtol=1e-4, atol=1e-5)
    assert hook_count(model) == 0


def test_rules_compose_with_captum_layer_methods_and_batches_are_stacked_singles() -> None:
    model = conv_model(2)
    x = conv_input(2, batch=3)
    layer = model.features[1]
    with epsilon_plus().context(model):
        batch = LayerGradientXActivation(model, layer).attribute(x, target=2)
        singles = torch.cat([LayerGradientXActivation(model, layer).attribute(x[i : i + 1], target=2) for i in range(3)])
    torch.testing.assert_close(batch, singles)
    # the ε-rule on the head: the relevance at the last ReLU sums to the logit minus what the bias absorbs
    logits = model(x).detach()
    z = logits[:, 2]
    expected = z * (z - model.fc.bias[2].detach()) / (z + 1e-6 * torch.sign(z))
    torch.testing.assert_close(batch.flatten(1).sum(1), expected, rtol=1e-4, atol=1e-5)


def test_composite_matching_by_name_predicate_and_first_match() -> None:
    net = _bn_net()
    composite = Composite(
        [("0", ZPlus()), (lambda name, m: name == "3", IdentityRule()), (nn.Conv2d, Epsilon())]
    )
    got = {name: type(rule).__name__ for name, _, rule in composite.assignments(net)}
    assert got == {"0": "ZPlus", "3": "IdentityRule"}  # first match wins over nn.Conv2d
    with pytest.raises(TypeError, match="matcher"):
        Composite([(3, ZPlus())]).assignments(net)
    with pytest.raises(TypeError, match="must be a Rule"):
        Composite([(nn.Conv2d, "eps")])


def test_transformer_rules_assign_norm_and_activation_rules() -> None:
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True)
    names = {name: type(rule).__name__ for name, _, rule in transformer_rules().assignments(layer)}
    assert names == {"norm1": "NormRule", "norm2": "NormRule"}  # GELU is functional here
    with pytest.raises(ValueError, match="attention modules"):
        transformer_rules(constant_attention=True)
    composite = transformer_rules(attention=[layer.self_attn], constant_attention=True, uniform_attention=True)
    assert composite.rule_for("self_attn", layer.self_attn) is not None
