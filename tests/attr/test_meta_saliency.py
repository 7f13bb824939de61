"""Meta-saliency: the map after one virtual SGD step equals the map of a really-stepped copy,
and the user's model is bit-identical afterwards."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tests.attr._normgrad_testing import count_hooks
from captum.attr import LayerGradCam
from torch import nn

from captum_ext.attr import LayerNormGrad, MetaSaliency


def bn_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 6 * 5, 3),
    )
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def inputs(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 2, 6, 5, generator=torch.Generator().manual_seed(2))


def stepped_copy(model, x, target, lr, loss="cross_entropy"):
    """A deep copy after a real SGD step on one sample (the oracle)."""
    clone = copy.deepcopy(model)
    params = [p for p in clone.parameters() if p.requires_grad]
    out = clone(x)
    if loss == "cross_entropy":
        value = F.cross_entropy(out, torch.tensor([target]))
    else:
        value = -out[0, target]
    grads = torch.autograd.grad(value, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= lr * g
    return clone


def test_meta_normgrad_equals_normgrad_of_a_stepped_copy():
    model, x, target = bn_model(), inputs(), [0, 2, 1]
    model[0].bias.requires_grad_(False)  # a frozen parameter is not stepped
    lr = 0.5
    meta = LayerNormGrad(model, [model[2], model[4]]).attribute(
        x, target=target, meta_saliency=True, meta_lr=lr
    )
    expected = [[], []]
    for i, t in enumerate(target):
        clone = stepped_copy(model, x[i : i + 1], t, lr)
        maps = LayerNormGrad(clone, [clone[2], clone[4]]).attribute(x[i : i + 1], target=t)
        for j in range(2):
            expected[j].append(maps[j])
    plain = LayerNormGrad(model, [model[2], model[4]]).attribute(x, target=target)
    for j in range(2):
        torch.testing.assert_close(meta[j], torch.cat(expected[j]), rtol=1e-5, atol=1e-6)
        assert float((meta[j] - plain[j]).abs().max()) > 1e-3  # the step really changes the map


def test_wrapper_on_captum_grad_cam_with_logit_loss_and_negate():
    model, x = bn_model(), inputs(2)
    lr = 0.3
    meta = MetaSaliency(LayerGradCam(model, model[4]), lr=lr, negate=True, loss="logit")
    result = meta.attribute(x, target=torch.tensor([1, 2]))
    expected = []
    for i, t in enumerate([1, 2]):
        clone = stepped_copy(model, x[i : i + 1], t, -lr, loss="logit")  # ascent on -logit
        expected.append(LayerGradCam(clone, clone[4]).attribute(x[i : i + 1], target=t).detach())
    torch.testing.assert_close(result.detach(), torch.cat(expected), rtol=1e-5, atol=1e-6)


def _state(model):
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
    }


def _assert_bit_identical(model, before):
    after = _state(model)
    for name, value in before["params"].items():
        assert torch.equal(after["params"][name], value), name
    for name, value in before["buffers"].items():
        assert torch.equal(after["buffers"][name], value), name
    for name, value in before["grads"].items():
        assert (after["grads"][name] is None) == (value is None), name
        assert value is None or torch.equal(after["grads"][name], value), name
    assert after["flags"] == before["flags"] and after["training"] == before["training"]
    assert count_hooks(model) == 0


@pytest.mark.filterwarnings("ignore:the model is in training mode")
@pytest.mark.parametrize("train_mode", [False, True])
def test_model_is_bit_identical_afterwards(train_mode):
    model, x = bn_model(), inputs()
    model.train(train_mode)
    model[0].weight.requires_grad_(False)
    model[3].weight.grad = torch.randn_like(model[3].weight)
    before = _state(model)
    x_before = x.clone()
    method = LayerNormGrad(model, [model[2], model[4]])
    if train_mode:
        with pytest.warns(UserWarning, match="training mode"):
            method.attribute(x, target=[0, 1, 2], meta_saliency=True, meta_lr=0.5)
    else:
        with torch.no_grad():
            method.attribute(x, target=[0, 1, 2], meta_saliency=True, variant="conv3x3")
    _assert_bit_identical(model, before)
    assert torch.equal(x, x_before) and not x.requires_grad
    with pytest.raises(ValueError):
        method.attribute(x, target=5, meta_saliency=True)
    _assert_bit_identical(model, before)


def test_batch_equals_stacked_singles():
    model, x = bn_model(), inputs()
    method = LayerNormGrad(model, model[4])
    batched = method.attribute(
        x, target=[2, 0, 1], meta_saliency=True, meta_lr=0.2, combine="product"
    )
    singles = [
        method.attribute(x[i : i + 1], target=t, meta_saliency=True, meta_lr=0.2, combine="product")
        for i, t in enumerate([2, 0, 1])
    ]
    torch.testing.assert_close(batched, torch.cat(singles))


def test_errors():
    model, x = bn_model(), inputs(2)
    frozen = copy.deepcopy(model).requires_grad_(False)
    with pytest.raises(ValueError, match="has none"):
        LayerNormGrad(frozen, frozen[2]).attribute(x, target=0, meta_saliency=True)
    with pytest.raises(TypeError, match="nn.Module"):
        MetaSaliency(LayerNormGrad(lambda t: model(t), model[2]))
    with pytest.raises(ValueError, match="target=None"):
        LayerNormGrad(model, model[2]).attribute(x, target=None, meta_saliency=True)
    with pytest.raises(ValueError, match="unknown loss"):
        MetaSaliency(LayerNormGrad(model, model[2]), loss="mse")
    with pytest.raises(NotImplementedError):
        MetaSaliency(LayerNormGrad(model, model[2])).attribute_future(x)
