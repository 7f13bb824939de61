"""The attribution axioms on hypothesis-generated networks (issue 9); ``AXIOMS.md`` has the table.

Networks are generated small: 1D, 2D or 3D convolutions (kernel 3, padding 1, so the layer
grid is the input grid), 1-3 layers of width 1-4, with or without bias, ReLU or a smooth
activation (Softplus, Tanh), global average pooling and a linear head, in float64 so that
"equal" means equal to rounding. Each property says which methods it applies to and why; an
axiom a method does not claim is not forced on it, and the reason is written next to it (and,
where a small counterexample exists, tested as a counterexample).

* **Sensitivity(a)** (an input differing from the baseline in one feature, with a different
  output, gets non-zero attribution on it). Claimed by exact activation patching at the input
  (``RelevancePatching(mode="activation_patching")`` on an input-level component: the score of
  a unit is exactly ``F(x with that unit patched) − F(x)``). I-GOS's integrated-gradient
  direction claims it on *linear* models only: it weighs the path gradient by the path position
  ``α_k`` (the gradient with respect to the mask), so its limit is ``g(1) − ∫g`` rather than
  ``g(1) − g(0)`` along the path ``g``; ``F(x) = −4x + 3x²`` from ``b = 0`` is a counterexample
  (``F(1) − F(0) = −1`` but the direction is ``(K + 1)/K² > 0``). Gradient methods (NormGrad,
  LearnedPropagation, AtP) do not claim it: a saturated unit has zero gradient
  (``1 − ReLU(1 − x)`` at ``x = 2``).
* **Sensitivity(b), dummy**: see ``test_input_dummy_*`` and ``test_layer_*_dummy`` and the table
  in ``AXIOMS.md`` (which CAMs fail, and what they claim instead).
* **Implementation invariance**: claimed by methods that only evaluate the function and its
  input gradient: NormGrad at the input, the I-GOS direction, I-GOS/iGOS++ masks, exact
  activation patching at the input. Not by LearnedPropagation, AGF and RelP (rules attached to
  the modules, so the architecture matters), nor by any layer method: a layer map is a
  statement about a chosen layer, and a functionally equal network need not have that layer.
* **Linearity**: in the explained function. Claimed by the I-GOS direction, AtP and exact
  patching (linear in the metric), and, in the head's weights of a GAP + linear head, by CAM,
  HiResCAM and XGrad-CAM. Not by Grad-CAM++ and Layer-CAM (ReLUs of the gradient), NormGrad
  (norms), Score-CAM (softmax scores), nor by the final I-GOS masks (a line search).
* **Batch invariance** of the input-space methods (the layer methods are in
  ``test_conformance.py``); SAG and sub-explanation counting explain one example per call.
* **Determinism given a generator**: SS-CAM, I-GOS, iGOS++, SAG's I-GOS ranking and
  ``count_sub_explanations`` (SmoothGrad-CAM++ is in ``test_cam_properties.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from captum_ext._scores import ExampleScorer
from captum_ext.attr import (
    IGOS,
    Component,
    AttributionGuidedFactorization,
    IGOSPlusPlus,
    LayerAblationCam,
    LayerCFCam,
    LayerClassActivationMap,
    LayerEigenCam,
    LayerEigenGradCam,
    LayerGradCamPlusPlus,
    LayerHiResCam,
    LayerISCam,
    LayerLayerCam,
    LayerNormGrad,
    LayerScoreCam,
    LayerSSCam,
    LayerXGradCam,
    LearnedPropagation,
    NormGrad,
    RelevancePatching,
    upsample_to_input,
)
from captum_ext.attr._mask_method import _resolve_options
from captum_ext.attr._mask_optim import PathTerm
from captum_ext.structures import StructuredAttentionGraph, count_sub_explanations

SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh}


class Net(nn.Module):
    """``[mask ⊙] x → (conv → act)* → [layer mask ⊙] → GAP → fc``; ``features[-1]`` is the
    CAM layer. ``input_mask``/``layer_mask`` (buffers) disconnect a region from the output."""

    def __init__(self, rank: int, widths: tuple[int, ...], classes: int, bias: bool,
                 activation: str, in_channels: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [_CONV[rank](previous, width, 3, padding=1, bias=bias),
                       _ACTIVATIONS[activation]()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(previous, classes, bias=bias)
        self.input_mask: Tensor | None = None
        self.layer_mask: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.input_mask is not None:
            x = x * self.input_mask
        a = self.features(x)
        if self.layer_mask is not None:
            a = a * self.layer_mask
        return self.fc(a.flatten(2).mean(-1))


@st.composite
def nets(draw, activations=("relu", "softplus", "tanh"), ranks=(1, 2, 3)):
    rank = draw(st.sampled_from(ranks))
    widths = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3))))
    classes = draw(st.integers(2, 4))
    bias = draw(st.booleans())
    activation = draw(st.sampled_from(activations))
    seed = draw(st.integers(0, 10_000))
    torch.manual_seed(seed)
    net = Net(rank, widths, classes, bias, activation).double().eval()
    side = draw(st.integers(3, 4 if rank == 3 else 6))
    batch = draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, 2) + (side,) * rank, generator=g, dtype=torch.float64)
    targets = draw(st.lists(st.integers(0, classes - 1), min_size=batch, max_size=batch))
    return net, x, targets


def _region(x: Tensor) -> Tensor:
    """The disconnected region: the upper half of the last spatial axis, all channels."""
    mask = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    mask[..., x.shape[-1] // 2:] = 0
    return mask


# ---------------------------------------------------------------------- the I-GOS direction
def igos_direction(model: nn.Module, x: Tensor, baseline: Tensor, target: Any,
                   steps: int = 6) -> Tensor:
    """I-GOS's descent direction at the all-ones mask, with no noise and no regulariser
    (``L1 = TV = 0``), at input resolution: the integrated gradient of the deletion-path score
    with respect to the mask, ``(1/K) Σ_k α_k Σ_c ∂_c F(b + α_k d) d_c`` per position."""
    defaults = {name: p.default for name, p in inspect.signature(IGOS.attribute).parameters.items()
                if p.kind is p.KEYWORD_ONLY}
    options = _resolve_options({**defaults, "ig_steps": steps, "noise_std": 0.0,
                                "l1_weight": 0.0, "tv_weight": 0.0, "output": "logit"})
    n = x.shape[0]
    scorer = ExampleScorer(model, (x,), target, None, "logit")

    def identity(variables):
        return list(variables)

    def no_regulariser(masks, examples, l1):
        return masks[0].flatten(1).sum(1) * 0

    optimiser = IGOS(model)._optimiser(scorer, (x,), (baseline,), [PathTerm(True, identity)],
                                       identity, no_regulariser, [None] * n, options)
    ones = torch.ones((n, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    _, (direction,) = optimiser._loss_and_direction(
        [ones], torch.arange(n), None, torch.arange(n), torch.zeros(n, dtype=x.dtype))
    return direction


class Quadratic(nn.Module):
    """``F(x) = a·x + c·x²`` of a single feature ``x[:, 0, 0]``."""

    def __init__(self, a: float, c: float) -> None:
        super().__init__()
        self.a, self.c = a, c

    def forward(self, x: Tensor) -> Tensor:
        v = x[:, 0, 0]
        return self.a * v + self.c * v * v


@pytest.mark.parametrize("steps", [2, 5, 20])
def test_igos_direction_is_not_sensitive_in_general(steps):
    """Counterexample to sensitivity(a) for the I-GOS direction: ``F = −4x + 3x²``, ``b = 0``,
    ``x = 1``: ``F(x) − F(b) = −1`` but the direction is ``(K + 1)/K² > 0`` (wrong sign)."""
    x = torch.ones(1, 1, 1, dtype=torch.float64)
    direction = igos_direction(Quadratic(-4.0, 3.0), x, torch.zeros_like(x), None, steps)
    expected = (steps + 1) / steps**2
    torch.testing.assert_close(direction.flatten(), torch.tensor([expected], dtype=torch.float64))


@SETTINGS
@given(st.integers(0, 10_000), st.sampled_from([1, 2, 3]), st.integers(2, 8))
def test_igos_direction_sensitivity_a_on_linear_models(seed, rank, steps):
    """On a linear model ``F = Σ w ⊙ x`` with ``x`` differing from ``b`` at one position:
    the direction there is ``ā · Σ_c w_c d_c``, non-zero exactly when ``F(x) ≠ F(b)``, and zero
    elsewhere (``ā = (K + 1)/2K``)."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 2) + (3,) * rank
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    b = torch.randn(shape, generator=g, dtype=torch.float64)
    x = b.clone()
    x[(0, slice(None)) + (1,) * rank] += torch.randn(2, generator=g, dtype=torch.float64)

    class Linear(nn.Module):
        def forward(self, v):
            return (v * w).flatten(1).sum(1)

    direction = igos_direction(Linear(), x, b, None, steps)
    change = float(((x - b) * w).sum())
    a_bar = (steps + 1) / (2 * steps)
    at = (0, 0) + (1,) * rank
    torch.testing.assert_close(float(direction[at]), a_bar * change)
    assert (direction[at] != 0) == (change != 0)
    others = direction.clone()
    others[at] = 0
    assert torch.equal(others, torch.zeros_like(others))


