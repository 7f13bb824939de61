"""Hostile inputs and no trace, for every public method (issue 9).

Two tables: the layer methods of ``test_conformance.CASES`` (whose target, NaN/Inf, int,
complex, empty-batch and layer checks live there) and ``INPUT_CASES``, the input-space methods
and the structures. Every hostile input gets a clear ``TypeError``/``ValueError`` (never an error
from inside torch, never a silently wrong answer), and no call, successful or failing, leaves a
trace: no hook, no changed ``training`` flag, ``requires_grad``, ``.grad``, parameter, buffer or
input.

What the package does with each hostile input:

================================  ======================================================
zero-size spatial dim             refused (``ValueError`` "zero-size dimension")
16-bit input, float32 model       refused (``TypeError`` naming both dtypes)
float16/bfloat16 model and input  supported, within 16-bit precision of the float32 answer
                                  (relative L2 error <= 1% in float16, <= 8% in bfloat16:
                                  Captum's own bfloat16 ``Saliency`` is 6.5% off on this
                                  model), except I-GOS/iGOS++ and AGF, which refuse 16-bit
                                  inputs with a ``TypeError`` that says to use float32
train-mode BatchNorm/Dropout      used as left (as Captum does), with a ``UserWarning``; the
                                  BatchNorm running statistics are restored afterwards
integer token ids (RelP only)     supported: RelP never differentiates the inputs
================================  ======================================================
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import (
    IGOS,
    AttributionGuidedFactorization,
    IGOSPlusPlus,
    LearnedPropagation,
    NormGrad,
    RelevancePatching,
)
from captum_ext.structures import StructuredAttentionGraph, count_sub_explanations, cross_test
from tests._helpers import (
    FailingModule,
    armed,
    assert_unchanged,
    conv_input,
    conv_model,
    hook_count,
    snapshot,
)
from tests.test_conformance import CASES, MethodCase, _kwargs


def _first(result: Any) -> Tensor:
    """A tensor summary of any result (maps, SAG results, counts, cross-test results)."""
    if isinstance(result, Tensor):
        return result
    if isinstance(result, (tuple, list)):
        return _first(result[0])
    for name in ("per_example", "counts", "ranking"):
        if hasattr(result, name):
            return getattr(result, name)
    raise TypeError(type(result))


def _ranking(x: Tensor) -> Tensor:
    return x[:1].abs().float().mean(1, keepdim=True)


def _cross(model: nn.Module, x: Tensor, target: Any = 0, **_: Any) -> Any:
    labels = torch.full((x.shape[0],), target) if isinstance(target, int) else target
    return cross_test({"a": model, "b": model}, x, labels=labels, class_source="label",
                      explain=lambda m, xx, c: xx.abs(), grid=2, budgets=(0.25, 0.5))


@dataclass
class InputCase:
    name: str
    run: Callable[..., Any]
    #: "supported" or "refused" for float16/bfloat16 models with matching inputs.
    half: str = "supported"
    #: explains one example per call (SAG and sub-explanation counting).
    single: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


_IGOS = dict(iterations=2, ig_steps=2, mask_size=3, noise_std=0.0)
INPUT_CASES = [
    InputCase("IGOS", lambda m, x, **k: IGOS(m).attribute(x, **_IGOS, **k), half="refused"),
    InputCase("IGOSPlusPlus", lambda m, x, **k: IGOSPlusPlus(m).attribute(x, **_IGOS, **k),
              half="refused"),
    InputCase("AGF", lambda m, x, **k: AttributionGuidedFactorization(m).attribute(x, **k),
              half="refused"),
    InputCase("NormGrad", lambda m, x, **k: NormGrad(m).attribute(x, **k)),
    InputCase("LearnedPropagation", lambda m, x, **k: LearnedPropagation(m).attribute(x, **k)),
    InputCase("RelP", lambda m, x, **k: RelevancePatching(m, m.features[-1]).attribute(
        x, baselines=0.5 * x, **k)),
    InputCase("AtP", lambda m, x, **k: RelevancePatching(m, m.features[-1]).attribute(
        x, baselines=0.5 * x, mode="attribution_patching", **k)),
    InputCase("ActivationPatching", lambda m, x, **k: RelevancePatching(m, m.features[-1])
              .attribute(x, baselines=0.5 * x, mode="activation_patching", **k)),
    InputCase("SAG", lambda m, x, **k: StructuredAttentionGraph(m).search(
        x, grid=2, ranking=_ranking(x), **k), single=True),
    InputCase("count_sub_explanations", lambda m, x, **k: count_sub_explanations(
        m, x, grid=2, ranking=_ranking(x), **k), single=True),
    InputCase("cross_test", _cross),
]


def _input(case: InputCase, **kwargs: Any) -> Tensor:
    return conv_input(2, batch=1 if case.single else 3, **kwargs)


@pytest.fixture(params=INPUT_CASES, ids=str)
def icase(request) -> InputCase:
    return request.param


# ---------------------------------------------------------------------- input-space table
@pytest.mark.parametrize(
    "hostile, error, message",
    [
        (lambda x: x.masked_fill(x > 1, float("nan")), ValueError, "NaN"),
        (lambda x: x.masked_fill(x > 1, float("inf")), ValueError, "Inf"),
        (lambda x: x[:0], ValueError, "empty batch|non-empty batch"),
        (lambda x: x[:, :, :0], ValueError, "zero-size"),
        (lambda x: x.to(torch.complex64), TypeError, "complex64"),
        (lambda x: x.half(), TypeError, "float16 but the model's parameters are torch.float32"),
        (lambda x: x.bfloat16(), TypeError, "bfloat16 but the model's parameters"),
        (lambda x: x.double(), TypeError, "float64 but the model's parameters"),
    ],
    ids=["nan", "inf", "empty", "zero-size", "complex", "float16", "bfloat16", "float64"],
)
def test_input_space_hostile_inputs(icase, hostile, error, message):
    model, x = conv_model(2), _input(icase)
    bad = hostile(x)
    before = snapshot(model, (bad,))
    with pytest.raises(error, match=message):
        icase.run(model, bad, target=0)
    assert_unchanged(model, (bad,), before)


def test_input_space_integer_inputs(icase):
    """Integer inputs are refused, except by RelP, which takes token ids (its models embed
    them); a conv model then fails in its own first layer, which is the model's message."""
    model, x = conv_model(2), _input(icase)
    if icase.name in ("RelP", "AtP", "ActivationPatching"):
        embed = _TokenModel()
        ids = torch.randint(0, 7, (3, 4), generator=torch.Generator().manual_seed(0))
        scores = RelevancePatching(embed, embed.mix).attribute(ids, baselines=ids.flip(0), target=1)
        assert scores.shape == (3,) and torch.isfinite(scores).all()
        return
    with pytest.raises(TypeError, match="int64"):
        icase.run(model, (x * 10).long(), target=0)
    assert hook_count(model) == 0


