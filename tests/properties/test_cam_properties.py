"""Property-based tests of the CAM identities and the no-trace rules, on generated networks.

Which method claims what (``cam-family.md``):

* completeness on a GAP → linear head: CAM's mean is ``y_c − b_c``; XGrad-CAM and HiResCAM sum
  to ``y_c − b_c`` (both reduce to ``Σ_k W[c,k] mean(A^k)``). Grad-CAM++ and Layer-CAM keep only
  positive gradients and claim no conservation, so it is not tested for them.
* every method: batch invariance (a batch equals its stacked single examples), determinism
  (given a generator for the randomised one), and no trace on the model or the inputs.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captum_ext.attr import (
    LayerClassActivationMap,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerLayerCam,
    LayerSmoothGradCamPlusPlus,
    LayerXGradCam,
)
from captum_ext.models import ConvClassifier
from tests._helpers import assert_unchanged, snapshot

SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def networks(draw):
    rank = draw(st.sampled_from([1, 2, 3]))
    depth = draw(st.integers(1, 3))
    widths = tuple(draw(st.integers(1, 6)) for _ in range(depth))
    classes = draw(st.integers(2, 6))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 10_000))
    torch.manual_seed(seed)
    model = ConvClassifier(rank, in_channels=2, channels=widths, num_classes=classes, bias=bias)
    size = draw(st.integers(2, 5 if rank == 3 else 7))
    batch = draw(st.integers(1, 4))
    x = torch.randn((batch, 2) + (size,) * rank, generator=torch.Generator().manual_seed(seed))
    targets = draw(st.lists(st.integers(0, classes - 1), min_size=batch, max_size=batch))
    return model.eval(), x, targets


def _bias(model, targets):
    if model.fc.bias is None:
        return torch.zeros(len(targets))
    return model.fc.bias.detach()[targets]


@SETTINGS
@given(networks())
def test_cam_completeness(case):
    model, x, targets = case
    cam = LayerClassActivationMap(model, model.features[-1], model.fc).attribute(x, target=targets)
    with torch.no_grad():
        logits = model(x)[torch.arange(len(targets)), targets]
    torch.testing.assert_close(cam.flatten(1).mean(1), logits - _bias(model, targets),
                               rtol=1e-4, atol=1e-5)


@SETTINGS
@given(networks())
def test_xgrad_and_hires_conserve_logit_minus_bias(case):
    model, x, targets = case
    with torch.no_grad():
        logits = model(x)[torch.arange(len(targets)), targets]
    expected = logits - _bias(model, targets)
    layer = model.features[-1]
    hires = LayerHiResCam(model, layer).attribute(x, target=targets)
    torch.testing.assert_close(hires.flatten(1).sum(1), expected, rtol=1e-4, atol=1e-5)
    xgrad = LayerXGradCam(model, layer).attribute(x, target=targets)
    # XGrad-CAM's weight is 0 for a channel whose activation sums to 0, and such a channel
    # contributes nothing to the logit either, so conservation holds exactly.
    torch.testing.assert_close(xgrad.flatten(1).sum(1), expected, rtol=1e-4, atol=1e-5)


METHODS = [
    lambda m, l: LayerGradCamPlusPlus(m, l),
    lambda m, l: LayerXGradCam(m, l),
    lambda m, l: LayerHiResCam(m, l),
    lambda m, l: LayerLayerCam(m, l),
    lambda m, l: LayerClassActivationMap(m, l, m.fc),
]


@SETTINGS
@given(networks(), st.sampled_from(range(len(METHODS))))
def test_batch_invariance_and_no_trace(case, index):
    model, x, targets = case
    before = snapshot(model, (x,))
    method = METHODS[index](model, model.features[-1])
    batched = method.attribute(x, target=targets)
    singles = torch.cat(
        [method.attribute(x[i : i + 1], target=t) for i, t in enumerate(targets)]
    )
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method.attribute(x, target=targets), batched)  # deterministic
    assert_unchanged(model, (x,), before)


@SETTINGS
@given(networks(), st.integers(0, 2**31 - 1))
def test_smooth_grad_cam_pp_is_deterministic_given_a_generator(case, seed):
    model, x, targets = case
    method = LayerSmoothGradCamPlusPlus(model, model.features[-1])

    def run():
        return method.attribute(
            x, target=targets, n_samples=2, generator=torch.Generator().manual_seed(seed)
        )

    before = snapshot(model, (x,))
    torch.testing.assert_close(run(), run())
    assert_unchanged(model, (x,), before)


@SETTINGS
@given(networks(), st.booleans())
def test_grad_cam_pp_closed_form_on_gap_heads(case, alpha_normalization):
    """Grad-CAM++ on GAP → linear: paper α gives w_k = ReLU(W[c,k]) / (2 + S_k W[c,k] / Z),
    the official α normalisation gives w_k = ReLU(W[c,k]) / Z (``cam-family.md`` §3.2)."""
    model, x, targets = case
    layer = model.features[-1]
    out = LayerGradCamPlusPlus(model, layer).attribute(
        x, target=targets, alpha_normalization=alpha_normalization
    )
    with torch.no_grad():
        activation = layer(model.features[:-1](x))
    z = activation[0, 0].numel()
    weight = model.fc.weight.detach()[targets]
    if alpha_normalization:
        expected_weights = torch.relu(weight) / z
    else:
        sums = activation.flatten(2).sum(-1)
        denominator = 2 + sums * weight / z
        expected_weights = torch.where(weight > 0, torch.relu(weight) / denominator, 0.0)
    expected = (expected_weights.reshape(weight.shape + (1,) * (activation.dim() - 2))
                * activation).sum(1, keepdim=True)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
