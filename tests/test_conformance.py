"""The Captum contract, checked for every public layer method.

A method joins by adding one ``MethodCase`` line to ``CASES``. The model ends in global average
pooling plus a linear head; ``layer`` is the last ReLU, whose output is ``(N, K, *S)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from captum.attr import NoiseTunnel
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from captum_ext.attr import (
    LayerAblationCam,
    LayerCFCam,
    LayerEigenCam,
    LayerEigenGradCam,
    LayerISCam,
    LayerScoreCam,
    LayerSSCam,
    LayerClassActivationMap,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerLayerCam,
    LayerNormGrad,
    LayerSmoothGradCamPlusPlus,
    MetaSaliency,
    LayerXGradCam,
    input_space_explanation,
)
from tests._helpers import (
    FailingModule,
    armed,
    assert_unchanged,
    conv_input,
    conv_model,
    hook_count,
    snapshot,
)


@dataclass
class MethodCase:
    name: str
    build: Callable[[nn.Module, nn.Module], Any]
    attribute_kwargs: dict[str, Any] = field(default_factory=dict)
    class_specific: bool = True
    differentiable: bool = True

    def __str__(self) -> str:
        return self.name


CASES = [
    MethodCase("LayerGradCamPlusPlus", lambda m, l: LayerGradCamPlusPlus(m, l)),
    MethodCase("LayerSmoothGradCamPlusPlus", lambda m, l: LayerSmoothGradCamPlusPlus(m, l),
               {"n_samples": 3, "generator": "seeded"}),
    MethodCase("LayerXGradCam", lambda m, l: LayerXGradCam(m, l)),
    MethodCase("LayerHiResCam", lambda m, l: LayerHiResCam(m, l)),
    MethodCase("LayerLayerCam", lambda m, l: LayerLayerCam(m, l)),
    MethodCase("LayerClassActivationMap", lambda m, l: LayerClassActivationMap(m, l, m.fc)),
    MethodCase("LayerEigenCam", lambda m, l: LayerEigenCam(m, l), class_specific=False),
    MethodCase("LayerEigenGradCam", lambda m, l: LayerEigenGradCam(m, l)),
    MethodCase("LayerScoreCam", lambda m, l: LayerScoreCam(m, l), {"batch_size": 5},
               differentiable=False),
    MethodCase("LayerSSCam", lambda m, l: LayerSSCam(m, l),
               {"batch_size": 7, "n_samples": 2, "generator": "seeded"}, differentiable=False),
    MethodCase("LayerISCam", lambda m, l: LayerISCam(m, l), {"batch_size": 7, "n_steps": 2},
               differentiable=False),
    MethodCase("LayerAblationCam", lambda m, l: LayerAblationCam(m, l), {"batch_size": 3},
               differentiable=False),
    MethodCase("LayerCFCam", lambda m, l: LayerCFCam(m, l)),
    MethodCase("LayerNormGrad", lambda m, l: LayerNormGrad(m, l), class_specific=False),
    MethodCase("LayerNormGrad-selective", lambda m, l: LayerNormGrad(m, l),
               {"variant": "selective"}),
    MethodCase("LayerNormGrad-conv3x3", lambda m, l: LayerNormGrad(m, l), {"variant": "conv3x3"},
               class_specific=False),
    MethodCase("MetaSaliency(LayerNormGrad)",
               lambda m, l: MetaSaliency(LayerNormGrad(m, l), lr=1e-2), {"variant": "selective"},
               differentiable=False),
]


def _kwargs(case: MethodCase) -> dict[str, Any]:
    """Fresh kwargs per call: a ``"seeded"`` generator becomes a new seeded generator."""
    return {
        key: torch.Generator().manual_seed(0) if value == "seeded" else value
        for key, value in case.attribute_kwargs.items()
    }


class _Wrapped(nn.Module):
    """A GAP model with a module that can be made to fail inside the forward pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.fail = FailingModule()
        self.fc = model.fc  # the same head, so that CAM's factory finds it

    def forward(self, x):
        return self.model(self.fail(x))