@SETTINGS
@given(nets(), st.floats(-2, 2), st.floats(-2, 2))
def test_igos_direction_is_linear_in_the_function(case, a, c):
    """IG is linear in the function, so the direction of ``a·F₁ + c·F₂`` is ``a·dir(F₁) +
    c·dir(F₂)`` (same baseline, no noise). Applies to the direction only: the final masks
    come from a line search, which is not linear."""
    net, x, targets = case
    torch.manual_seed(1)
    other = Net(x.dim() - 2, (3,), net.fc.out_features, True, "tanh").double().eval()

    class Combined(nn.Module):
        def forward(self, v):
            return a * net(v) + c * other(v)

    baseline = torch.zeros_like(x)
    combined = igos_direction(Combined(), x, baseline, targets)
    expected = a * igos_direction(net, x, baseline, targets) + c * igos_direction(
        other, x, baseline, targets)
    torch.testing.assert_close(combined, expected, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------- implementation invariance
class Rescaled(nn.Module):
    """The same function as ``net`` through different layers: after every convolution a
    1×1 convolution with a positive diagonal ``s`` (``act(s z) ≠ s act(z)`` in general, so it
    is undone before the activation by a second 1×1 convolution with ``1/s``), and the head
    split into two linear layers ``W = W₂ W₁`` (``W₁`` random and invertible)."""

    def __init__(self, net: Net, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        for module in net.features:
            layers.append(module)
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                k, rank = module.out_channels, module.weight.dim() - 2
                s = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
                up, down = (_CONV[rank](k, k, 1, bias=False).double() for _ in range(2))
                with torch.no_grad():
                    up.weight.copy_(torch.diag(s).reshape(k, k, *(1,) * rank))
                    down.weight.copy_(torch.diag(1 / s).reshape(k, k, *(1,) * rank))
                layers += [up, down]
        self.features = nn.Sequential(*layers)
        k = net.fc.in_features
        w1 = torch.randn(k, k, generator=g, dtype=torch.float64) + 3 * torch.eye(k, dtype=torch.float64)
        self.first = nn.Linear(k, k, bias=False).double()
        self.second = nn.Linear(k, net.fc.out_features, bias=net.fc.bias is not None).double()
        with torch.no_grad():
            self.first.weight.copy_(w1)
            self.second.weight.copy_(net.fc.weight @ torch.linalg.inv(w1))
            if net.fc.bias is not None:
                self.second.bias.copy_(net.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(self.features(x).flatten(2).mean(-1)))


@SETTINGS
@given(nets(), st.integers(0, 1000))
def test_implementation_invariance(case, seed):
    """NormGrad at the input, the I-GOS direction and exact activation patching at the input
    depend only on the function (values and input gradients): equal on the pair."""
    net, x, targets = case
    twin = Rescaled(net, seed).eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=1e-9, atol=1e-10)
    tol = dict(rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(NormGrad(twin).attribute(x, target=targets),
                               NormGrad(net).attribute(x, target=targets), **tol)
    baseline = torch.zeros_like(x)
    torch.testing.assert_close(igos_direction(twin, x, baseline, targets),
                               igos_direction(net, x, baseline, targets), **tol)
    torch.testing.assert_close(_input_patching(twin, x, baseline, targets),
                               _input_patching(net, x, baseline, targets), **tol)


class _AtInput(nn.Module):
    """``model`` behind an ``nn.Identity`` at the input: the component for input patching."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.input, self.model = nn.Identity(), model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.input(x))


def _input_patching(model: nn.Module, x: Tensor, baseline: Tensor, targets: Any,
                    mode: str = "activation_patching") -> Tensor:
    """Patching scores of every input element (AtP: per element; exact: one unit each)."""
    wrapped = _AtInput(model)
    if mode == "activation_patching":
        return _exact_per_element(wrapped, x, baseline, targets)
    return RelevancePatching(wrapped, wrapped.input).attribute(
        x, baselines=baseline, target=targets, mode=mode, per_element=True)


def _exact_per_element(wrapped: _AtInput, x: Tensor, baseline: Tensor, targets: Any) -> Tensor:
    """Exact patching of every input element: a ``(N, C·S)`` score per element, reshaped."""

    class Flat(nn.Module):  # one unit per element: per-position component on a flat view
        def __init__(self):
            super().__init__()
            self.unit = nn.Identity()

        def forward(self, v):
            return wrapped.model(self.unit(v.flatten(1)[..., None]).reshape(v.shape))

    flat = Flat()
    scores = RelevancePatching(flat, Component(flat.unit, per_position=True)).attribute(
        x, baselines=baseline, target=targets, mode="activation_patching",
        perturbations_per_eval=256)
    return scores.reshape(x.shape)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets(ranks=(1, 2)))
def test_exact_input_patching_is_sensitive(case):
    """Sensitivity(a) for exact activation patching at the input: ``x`` differs from ``b`` in
    one element; its score is ``F(b) − F(x)`` (non-zero when the output changes), every other
    score is 0 (to rounding: the patched copies run in a larger batch)."""
    net, x, targets = case
    x = x[:1]
    target = targets[:1]
    baseline = x.clone()
    position = (0, 1) + (0,) * (x.dim() - 2)
    baseline[position] = x[position] + 1.5
    scores = _exact_per_element(_AtInput(net), x, baseline, target)
    with torch.no_grad():
        change = float(net(baseline)[0, target[0]] - net(x)[0, target[0]])
    torch.testing.assert_close(float(scores[position]), change, rtol=1e-9, atol=1e-12)
    others = scores.clone()
    others[position] = 0
    assert float(others.abs().max()) <= 1e-12


class Saturated(nn.Module):
    """``F(x) = 1 − ReLU(1 − x)`` of one feature (the IG paper's example)."""

    def forward(self, x: Tensor) -> Tensor:
        v = x[:, 0, :1]
        return (1 - torch.relu(1 - v)).flatten(1) * torch.ones(1, 2, dtype=x.dtype)


def test_gradient_methods_are_not_sensitive():
    """Counterexample to sensitivity(a) for gradient methods: at ``x = 2`` (baseline 0)
    ``F(x) − F(b) = 1`` but the gradient, NormGrad and AtP are all 0."""
    x = torch.full((1, 1, 1), 2.0, dtype=torch.float64)
    assert float(NormGrad(Saturated()).attribute(x, target=0).abs().sum()) == 0.0
    atp = _input_patching(Saturated(), x, torch.zeros_like(x), 0, mode="attribution_patching")
    assert float(atp.abs().sum()) == 0.0


# ---------------------------------------------------------------------- dummy, input space
@SETTINGS
@given(nets())
def test_input_dummy_gradient_methods(case):
    """A region the model multiplies by 0 gets exactly 0 from NormGrad, LearnedPropagation,
    the I-GOS direction and AtP at the input (no path from it to the output); exact patching
    at the input gets 0 to rounding (its patched copies run in a larger batch)."""
    net, x, targets = case
    net.input_mask = _region(x)
    dead = (_region(x) == 0).expand_as(x)
    baseline = torch.zeros_like(x)
    maps = {
        "NormGrad": NormGrad(net).attribute(x, target=targets).expand_as(x),
        "LearnedPropagation": LearnedPropagation(net).attribute(x, target=targets)
        if any(isinstance(m, nn.ReLU) for m in net.modules()) else torch.zeros_like(x),
        "I-GOS direction": igos_direction(net, x, baseline, targets).expand_as(x),
        "AtP": _input_patching(net, x, baseline, targets, mode="attribution_patching"),
    }
    for name, attribution in maps.items():
        assert torch.equal(attribution[dead], torch.zeros_like(attribution[dead])), name
    exact = _input_patching(net, x[:1], baseline[:1], targets[:1])
    assert float(exact[dead[:1]].abs().max()) <= 1e-12


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets(ranks=(1, 2)))
def test_input_dummy_igos_masks_without_tv(case):
    """I-GOS/iGOS++ masks at input resolution with ``tv_weight=0`` keep a disconnected region
    at 1 (saliency 0): its direction is 0 and L1's subgradient at 1 is 0. With TV (the
    default) the smoothing carries mask changes into it, so the dummy axiom is not claimed."""
    net, x, targets = case
    net.input_mask = _region(x)
    dead = (_region(x) == 0).expand_as(x)
    for method in (IGOS(net), IGOSPlusPlus(net)):
        saliency = method.attribute(x, target=targets, mask_size=tuple(x.shape[2:]),
                                    iterations=2, ig_steps=3, tv_weight=0.0, noise_std=0.0,
                                    output="logit")
        assert torch.equal(saliency[dead], torch.zeros_like(saliency[dead]))


@SETTINGS
@given(nets(activations=("relu",), ranks=(1, 2, 3)), st.integers(0, 1))
def test_input_dummy_agf_channel(case, channel):
    """AGF: an input channel the first convolution ignores (zero weights) gets 0 relevance
    (the z^B rule distributes relevance in proportion to the weights)."""
    net, x, targets = case
    with torch.no_grad():
        net.features[0].weight[:, channel] = 0
    relevance = AttributionGuidedFactorization(net).attribute(x, target=targets)
    assert torch.equal(relevance[:, channel], torch.zeros_like(relevance[:, channel]))


# ---------------------------------------------------------------------- dummy, layer methods
_LAYER = {
    "CAM": lambda m: LayerClassActivationMap(m, m.features[-1], m.fc),
    "Grad-CAM++": lambda m: LayerGradCamPlusPlus(m, m.features[-1]),
    "XGrad-CAM": lambda m: LayerXGradCam(m, m.features[-1]),
    "HiResCAM": lambda m: LayerHiResCam(m, m.features[-1]),
    "Layer-CAM": lambda m: LayerLayerCam(m, m.features[-1]),
    "Eigen-CAM": lambda m: LayerEigenCam(m, m.features[-1]),
    "EigenGrad-CAM": lambda m: LayerEigenGradCam(m, m.features[-1]),
    "Score-CAM": lambda m: LayerScoreCam(m, m.features[-1]),
    "SS-CAM": lambda m: LayerSSCam(m, m.features[-1]),
    "IS-CAM": lambda m: LayerISCam(m, m.features[-1]),
    "Ablation-CAM": lambda m: LayerAblationCam(m, m.features[-1]),
    "CF-CAM": lambda m: LayerCFCam(m, m.features[-1]),
    "NormGrad": lambda m: LayerNormGrad(m, m.features[-1]),
    "NormGrad-selective": lambda m: LayerNormGrad(m, m.features[-1]),
}
_LAYER_KWARGS: dict[str, dict[str, Any]] = {
    "SS-CAM": {"n_samples": 2}, "IS-CAM": {"n_steps": 2},
    "NormGrad-selective": {"variant": "selective"},
}
#: methods whose map ignores a channel the head ignores (its weight is 0 whatever the channel).
CHANNEL_DUMMY = {"CAM", "Grad-CAM++", "XGrad-CAM", "HiResCAM", "Layer-CAM", "EigenGrad-CAM",
                 "Ablation-CAM", "NormGrad-selective"}
#: methods whose layer map is 0 where the head ignores the layer (pixel-wise use of G).
REGION_DUMMY = {"HiResCAM", "Layer-CAM", "EigenGrad-CAM", "NormGrad", "NormGrad-selective"}


def _layer_map(name: str, model: nn.Module, x: Tensor, targets: Any) -> Tensor:
    kwargs = dict(_LAYER_KWARGS.get(name, {}))
    if name == "SS-CAM":
        kwargs["generator"] = torch.Generator().manual_seed(0)
    return _LAYER[name](model).attribute(x, target=targets, **kwargs)


def _channel_pair(seed: int) -> tuple[Net, Net, Tensor, list[int]]:
    """Two networks that differ only in the filter of channel 0 of the CAM layer, which the
    head ignores (its weights are 0): the same function, different activations."""
    torch.manual_seed(seed)
    net = Net(2, (3, 4), 3, True, "relu").double().eval()
    twin = Net(2, (3, 4), 3, True, "relu").double().eval()
    twin.load_state_dict(net.state_dict())
    with torch.no_grad():
        net.fc.weight[:, 0] = 0
        twin.fc.weight[:, 0] = 0
        twin.features[-2].weight[0] = torch.randn_like(twin.features[-2].weight[0])
        twin.features[-2].bias[0] = 1.0  # keep channel 0 active
    x = torch.randn((2, 2, 5, 5), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return net, twin, x, [0, 2]


@pytest.mark.parametrize("name", sorted(_LAYER))
@pytest.mark.parametrize("seed", [0, 1])
def test_layer_channel_dummy(name, seed):
    """Channel dummy: the map does not change when a channel the head ignores changes (the
    methods of ``CHANNEL_DUMMY``); the others change, which is recorded in ``AXIOMS.md``:
    Eigen-CAM (class-agnostic principal component), Score-CAM/SS-CAM/IS-CAM (the ignored
    channel still masks the input), CF-CAM (the ignored channel joins the filter clusters
    whose weights are shared), NormGrad (``‖A_u‖`` sums every channel)."""
    net, twin, x, targets = _channel_pair(seed)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x))
    a, b = _layer_map(name, net, x, targets), _layer_map(name, twin, x, targets)
    if name in CHANNEL_DUMMY:
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)
    else:
        assert not torch.allclose(a, b, rtol=1e-4, atol=1e-8)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets(ranks=(1, 2, 3)))
