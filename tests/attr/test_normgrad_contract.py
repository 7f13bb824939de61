"""LayerNormGrad: the Captum contract, no trace, and clear errors."""

from __future__ import annotations

import pytest
import torch
from tests.attr._normgrad_testing import count_hooks, make_input, make_model
from torch import nn

from captum_ext.attr import LayerNormGrad, disable_inplace

# ---------------------------------------------------------------- contract, no trace, errors
def test_no_trace_after_success_and_failure_and_under_no_grad():
    model, x = make_model(2), make_input(2)
    model[0].weight.requires_grad_(False)
    model[2].weight.grad = torch.ones_like(model[2].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_copy = x.clone()
    expected = LayerNormGrad(model, [model[2], model[4]]).attribute(x, target=1, variant="proper")
    with torch.no_grad():
        again = LayerNormGrad(model, [model[2], model[4]]).attribute(x, target=1, variant="proper")
        assert not torch.is_grad_enabled()
    for a, b in zip(expected, again):
        torch.testing.assert_close(a, b)
    assert not any(m.requires_grad for m in expected)
    for bad in (dict(target=7), dict(target=[0, 1, 2])):
        with pytest.raises(ValueError):
            LayerNormGrad(model, [model[2], model[4]]).attribute(x, variant="proper", **bad)
        assert torch.is_grad_enabled()
    first = LayerNormGrad(model, model[0]).attribute(x, target=0, attribute_to_layer_input=True)
    assert first.shape == (2, 1, 6, 5)
    assert count_hooks(model) == 0 and not model.training and not x.requires_grad
    assert torch.equal(x, x_copy)
    assert [p.requires_grad for p in model.parameters()][:2] == [False, True]
    assert torch.equal(model[2].weight.grad, torch.ones_like(model[2].weight))
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("2.weight"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_create_graph_gives_maps_differentiable_in_the_input():
    model, x = make_model(2), make_input(2).requires_grad_(True)
    maps = LayerNormGrad(model, [model[1], model[3]]).attribute(
        x, target=1, variant="selective", grad_kwargs={"create_graph": True}
    )
    assert all(m.requires_grad for m in maps)
    (grad,) = torch.autograd.grad(sum(m.sum() for m in maps), x)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_contract_members():
    model = make_model(2)
    method = LayerNormGrad(model, model[1])
    assert method.multiplies_by_inputs is False and method.has_convergence_delta() is False
    assert hasattr(LayerNormGrad.attribute, "__wrapped__")
    with pytest.raises(NotImplementedError):
        method.attribute_future(make_input(2))
    relu_map = method.attribute(make_input(2), target=0, variant="linear", relu_attributions=True)
    assert bool((relu_map >= 0).all())


def test_disable_inplace_restores_even_after_an_error():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(inplace=True), nn.ReLU())
    with pytest.raises(RuntimeError):
        with disable_inplace(model):
            assert model[1].inplace is False
            raise RuntimeError("boom")
    assert model[1].inplace is True and model[2].inplace is False


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(variant="nope"), ValueError, "unknown variant"),
        (dict(variant="normgrad", phase1="bias", phase2="sum"), ValueError, "either variant"),
        (dict(phase1="bias"), ValueError, "together"),
        (dict(phase1="bias", phase2="mean"), ValueError, "unknown phase2"),
        (dict(gradient_pooling="max"), ValueError, "gradient_pooling"),
        (dict(variant="conv3x3", kernel_size=4), ValueError, "odd"),
        (dict(variant="proper"), TypeError, "nn.Conv1d/2d/3d or nn.Linear"),
        (dict(variant="proper", attribute_to_layer_input=True), ValueError, "not meaningful"),
        (dict(combine="mean"), ValueError, "unknown combine"),
        (dict(combine="product", weights=[1.0, 2.0]), ValueError, "takes no weights"),
        (dict(combine="sum", weights=[1.0]), ValueError, "one per layer"),
        (dict(combine="sum", weights=[-1.0, 2.0]), ValueError, "non-negative"),
        (dict(target=3), ValueError, "out of range"),
        (dict(target=[0]), ValueError, "entries but the batch has 2"),
    ],
)
def test_errors(kwargs, error, match):
    model, x = make_model(2), make_input(2)
    layers = [model[1], model[3]] if "weights" in kwargs else model[1]
    kwargs = {"target": 0, **kwargs}
    with pytest.raises(error, match=match):
        LayerNormGrad(model, layers).attribute(x, **kwargs)
    assert count_hooks(model) == 0 and torch.is_grad_enabled()


def test_layer_errors():
    model, other = make_model(2), make_model(2)
    with pytest.raises(ValueError, match="not a submodule"):
        LayerNormGrad(model, other[1]).attribute(make_input(2), target=0)
    with pytest.raises(ValueError, match="same module twice"):
        LayerNormGrad(model, [model[1], model[1]])
    with pytest.raises(ValueError, match="empty list"):
        LayerNormGrad(model, [])
    mlp = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="spatial grid"):
        LayerNormGrad(mlp, mlp[1]).attribute(torch.randn(2, 5), target=0, variant="conv3x3")
    with pytest.raises(ValueError, match="no grid"):
        LayerNormGrad(mlp, [mlp[1]]).attribute(torch.randn(2, 5), target=0, combine="sum")


def test_train_mode_batchnorm_warns():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 16, 2))
    with pytest.warns(UserWarning, match="BatchNorm layer is in training mode"):
        LayerNormGrad(model, model[1]).attribute(torch.randn(2, 2, 6, 6), target=0)