@pytest.fixture(params=CASES, ids=str)
def case(request) -> MethodCase:
    return request.param


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_shape_and_tupleness(case, rank):
    model, x = conv_model(rank), conv_input(rank)
    out = case.build(model, model.features[-1]).attribute(x, target=1, **_kwargs(case))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (3, 1) + (5,) * rank
    assert not out.requires_grad
    assert torch.isfinite(out).all()
    assert out.abs().sum() > 0


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_batch_equals_stacked_single_examples(case, rank):
    model, x = conv_model(rank), conv_input(rank)
    method = case.build(model, model.features[-1])
    targets = [4, 0, 2]
    batched = method.attribute(x, target=targets, **_kwargs(case))
    for target_form in (torch.tensor(targets),):
        torch.testing.assert_close(method.attribute(x, target=target_form, **_kwargs(case)), batched)
    singles = torch.cat(
        [method.attribute(x[i : i + 1], target=t, **_kwargs(case)) for i, t in enumerate(targets)]
    )
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)


def _unit(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def test_class_specific(case):
    """Class-specific methods give different maps for different classes; class-agnostic ones
    give the same map up to a positive scale."""
    model, x = conv_model(2), conv_input(2)
    method = case.build(model, model.features[-1])
    a = method.attribute(x, target=0, **_kwargs(case))
    b = method.attribute(x, target=3, **_kwargs(case))
    if case.class_specific:
        assert not torch.allclose(_unit(a), _unit(b), atol=1e-4)
    else:
        torch.testing.assert_close(_unit(a), _unit(b), rtol=1e-4, atol=1e-5)


def test_no_trace_after_success(case):
    model, x = conv_model(2), conv_input(2)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.features[0].weight.requires_grad_(False)
    before = snapshot(model, (x,))
    case.build(model, model.features[-1]).attribute(x, target=[0, 1, 2], **_kwargs(case))
    assert_unchanged(model, (x,), before)


def test_no_trace_in_training_mode(case):
    model, x = conv_model(2), conv_input(2)
    model.train()
    before = snapshot(model, (x,))
    case.build(model, model.features[-1]).attribute(x, target=1, **_kwargs(case))
    assert_unchanged(model, (x,), before)
    assert model.training


def test_no_hooks_after_failing_forward(case):
    wrapped = _Wrapped(conv_model(2)).eval()
    x = conv_input(2)
    method = case.build(wrapped, wrapped.model.features[-1])
    with armed(wrapped.fail), pytest.raises(RuntimeError, match="boom"):
        method.attribute(x, target=0, **_kwargs(case))
    assert hook_count(wrapped) == 0


def test_no_hooks_after_invalid_target(case):
    model, x = conv_model(2), conv_input(2)
    with pytest.raises(ValueError):
        case.build(model, model.features[-1]).attribute(x, target=(9999,), **_kwargs(case))
    assert hook_count(model) == 0


@pytest.mark.parametrize(
    "make_call, error, message",
    [
        (lambda m, x: dict(inputs=x, target=7), ValueError, "out of range"),
        (lambda m, x: dict(inputs=x, target=[0, 1]), ValueError, "one target per example"),
        (lambda m, x: dict(inputs=x, target=[0, 1, 2, 3]), ValueError, "one target per example"),
        (lambda m, x: dict(inputs=x, target=-1), ValueError, "negative"),
        (lambda m, x: dict(inputs=x, target=None), ValueError, "target"),
        (lambda m, x: dict(inputs=x.masked_fill(x > 1, float("nan")), target=0), ValueError, "NaN"),
        (lambda m, x: dict(inputs=x.masked_fill(x > 1, float("inf")), target=0), ValueError, "Inf"),
        (lambda m, x: dict(inputs=(x * 10).long(), target=0), TypeError, "dtype"),
        (lambda m, x: dict(inputs=x.to(torch.complex64), target=0), TypeError, "dtype"),
        (lambda m, x: dict(inputs=x[:0], target=0), ValueError, "empty batch"),
    ],
    ids=["range", "short-list", "long-list", "negative", "none", "nan", "inf", "int", "complex",
         "empty"],
)
def test_clear_errors(case, make_call, error, message):
    model, x = conv_model(2), conv_input(2)
    method = case.build(model, model.features[-1])
    call = make_call(model, x)
    with pytest.raises(error, match=message):
        method.attribute(call.pop("inputs"), **call, **_kwargs(case))
    assert hook_count(model) == 0


def test_layer_not_in_model(case):
    model, other, x = conv_model(2), conv_model(2, seed=5), conv_input(2)
    with pytest.raises(ValueError, match="not a submodule"):
        case.build(model, other.features[-1]).attribute(x, target=0, **_kwargs(case))


def test_layer_that_does_not_run(case):
    model, x = conv_model(2), conv_input(2)
    model.unused = nn.ReLU()
    with pytest.raises(ValueError, match="did not run"):
        case.build(model, model.unused).attribute(x, target=0, **_kwargs(case))
    assert hook_count(model) == 0


def test_layer_that_runs_twice(case):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.act, self.fc = nn.ReLU(), nn.Linear(4, 3)

        def forward(self, x):
            h = self.act(self.conv2(self.act(self.conv1(x))))
            return self.fc(h.mean((-1, -2)))

    model, x = Twice().eval(), conv_input(2)
    with pytest.raises(ValueError, match="ran 2 times"):
        case.build(model, model.act).attribute(x, target=0, **_kwargs(case))
    assert hook_count(model) == 0


def test_under_no_grad(case):
    model, x = conv_model(2), conv_input(2)
    method = case.build(model, model.features[-1])
    expected = method.attribute(x, target=1, **_kwargs(case))
    with torch.no_grad():
        got = method.attribute(x, target=1, **_kwargs(case))
    torch.testing.assert_close(got, expected)


def test_inside_noise_tunnel(case):
    model, x = conv_model(2), conv_input(2)
    method = case.build(model, model.features[-1])
    tunnel = NoiseTunnel(method)
    out = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1,
                           target=[0, 1, 2], **_kwargs(case))
    assert out.shape == (3, 1, 5, 5)
    zero_noise = tunnel.attribute(x, nt_samples=2, stdevs=0.0, target=[0, 1, 2], **_kwargs(case))
    torch.testing.assert_close(zero_noise, method.attribute(x, target=[0, 1, 2], **_kwargs(case)),
                               rtol=1e-4, atol=1e-6)