def test_layer_region_dummy(case):
    """Region dummy at layer resolution: where the head multiplies the layer by 0, the maps
    of ``REGION_DUMMY`` (pixel-wise in ``G``, which is 0 there) are 0."""
    net, x, targets = case
    net.layer_mask = _region(x)
    dead = (_region(x) == 0).expand(x.shape[0], 1, *x.shape[2:])
    for name in sorted(REGION_DUMMY):
        cam = _layer_map(name, net, x, targets)
        assert torch.equal(cam[dead], torch.zeros_like(cam[dead])), name


class Pooled(nn.Module):
    """``conv → ReLU → AvgPool(2) → conv → ReLU`` (layer at half resolution) ``→ mask → GAP →
    fc``: the head ignores the right half of the layer grid."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                                      nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)
        self.register_buffer("mask", torch.ones(1, 1, 4, 4))
        self.mask[..., 2:] = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.fc((self.features(x) * self.mask).flatten(2).mean(-1))


def test_region_dummy_at_input_resolution():
    """After bilinear upsampling to the input, HiResCAM's zero region loses the input column
    next to the boundary (column 4 blends layer columns 1 and 2) but stays 0 in columns 5-7;
    Grad-CAM++ (channel weights) is non-zero there at layer resolution already."""
    model, x = Pooled().eval(), torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    hires = upsample_to_input(LayerHiResCam(model, model.features[-1]).attribute(x, target=1), x)
    assert torch.equal(hires[..., 5:], torch.zeros_like(hires[..., 5:]))
    assert hires[..., 4].abs().sum() > 0  # the bleed at the boundary
    grad_pp = LayerGradCamPlusPlus(model, model.features[-1]).attribute(x, target=1)
    assert grad_pp[..., 2:].abs().sum() > 0


# ---------------------------------------------------------------------- linearity (CAM heads)
@SETTINGS
@given(nets(), st.floats(-2, 2), st.floats(-2, 2))
def test_cam_maps_are_linear_in_the_head(case, a, c):
    """CAM, HiResCAM and XGrad-CAM of a GAP + linear head are linear in the head's weights
    (``Σ_k W[c,k]·A_k``, and ``G = W[c]/Z``): the map under ``a·W₁ + c·W₂`` is ``a·map(W₁) +
    c·map(W₂)``. Grad-CAM++ and Layer-CAM ReLU the gradient, so they are not."""
    net, x, targets = case
    heads = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        head = nn.Linear(net.fc.in_features, net.fc.out_features, bias=False).double()
        heads.append(head.weight.detach())
    combined = a * heads[0] + c * heads[1]

    def with_head(weight):
        model = Net(x.dim() - 2, (1,), 2, False, "relu").double()
        model.features, model.fc = net.features, nn.Linear(*weight.shape[::-1], bias=False).double()
        with torch.no_grad():
            model.fc.weight.copy_(weight)
        return model.eval()

    for name in ("CAM", "HiResCAM", "XGrad-CAM"):
        maps = [_layer_map(name, with_head(w), x, targets) for w in (*heads, combined)]
        torch.testing.assert_close(maps[2], a * maps[0] + c * maps[1], rtol=1e-7, atol=1e-10)


@SETTINGS
@given(nets(activations=("relu",)), st.floats(-2, 2), st.floats(-2, 2))
def test_patching_is_linear_in_the_metric(case, a, c):
    """AtP and exact activation patching are linear in the metric ``m``."""
    net, x, targets = case
    layer, baseline = net.features[-1], 0.5 * x
    rows = torch.arange(x.shape[0])
    first, second = torch.tensor(targets), (torch.tensor(targets) + 1) % net.fc.out_features
    for mode in ("attribution_patching", "activation_patching"):
        method = RelevancePatching(net, layer)

        def score(metric):
            return method.attribute(x, baselines=baseline, metric=metric, mode=mode)

        s1 = score(lambda out: out[rows, first])
        s2 = score(lambda out: out[rows, second])
        both = score(lambda out: a * out[rows, first] + c * out[rows, second])
        torch.testing.assert_close(both, a * s1 + c * s2, rtol=1e-7, atol=1e-10)


# ---------------------------------------------------------------------- batch invariance
_INPUT_METHODS = {
    "NormGrad": lambda m, x, t: NormGrad(m).attribute(x, target=t),
    "LearnedPropagation": lambda m, x, t: LearnedPropagation(m).attribute(x, target=t),
    "AGF": lambda m, x, t: AttributionGuidedFactorization(m).attribute(x, target=t),
    "RelP": lambda m, x, t: RelevancePatching(m, m.features[-1]).attribute(
        x, baselines=0.5 * x, target=t),
    "AtP": lambda m, x, t: RelevancePatching(m, m.features[-1]).attribute(
        x, baselines=0.5 * x, target=t, mode="attribution_patching"),
    "activation patching": lambda m, x, t: RelevancePatching(m, m.features[-1]).attribute(
        x, baselines=0.5 * x, target=t, mode="activation_patching"),
}


@SETTINGS
@given(nets(activations=("relu",)), st.sampled_from(sorted(_INPUT_METHODS)))
def test_input_space_batch_invariance(case, name):
    """Every input-space method: a batch equals its stacked single examples."""
    net, x, targets = case
    run = _INPUT_METHODS[name]
    batched = run(net, x, targets)
    singles = torch.cat([run(net, x[i:i + 1], [t]) for i, t in enumerate(targets)])
    torch.testing.assert_close(batched, singles, rtol=1e-7, atol=1e-10)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets(ranks=(1, 2)), st.integers(0, 2**31 - 1))
def test_igos_batch_invariance_and_determinism(case, seed):
    """I-GOS and iGOS++ with one generator per example: the batch equals the examples run one
    at a time with the same generators, and the same seeds give the same masks."""
    net, x, targets = case

    def gens(offset=0):
        return [torch.Generator().manual_seed(seed + offset + i) for i in range(x.shape[0])]

    kwargs = dict(mask_size=3, iterations=2, ig_steps=2, noise_std=0.2)
    for cls in (IGOS, IGOSPlusPlus):
        batched = cls(net).attribute(x, target=targets, generator=gens(), **kwargs)
        singles = torch.cat([
            cls(net).attribute(x[i:i + 1], target=[t], generator=[g], **kwargs)
            for i, (t, g) in enumerate(zip(targets, gens()))])
        torch.testing.assert_close(batched, singles, rtol=1e-7, atol=1e-10)
        again = cls(net).attribute(x, target=targets, generator=gens(), **kwargs)
        assert torch.equal(batched, again)


# ---------------------------------------------------------------------- determinism
def _single_net() -> tuple[Net, Tensor]:
    torch.manual_seed(0)
    net = Net(2, (3, 4), 3, True, "relu").eval()
    return net, torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(0))


def test_randomised_methods_are_deterministic_given_a_generator():
    """SS-CAM, SAG's I-GOS ranking and ``count_sub_explanations``: the same seed gives the
    same result, run twice."""
    net, x = _single_net()

    def sscam(seed):
        return LayerSSCam(net, net.features[-1]).attribute(
            x, target=1, n_samples=3, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sscam(5), sscam(5)) and not torch.equal(sscam(5), sscam(6))

    def sag(seed):
        return StructuredAttentionGraph(net).search(
            x, target=1, grid=2, ranking_kwargs={"ig_steps": 3},
            generator=torch.Generator().manual_seed(seed))

    first, second = sag(3), sag(3)
    assert torch.equal(first.ranking, second.ranking)
    assert first.dnf == second.dnf and len(first.nodes) == len(second.nodes)

    def count(seed):
        return count_sub_explanations(net, x, 1, grid=2, ranking_kwargs={"ig_steps": 3},
                                      generator=torch.Generator().manual_seed(seed)).counts

    assert torch.equal(count(4), count(4))