class _TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.mix, self.head = nn.Embedding(7, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(torch.relu(self.mix(self.embed(ids))).mean(1))


@pytest.mark.parametrize(
    "target, message",
    [(-1, "negative"), (7, "out of range"), ([0, 1, 2, 3], "one target per example")],
    ids=["negative", "too-large", "wrong-length"],
)
def test_input_space_bad_targets(icase, target, message):
    model, x = conv_model(2), _input(icase)
    before = snapshot(model, (x,))
    with pytest.raises(ValueError, match=message):
        icase.run(model, x, target=target)
    assert_unchanged(model, (x,), before)


def test_input_space_no_trace_after_success(icase):
    model, x = conv_model(2), _input(icase)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.features[0].weight.requires_grad_(False)
    before = snapshot(model, (x,))
    result = icase.run(model, x, target=1)
    assert torch.isfinite(_first(result).float()).all()
    assert_unchanged(model, (x,), before)


class _Wrapped(nn.Module):
    """``model`` behind a module that can be made to fail; ``features``/``fc`` exposed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.fail, self.model = FailingModule(), model
        self.features, self.fc = model.features, model.fc

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.fail(x))


def test_input_space_no_trace_after_failing_forward(icase):
    if icase.name == "AGF":
        pytest.skip("AGF needs a convolution reading the input; the failing module is first")
    wrapped, x = _Wrapped(conv_model(2)).eval(), _input(icase)
    before = snapshot(wrapped, (x,))
    with armed(wrapped.fail), pytest.raises(RuntimeError, match="boom"):
        icase.run(wrapped, x, target=0)
    assert_unchanged(wrapped, (x,), before)


# ---------------------------------------------------------------------- 16-bit
def _relative_error(got: Tensor, expected: Tensor) -> float:
    return float((got.double() - expected.double()).norm() / expected.double().norm().clamp_min(1e-30))


_TOLERANCE = {torch.float16: 0.01, torch.bfloat16: 0.08}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_input_space_16_bit_models(icase, dtype):
    x = _input(icase)
    model = conv_model(2)
    if icase.half == "refused":
        with pytest.raises(TypeError, match=f"{dtype}.*float32"):
            icase.run(model.to(dtype), x.to(dtype), target=1)
        return
    expected = _first(icase.run(model, x, target=1))
    got = _first(icase.run(model.to(dtype), x.to(dtype), target=1))
    if icase.name == "cross_test":  # probabilities: compare absolutely
        torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=0)
        return
    assert got.dtype == dtype or icase.single
    assert _relative_error(got, expected) <= _TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_layer_methods_16_bit_models(case: MethodCase, dtype):
    model, x = conv_model(2), conv_input(2)
    expected = case.build(model, model.features[-1]).attribute(x, target=1, **_kwargs(case))
    model = model.to(dtype)
    got = case.build(model, model.features[-1]).attribute(x.to(dtype), target=1, **_kwargs(case))
    assert got.dtype == dtype
    assert _relative_error(got, expected) <= _TOLERANCE[dtype]


@pytest.fixture(params=CASES, ids=str)
def case(request) -> MethodCase:
    return request.param


@pytest.mark.parametrize(
    "hostile, error, message",
    [
        (lambda x: x[:, :, :0], ValueError, "zero-size"),
        (lambda x: x.half(), TypeError, "float16 but the model's parameters are torch.float32"),
        (lambda x: x.bfloat16(), TypeError, "bfloat16 but the model's parameters"),
    ],
    ids=["zero-size", "float16", "bfloat16"],
)
def test_layer_methods_more_hostile_inputs(case: MethodCase, hostile, error, message):
    model, x = conv_model(2), conv_input(2)
    bad = hostile(x)
    before = snapshot(model, (bad,))
    with pytest.raises(error, match=message):
        case.build(model, model.features[-1]).attribute(bad, target=0, **_kwargs(case))
    assert_unchanged(model, (bad,), before)


# ---------------------------------------------------------------------- training mode
class _NormModel(nn.Module):
    """conv → BatchNorm → ReLU → Dropout → conv → ReLU → GAP → fc, for 2D inputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.3),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        )
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _check_training_mode(run: Callable[[nn.Module, Tensor], Any], x: Tensor, warns: bool = True):
    model = _NormModel().train()
    model.features[1].running_mean.fill_(0.25)  # non-default statistics must survive too
    before = snapshot(model, (x,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(model, x)
    assert_unchanged(model, (x,), before)  # running statistics included (state_dict)
    assert model.training and all(m.training for m in model.modules())
    if warns:  # MetaSaliency words its own warning (it steps copies of the buffers)
        assert any("training mode" in str(w.message) for w in caught)


def test_input_space_training_mode_batchnorm_and_dropout(icase):
    _check_training_mode(lambda m, x: icase.run(m, x, target=1), _input(icase))


def test_layer_methods_training_mode_batchnorm_and_dropout(case: MethodCase):
    def run(model: nn.Module, x: Tensor) -> Any:
        return case.build(model, model.features[-1]).attribute(x, target=1, **_kwargs(case))

    _check_training_mode(run, conv_input(2))


def test_eval_mode_does_not_warn():
    model, x = _NormModel().eval(), conv_input(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NormGrad(model).attribute(x, target=1)


# ---------------------------------------------------------------------- layers (RelP)
def test_relp_layer_not_in_model():
    model, other, x = conv_model(2), conv_model(2, seed=5), conv_input(2)
    with pytest.raises(ValueError, match="not a submodule"):
        RelevancePatching(model, other.features[-1]).attribute(x, baselines=0.5 * x, target=0)
    assert hook_count(model) == 0


def test_learned_propagation_layer_not_in_model():
    model, other, x = conv_model(2), conv_model(2, seed=5), conv_input(2)
    with pytest.raises(ValueError, match="none of the hooked activation modules ran"):
        LearnedPropagation(model, layers=[other.features[-1]]).attribute(x, target=0)
    assert hook_count(model) == 0 and hook_count(other) == 0