def test_with_captum_metrics(case):
    model, x = conv_model(2), conv_input(2, batch=2)
    explain = input_space_explanation(case.build(model, model.features[-1]))
    sens = sensitivity_max(explain, x, target=1, n_perturb_samples=2, **_kwargs(case))
    assert sens.shape == (2,) and torch.isfinite(sens).all()

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    attributions = explain(x, target=1, **_kwargs(case))
    assert attributions[0].shape == x.shape
    inf = infidelity(model, perturb, x, attributions, target=1, n_perturb_samples=2)
    assert inf.shape == (2,) and torch.isfinite(inf).all()


def test_differentiable_maps(case):
    if not case.differentiable:
        pytest.skip(f"{case.name} has no differentiable path")
    model, x = conv_model(2), conv_input(2)
    out = case.build(model, model.features[-1]).attribute(
        x, target=1, grad_kwargs={"create_graph": True}, **_kwargs(case)
    )
    assert out.requires_grad
    loss = out.pow(2).sum()
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.parameters())


def test_relu_attributions(case):
    model, x = conv_model(2), conv_input(2)
    method = case.build(model, model.features[-1])
    raw = method.attribute(x, target=2, **_kwargs(case))
    relu = method.attribute(x, target=2, relu_attributions=True, **_kwargs(case))
    torch.testing.assert_close(relu, raw.clamp(min=0))


def test_multiplies_by_inputs_is_false(case):
    model = conv_model(2)
    assert case.build(model, model.features[-1]).multiplies_by_inputs is False
