"""LearnedPropagation: oracles (plain gradient, guided backprop), contract, fit, save/load,
no trace, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, NoiseTunnel
from torch import nn

from captum_ext.attr import LearnedPropagation
from captum_ext.attr import PropagationRuleNet
from tests._helpers import (
    FailingModule,
    armed,
    assert_unchanged,
    conv_input,
    conv_model,
    hook_count,
    snapshot,
)

RANKS = [1, 2, 3]
SIGMOID_4 = torch.sigmoid(torch.tensor(4.0)).item()


def _plain_gradient(model, x, target):
    leaf = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(leaf)[torch.arange(x.shape[0]), target].sum(), leaf)
    return g


@pytest.mark.parametrize("rank", RANKS)
def test_untrained_rule_is_the_scaled_plain_gradient(rank):
    """Every path crosses both ReLUs, each scaling by σ(4) (zero-initialised output layer)."""
    model, x = conv_model(rank), conv_input(rank)
    target = torch.tensor([0, 3, 1])
    out = LearnedPropagation(model).attribute(x, target=target)
    assert out.shape == x.shape and not out.requires_grad
    torch.testing.assert_close(out, SIGMOID_4**2 * _plain_gradient(model, x, target))
    for n in range(3):  # batch = stack of single examples
        single = LearnedPropagation(model).attribute(x[n : n + 1], target=int(target[n]))
        torch.testing.assert_close(single, out[n : n + 1], rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("rank", RANKS)
def test_sign_rule_reproduces_captum_guided_backprop(rank):
    """c = f'(a)·σ(−30 + 60·1[g > 0]) ≈ f'(a)·1[g > 0], which is guided backpropagation."""
    model, x = conv_model(rank), conv_input(rank)
    rule = PropagationRuleNet()
    with torch.no_grad():
        rule.outer.bias.fill_(-30.0)
        rule.element_weights.copy_(torch.tensor([0.0, 0.0, 60.0]))
    ours = LearnedPropagation(model, rule=rule).attribute(x, target=2)
    guided = GuidedBackprop(model).attribute(x, target=2)
    torch.testing.assert_close(ours, guided, rtol=1e-5, atol=1e-6)


def test_inplace_and_shared_activation_modules():
    torch.manual_seed(0)
    shared = nn.ReLU6()
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1), shared, nn.Conv2d(4, 4, 3, padding=1), shared,
        nn.Flatten(), nn.Linear(4 * 25, 3),
    ).eval()
    x = conv_input(2) * 3
    method = LearnedPropagation(model)
    assert len(method.layers) == 2  # the shared module is hooked once and rewritten per call
    expected = SIGMOID_4**3 * _plain_gradient(model, x, torch.tensor([1, 1, 1]))
    torch.testing.assert_close(method.attribute(x, target=1), expected)


def test_tuples_no_grad_create_graph_and_noise_tunnel():
    model, x = conv_model(2), conv_input(2)

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, a, b):
            return self.inner(a + 2 * b)

    two = TwoInputs().eval()
    method = LearnedPropagation(two)
    a, b = method.attribute((x, x * 0.5), target=1)
    torch.testing.assert_close(b, 2 * a)
    alone = method.attribute(x, target=1, additional_forward_args=(x * 0.5,))
    assert isinstance(alone, torch.Tensor)
    torch.testing.assert_close(alone, a)
    with torch.no_grad():
        detached = LearnedPropagation(model).attribute(x, target=0)
    assert not detached.requires_grad
    graph = LearnedPropagation(model).attribute(x, target=0, grad_kwargs={"create_graph": True})
    assert graph.requires_grad
    torch.testing.assert_close(graph.detach(), detached)
    smoothed = NoiseTunnel(LearnedPropagation(model)).attribute(
        x, nt_samples=2, stdevs=0.1, target=0
    )
    assert smoothed.shape == x.shape
    assert LearnedPropagation(model).multiplies_by_inputs is False
    with pytest.raises(NotImplementedError):
        LearnedPropagation(model).attribute_future(x)


def _batches(x, n=3):
    return [(x[i : i + 2], torch.zeros(2, dtype=torch.long)) for i in range(0, n * 2, 2)]


def test_fit_trains_only_the_rule_and_leaves_no_trace():
    model = conv_model(2)
    model.train()  # fit must evaluate in eval mode and restore this
    x = conv_input(2, batch=6)
    before = snapshot(model, (x,))
    method = LearnedPropagation(model)
    initial = {k: v.clone() for k, v in method.rule.state_dict().items()}
    history = method.fit(_batches(x), epochs=2, lr=0.05)
    assert len(history) == 6 and all(torch.isfinite(torch.tensor(history)))
    assert_unchanged(model, (x,), before)
    assert model.training
    changed = [k for k, v in method.rule.state_dict().items() if not torch.equal(v, initial[k])]
    assert "outer.weight" in changed and "element_weights" in changed
    assert len(method.fit(_batches(x), epochs=5, max_steps=4, target="label")) == 4
    assert_unchanged(model, (x,), before)


def test_fit_runs_the_model_in_eval_mode():
    model = conv_model(2)
    model.train()
    seen = []
    handle = model.features[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        LearnedPropagation(model).fit([conv_input(2, batch=2)], max_steps=1)
    finally:
        handle.remove()
    assert seen and not any(seen)
    assert model.training


def test_save_and_load_round_trip(tmp_path):
    model, x = conv_model(2), conv_input(2)
    trained = LearnedPropagation(model, hidden=5)
    trained.fit(_batches(conv_input(2, batch=6)), lr=0.1)
    path = tmp_path / "rule.pt"
    trained.save(path)
    raw = torch.load(path, weights_only=True)  # plain tensors and values only
    assert raw["config"]["hidden"] == 5
    loaded = LearnedPropagation(model).load(path)
    assert loaded.rule.hidden == 5
    torch.testing.assert_close(loaded.attribute(x, target=1), trained.attribute(x, target=1))
    fresh = LearnedPropagation(model).attribute(x, target=1)
    assert not torch.allclose(fresh, trained.attribute(x, target=1))
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a LearnedPropagation"):
        LearnedPropagation(model).load(tmp_path / "other.pt")


def test_no_trace_after_attribute_and_after_an_exception():
    model, x = conv_model(2), conv_input(2)
    failing = FailingModule()
    wrapped = nn.Sequential(model.features, failing, model.pool, nn.Flatten(), model.fc).eval()
    before = snapshot(wrapped, (x,))
    LearnedPropagation(wrapped).attribute(x, target=0)
    assert_unchanged(wrapped, (x,), before)
    with armed(failing), pytest.raises(RuntimeError, match="boom"):
        LearnedPropagation(wrapped).attribute(x, target=0)
    assert hook_count(wrapped) == 0
    x.requires_grad_(True)
    LearnedPropagation(wrapped).attribute(x, target=0)
    assert x.requires_grad and x.grad is None


def test_clear_errors():
    model, x = conv_model(2), conv_input(2)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, t):
            return F.relu(self.conv(t)).flatten(1)

    with pytest.raises(ValueError, match="no activation module"):
        LearnedPropagation(Functional())
    with pytest.raises(TypeError, match="not a supported activation"):
        LearnedPropagation(model, layers=[nn.GELU()])
    with pytest.raises(TypeError, match="layers"):
        LearnedPropagation(lambda t: model(t))
    with pytest.raises(ValueError, match="did not|none of the hooked"):
        LearnedPropagation(model, layers=[nn.ReLU()]).attribute(x, target=0)
    with pytest.raises(ValueError, match="out of range"):
        LearnedPropagation(model).attribute(x, target=7)
    with pytest.raises(ValueError, match="target"):
        LearnedPropagation(model).fit([x], target="truth")
    with pytest.raises(ValueError, match="labels"):
        LearnedPropagation(model).fit([x], target="label")
