"""Right for the Right Reasons: hand computations, gradient flow, no trace, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_ext.losses import (
    RightForTheRightReasonsLoss,
    input_gradient_penalty,
    right_for_the_right_reasons,
)
from tests._helpers import assert_unchanged, conv_input, conv_model, snapshot

RANKS = [1, 2, 3]


def _linear_model() -> nn.Module:
    """f(x) = W x + b on 3 features, 2 classes, with round numbers."""
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    return model


def test_penalty_matches_hand_computation_on_a_linear_model():
    # Σ_k log p_k = Σ_k z_k − K·lse(z), so its gradient is Σ_k (1 − K·p_k) W_k.
    model = _linear_model()
    x = torch.tensor([[1.0, 0.0, -1.0]])
    z = [1.0 - 0.0 - 0.5 + 0.5, 0.0 + 0.0 - 3.0 - 0.5]  # [1.0, -3.5]
    p0 = math.exp(z[0]) / (math.exp(z[0]) + math.exp(z[1]))
    p1 = 1.0 - p0
    w = [[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]]
    gradient = [(1 - 2 * p0) * w[0][d] + (1 - 2 * p1) * w[1][d] for d in range(3)]
    forbidden = torch.tensor([[1.0, 0.0, 1.0]])
    expected = gradient[0] ** 2 + gradient[2] ** 2
    penalty, logits = input_gradient_penalty(model, x, forbidden)
    torch.testing.assert_close(penalty, torch.tensor([expected]))
    torch.testing.assert_close(logits, torch.tensor([z]))

    terms = right_for_the_right_reasons(model, x, torch.tensor([1]), forbidden, lambda_grads=3.0)
    cross_entropy = -math.log(p1)
    torch.testing.assert_close(terms.task, torch.tensor(cross_entropy))
    torch.testing.assert_close(terms.explanation, torch.tensor(3.0 * expected))
    torch.testing.assert_close(terms.total, torch.tensor(cross_entropy + 3.0 * expected))


def test_reductions_scale_both_terms_alike():
    model = _linear_model()
    x = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    labels, forbidden = torch.tensor([1, 0]), torch.ones(2, 3)
    none = right_for_the_right_reasons(model, x, labels, forbidden, lambda_grads=2.0,
                                       reduction="none")
    assert none.total.shape == (2,)
    for reduction, reduce in (("mean", torch.mean), ("sum", torch.sum)):
        terms = right_for_the_right_reasons(model, x, labels, forbidden, lambda_grads=2.0,
                                            reduction=reduction)
        torch.testing.assert_close(terms.total, reduce(none.total))
        torch.testing.assert_close(terms.task, reduce(none.task))


@pytest.mark.parametrize("rank", RANKS)
def test_penalty_equals_autograd_per_example(rank):
    """1D/2D/3D conv models; the batch equals the stack of single examples."""
    model, x = conv_model(rank), conv_input(rank)
    forbidden = (torch.rand((3, 1) + (5,) * rank, generator=torch.Generator().manual_seed(2))
                 > 0.5).float()
    penalty, _ = input_gradient_penalty(model, x, forbidden)
    for n in range(3):
        single = x[n : n + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.log_softmax(model(single), 1).sum(), single)
        expected = (forbidden[n : n + 1] * g).pow(2).sum()
        torch.testing.assert_close(penalty[n], expected, rtol=1e-5, atol=1e-7)
        alone, _ = input_gradient_penalty(model, x[n : n + 1], forbidden[n : n + 1])
        torch.testing.assert_close(alone[0], penalty[n], rtol=1e-5, atol=1e-7)


def test_penalty_gradient_reaches_the_weights_and_zero_mask_gives_cross_entropy():
    model, x = conv_model(2), conv_input(2)
    labels = torch.tensor([0, 1, 2])
    criterion = RightForTheRightReasonsLoss(model, lambda_grads=10.0)
    terms = criterion.terms(x, labels, torch.ones(3, 1, 5, 5))
    grads = torch.autograd.grad(terms.explanation, list(model.parameters()), allow_unused=True)
    conv_grad = grads[0]
    assert conv_grad is not None and conv_grad.abs().sum() > 0  # double backprop reaches conv
    zero = criterion(x, labels, torch.zeros(3, 1, 5, 5))
    torch.testing.assert_close(zero, F.cross_entropy(model(x), labels))


def test_call_leaves_no_trace_until_backward():
    model, x = conv_model(2), conv_input(2)
    model.train()
    before = snapshot(model, (x,))
    loss = RightForTheRightReasonsLoss(model, lambda_grads=5.0)(
        x, torch.tensor([0, 1, 2]), torch.ones(3, 1, 5, 5)
    )
    assert_unchanged(model, (x,), before)
    assert model.training
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert list(RightForTheRightReasonsLoss(model).parameters()) == []


def test_no_grad_gives_the_same_value_detached():
    model, x = conv_model(2), conv_input(2)
    labels, forbidden = torch.tensor([0, 1, 2]), torch.ones(3, 3, 5, 5)
    criterion = RightForTheRightReasonsLoss(model, lambda_grads=5.0)
    with_grad = criterion(x, labels, forbidden)
    with torch.no_grad():
        without = criterion(x, labels, forbidden)
    assert not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach())


def test_clear_errors():
    model, x = conv_model(2), conv_input(2)
    with pytest.raises(ValueError, match="does not broadcast"):
        input_gradient_penalty(model, x, torch.ones(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        input_gradient_penalty(lambda t: t.sum((1, 2, 3)), x, torch.ones_like(x))
    with pytest.raises(ValueError, match="reduction"):
        RightForTheRightReasonsLoss(model, reduction="avg")
    with pytest.raises(ValueError, match="non-negative"):
        RightForTheRightReasonsLoss(model, lambda_grads=-1.0)
