"""Oracle tests for Ablation-CAM: the GAP→FC closed form and Captum's LayerFeatureAblation."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerFeatureAblation
from torch import nn

from captum_ext.attr import LayerAblationCam
from tests._helpers import (
    FailingModule,
    assert_unchanged,
    conv_input,
    conv_model,
    hook_count,
    snapshot,
)

RANKS = [1, 2, 3]


@pytest.mark.parametrize("rank", RANKS)
def test_gap_head_closed_form(rank):
    """On A → GAP → Linear, zeroing channel k lowers y^c by W[c,k]·mean(A^k), so
    w_k = W[c,k]·mean(A^k) / y^c."""
    model, x = conv_model(rank), conv_input(rank)
    target = torch.tensor([3, 0, 1])
    out = LayerAblationCam(model, model.features[-1]).attribute(x, target=target, batch_size=5)
    with torch.no_grad():
        activation = model.features(x)
        logits = model(x)[torch.arange(3), target]
    weights = model.fc.weight[target] * activation.flatten(2).mean(2) / logits[:, None]
    expected = (weights.reshape(weights.shape + (1,) * rank) * activation).sum(1, keepdim=True)
    assert out.shape == (3, 1) + (5,) * rank
    torch.testing.assert_close(out, expected.detach(), rtol=1e-4, atol=1e-5)
    raw = LayerAblationCam(model, model.features[-1]).attribute(
        x, target=target, normalize_by_score=False
    )
    torch.testing.assert_close(raw, expected.detach() * logits.reshape((3,) + (1,) * (rank + 1)),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rank", RANKS)
def test_drops_equal_captum_layer_feature_ablation_on_a_nonlinear_tail(rank):
    """Ablating the first ReLU (a conv and a ReLU follow) against Captum's per-channel groups."""
    model, x = conv_model(rank), conv_input(rank)
    layer, target = model.features[1], [1, 4, 2]
    raw = LayerAblationCam(model, layer).attribute(
        x, target=target, normalize_by_score=False, batch_size=4
    )
    groups = torch.arange(6).reshape((1, 6) + (1,) * rank)
    per_channel = LayerFeatureAblation(model, layer).attribute(
        x, target=target, layer_mask=groups, layer_baselines=0.0
    )
    drops = per_channel.flatten(2)[:, :, 0]  # every position of a group holds the group's drop
    with torch.no_grad():
        activation = model.features[:2](x)
    expected = (drops.reshape(drops.shape + (1,) * rank) * activation).sum(1, keepdim=True)
    torch.testing.assert_close(raw, expected, rtol=1e-4, atol=1e-5)


def test_negative_scores_flip_and_tiny_scores_are_clamped():
    model, x = conv_model(2), conv_input(2)
    with torch.no_grad():
        model.fc.bias.fill_(-50.0)  # every logit negative
    layer = model.features[-1]
    normalised = LayerAblationCam(model, layer).attribute(x, target=0)
    raw = LayerAblationCam(model, layer).attribute(x, target=0, normalize_by_score=False)
    with torch.no_grad():
        logits = model(x)[:, 0]
    assert (logits < 0).all()
    torch.testing.assert_close(normalised, raw / logits.reshape(3, 1, 1, 1))
    huge = LayerAblationCam(model, layer).attribute(x, target=0, eps=1e3)
    torch.testing.assert_close(huge, raw / -1e3)


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_chunk_invariance_and_one_hook_per_pass(batch_size):
    model, x = conv_model(2), conv_input(2)
    layer = model.features[-1]
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inp):
            seen.append((inp.shape[0], len(layer._forward_hooks)))
            return self.model(inp)

    out = LayerAblationCam(Spy(), layer).attribute(x, target=[0, 1, 2], batch_size=batch_size)
    reference = LayerAblationCam(model, layer).attribute(x, target=[0, 1, 2], batch_size=7)
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-7)
    ablated = seen[1:]
    assert all(hooks == 1 for _, hooks in ablated)  # our replacement hook, nothing else
    assert all(rows <= batch_size for rows, _ in ablated)
    assert hook_count(model) == 0


def test_all_zero_channels_need_no_pass():
    model, x = conv_model(2), conv_input(2)
    with torch.no_grad():
        model.features[-2].weight[:3] = 0
        model.features[-2].bias[:3] = -1.0  # channels 0..2 are zero after the ReLU
    rows = []
    wrapped = nn.Sequential(model)
    wrapped.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    LayerAblationCam(wrapped, model.features[-1]).attribute(x, target=0)
    assert sum(rows[1:]) == 3 * 5


@pytest.mark.parametrize("rank", RANKS)
def test_batch_equals_stacked_singles(rank):
    model, x = conv_model(rank), conv_input(rank)
    method = LayerAblationCam(model, model.features[1])
    targets = [2, 0, 4]
    batched = method.attribute(x, target=targets, batch_size=4)
    singles = torch.cat([method.attribute(x[i : i + 1], target=t) for i, t in enumerate(targets)])
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-6)


def test_rank_two_layer_and_layer_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.randn(3, 4)
    out = LayerAblationCam(model, model[1]).attribute(x, target=1, normalize_by_score=False)
    with torch.no_grad():
        hidden = model[1](model[0](x))
    # Linear tail: the drop of unit k is W[1,k]·h_k, and the map is Σ_k drop_k · h_k.
    expected = (model[2].weight[1] * hidden * hidden).sum(1, keepdim=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # The input of the last Linear is the ReLU's output: same result through a pre-hook.
    on_input = LayerAblationCam(model, model[2]).attribute(
        x, target=1, normalize_by_score=False, attribute_to_layer_input=True
    )
    torch.testing.assert_close(on_input, expected, rtol=1e-5, atol=1e-6)
    assert hook_count(model) == 0


def test_no_trace_after_success_and_after_failure():
    model, x = conv_model(2), conv_input(2)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.features[0].weight.requires_grad_(False)
    before = snapshot(model, (x,))
    LayerAblationCam(model, model.features[-1]).attribute(x, target=[0, 1, 2], batch_size=4)
    assert_unchanged(model, (x,), before)

    fail = FailingModule()

    class FailsLater(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.fail, self.calls = model, fail, 0

        def forward(self, inp):
            self.calls += 1
            self.fail.armed = self.calls > 2
            return self.model(self.fail(inp))

    failing = FailsLater()
    with pytest.raises(RuntimeError, match="boom"):
        LayerAblationCam(failing, model.features[-1]).attribute(x, target=0, batch_size=4)
    assert hook_count(failing) == 0


def test_clear_errors():
    model, x = conv_model(2), conv_input(2)
    method = LayerAblationCam(model, model.features[-1])
    with pytest.raises(ValueError, match="batch_size"):
        method.attribute(x, target=0, batch_size=0)
    with pytest.raises(ValueError, match="eps"):
        method.attribute(x, target=0, eps=0.0)
    with pytest.raises(ValueError, match="score must be"):
        method.attribute(x, target=0, score="probability")
    with pytest.raises(ValueError, match="target"):
        method.attribute(x)

    class BatchMixer(nn.Module):  # the ablated layer sees a different batch than cached
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inp):
            return self.model(inp if inp.shape[0] == 3 else inp[:1])[: inp.shape[0]].expand(
                inp.shape[0], -1
            )

    with pytest.raises(ValueError, match="independently"):
        LayerAblationCam(BatchMixer(), model.features[-1]).attribute(x, target=0, batch_size=2)
    assert hook_count(model) == 0
