"""I-GOS and iGOS++: oracle steps on linear models, a planted region, the line search, batch
independence, ranks, tuples, no trace and errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captum_ext.attr import IGOS, IGOSPlusPlus

FAST = dict(iterations=3, ig_steps=3, mask_size=4)


class RegionModel(nn.Module):
    """Two logits ``[s, -s]`` with ``s = w · mean(x[:, 0, region])``: only the region matters."""

    def __init__(self, rank: int, region: slice = slice(4, 8), weight: float = 4.0) -> None:
        super().__init__()
        self.index = (slice(None), 0) + (region,) * rank
        self.weight = weight
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        s = self.weight * self.scale * x[self.index].flatten(1).mean(1)
        return torch.stack([s, -s], 1)


class Linear(nn.Module):
    """``logit = Σ w ⊙ x`` (one output per example)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.weight).flatten(1).sum(1)


def _image(rank: int, batch: int = 1, side: int = 12, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 2) + (side,) * rank, generator=g) + 0.5


def _gens(n: int, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


# ---------------------------------------------------------------------- oracles
def _armijo_step(loss, grad: Tensor, init: float = 1000.0) -> float:
    """The official rule, by hand: largest α = init · 0.2^j with L(clamp(1 - αg)) <= L(1) - c α |g|²."""
    start, slope, alpha = loss(torch.ones_like(grad)), -1e-4 * grad.pow(2).sum(), init
    while alpha >= 1e-5 * 0.2:
        if loss((1 - alpha * grad).clamp(0, 1)) <= start + alpha * slope:
            return alpha
        alpha *= 0.2
    return 0.0


def test_igos_first_iteration_matches_the_integrated_gradient_by_hand() -> None:
    g = torch.Generator().manual_seed(3)
    weight, x = torch.randn(1, 2, 6, generator=g), torch.randn(1, 2, 6, generator=g)
    b = torch.zeros_like(x)
    k = 5
    # S_IG(M) = (1/K) Σ_k w·(b + α_k M ⊙ (x - b)); at M = 1 the L1 and TV gradients vanish.
    ig = ((k + 1) / (2 * k)) * (weight * (x - b)).sum(1, keepdim=True)

    def loss(m: Tensor) -> Tensor:
        path = sum((weight * (b + (i / k) * m * (x - b))).sum() for i in range(1, k + 1)) / k
        tv = (m.diff(dim=-1) ** 2).mean()
        return path + 1.0 * (1 - m).abs().mean() + 20.0 * tv

    alpha = _armijo_step(loss, ig)
    method = IGOS(Linear(weight))
    _, mask = method.attribute(x, baselines=b, output="logit", mask_size=6, iterations=1,
                               ig_steps=k, noise_std=0.0, return_masks=True)
    trace = method.last_trace
    assert trace.step_sizes[0, 0].item() == pytest.approx(alpha)
    torch.testing.assert_close(mask, (1 - alpha * ig).clamp(0, 1))
    torch.testing.assert_close(trace.loss_before[0, 0], loss(torch.ones_like(ig)))


def test_igos_plus_plus_first_iteration_by_hand() -> None:
    g = torch.Generator().manual_seed(4)
    weight, x = torch.randn(1, 1, 5, generator=g), torch.randn(1, 1, 5, generator=g)
    b = torch.full_like(x, 0.5)
    k = 4
    a_bar = (k + 1) / (2 * k)
    c = weight * (x - b)
    # G = ½[S_del(Md·Mi) - S_ins(Md·Mi) + S_del(Md) - S_ins(Mi)]: at Md = Mi = 1 both
    # directions are ½ · 3 · ā · c (S_ins = w·x - ā Σ w ⊙ M ⊙ (x - b)).
    direction = 1.5 * a_bar * c

    def loss(m: Tensor) -> Tensor:  # both masks move equally: Md = Mi = m
        s_del = lambda mm: (weight * b).sum() + a_bar * (c * mm).sum()  # noqa: E731
        s_ins = lambda mm: (weight * x).sum() - a_bar * (c * mm).sum()  # noqa: E731
        prod = m * m
        btv = 0.5 * ((prod.diff(dim=-1) ** 2).mean() + (torch.exp(-(x.diff(dim=-1) ** 2) / 0.01)
                                                        * prod.diff(dim=-1) ** 2).mean())
        reg = (1 - prod).abs().mean() + 20.0 * btv
        return s_del(m) - s_ins(m) + s_del(prod) - s_ins(prod) + reg

    slope_grad = torch.cat([direction, direction])  # |g|² counts both masks
    start = loss(torch.ones_like(x))
    alpha = 1000.0
    while not loss((1 - alpha * direction).clamp(0, 1)) <= start - 1e-4 * alpha * slope_grad.pow(2).sum():
        alpha *= 0.2
    method = IGOSPlusPlus(Linear(weight))
    _, mask = method.attribute(x, baselines=b, output="logit", mask_size=5, iterations=1,
                               ig_steps=k, noise_std=0.0, return_masks=True)
    trace = method.last_trace
    assert trace.step_sizes[0, 0].item() == pytest.approx(alpha)
    deletion_mask, insertion_mask = trace.variables
    torch.testing.assert_close(deletion_mask, (1 - alpha * direction).clamp(0, 1))
    torch.testing.assert_close(insertion_mask, (1 - alpha * direction).clamp(0, 1))
    torch.testing.assert_close(mask, deletion_mask * insertion_mask)


# ---------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("method_class", [IGOS, IGOSPlusPlus])
def test_finds_the_only_region_that_matters(method_class) -> None:
    x = _image(2, side=16)
    model = RegionModel(2).eval()
    saliency = method_class(model).attribute(x, target=0, baselines=0.0, mask_size=8,
                                             iterations=8, ig_steps=6, tv_weight=1.0,
                                             generator=_gens(1))
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:8, 4:8] = True
    heat = saliency[0, 0]
    assert heat[inside].mean() > 0.8
    assert heat[inside].mean() > 3 * heat[~inside].mean()
    # the saliency's centre of mass lies in the region (rows and columns 4..7).
    coords = torch.arange(16.0)
    centre = [(heat.sum(1) * coords).sum() / heat.sum(), (heat.sum(0) * coords).sum() / heat.sum()]
    assert all(4 <= float(c) <= 7 for c in centre)


@pytest.mark.parametrize("method_class", [IGOS, IGOSPlusPlus])
def test_line_search_never_increases_the_objective(method_class) -> None:
    model = RegionModel(2).eval()
    x = _image(2, batch=2, side=16)
    method = method_class(model)
    method.attribute(x, target=0, mask_size=8, iterations=6, ig_steps=4, noise_std=0.0,
                     early_stop_tol=None)
    trace = method.last_trace
    ran = ~torch.isnan(trace.loss_before)
    assert bool((trace.loss_after[ran] <= trace.loss_before[ran] + 1e-6).all())
    # without noise the loss is a function of the mask: the next start is the last accepted.
    both = ran[:, 1:] & ran[:, :-1]
    torch.testing.assert_close(trace.loss_before[:, 1:][both], trace.loss_after[:, :-1][both],
                               atol=1e-5, rtol=1e-5)
    assert bool((trace.step_sizes[ran] >= 0).all())
    # with noise, each accepted step still lowers the loss under its iteration's noise.
    method.attribute(x, target=0, mask_size=8, iterations=4, ig_steps=4, generator=_gens(2))
    trace = method.last_trace
    ran = ~torch.isnan(trace.loss_before)
    assert bool((trace.loss_after[ran] <= trace.loss_before[ran] + 1e-6).all())


@pytest.mark.parametrize("method_class", [IGOS, IGOSPlusPlus])
def test_batch_equals_examples_one_at_a_time(method_class) -> None:
    model = RegionModel(2).eval()
    x = _image(2, batch=3, side=10)
    target = [0, 1, 0]
    kwargs = dict(mask_size=5, iterations=4, ig_steps=3, return_masks=True)
    _, batched = method_class(model).attribute(x, target=target, generator=_gens(3), **kwargs)
    chunked = method_class(model).attribute(x, target=target, generator=_gens(3),
                                            internal_batch_size=5, **kwargs)[1]
    for i in range(3):
        _, single = method_class(model).attribute(x[i:i + 1], target=target[i],
                                                  generator=_gens(1, seed=i), **kwargs)
        torch.testing.assert_close(batched[i:i + 1], single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched, chunked, atol=1e-5, rtol=1e-5)


def test_generator_makes_runs_reproducible_and_noise_matters() -> None:
    model = RegionModel(1).eval()
    x = _image(1, batch=2)
    run = lambda seed: IGOS(model).attribute(  # noqa: E731
        x, target=0, generator=torch.Generator().manual_seed(seed), noise_std=1.0, **FAST)
    torch.testing.assert_close(run(1), run(1), rtol=0, atol=0)
    assert not torch.equal(run(1), run(2))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("method_class", [IGOS, IGOSPlusPlus])
def test_ranks_shapes_and_tuples(rank: int, method_class) -> None:
    model = RegionModel(rank, region=slice(1, 3)).eval()
    x = _image(rank, batch=2, side=5)
    saliency, masks = method_class(model).attribute(x, target=0, return_masks=True,
                                                    generator=_gens(2), **FAST)
    assert saliency.shape == x.shape and masks.shape == (2, 1) + (4,) * rank
    assert bool(((saliency >= 0) & (saliency <= 1)).all())
    torch.testing.assert_close(saliency, saliency[:, :1].expand_as(saliency))  # channel-broadcast
    # a tuple of two tensors: one mask each, tuple out.
    pair = lambda a, b: model(a + b)  # noqa: E731
    out = method_class(pair).attribute((x, x * 0.5), target=0, generator=_gens(2), **FAST)
    assert isinstance(out, tuple) and [o.shape for o in out] == [x.shape, x.shape]


def test_mask_size_tuple_clamps_and_full_resolution() -> None:
    model = RegionModel(2).eval()
    x = _image(2, side=6)
    _, masks = IGOS(model).attribute(x, target=0, mask_size=(3, 50), iterations=2, ig_steps=2,
                                     return_masks=True)
    assert masks.shape == (1, 1, 3, 6)


@pytest.mark.parametrize("method_class", [IGOS, IGOSPlusPlus])
def test_no_trace_and_no_grad(method_class) -> None:
    model = RegionModel(2).train()
    model.scale.grad = torch.full((1,), 7.0)
    x = _image(2, side=8).requires_grad_(True)
    before = x.detach().clone()
    with torch.no_grad():
        saliency = method_class(model).attribute(x, target=0, **FAST)
    assert model.training and model.scale.requires_grad
    assert torch.equal(model.scale.grad, torch.full((1,), 7.0))
    assert torch.equal(x.detach(), before) and x.requires_grad and x.grad is None
    assert not saliency.requires_grad
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_parameters_restored_after_an_exception() -> None:
    class Failing(RegionModel):
        calls = 0

        def forward(self, x: Tensor) -> Tensor:
            Failing.calls += 1
            if Failing.calls > 2:
                raise RuntimeError("boom")
            return super().forward(x)

    model = Failing(2)
    with pytest.raises(RuntimeError, match="boom"):
        IGOS(model).attribute(_image(2, side=8), target=0, **FAST)
    assert model.scale.requires_grad


def test_captum_interop() -> None:
    method = IGOS(RegionModel(2).eval())
    assert method.multiplies_by_inputs is False and method.has_convergence_delta() is False
    with pytest.raises(NotImplementedError):
        method.attribute_future(_image(2))
    assert hasattr(IGOS.attribute, "__wrapped__") and hasattr(IGOSPlusPlus.attribute, "__wrapped__")


def test_default_target_top1_and_default_blur_baseline() -> None:
    model = RegionModel(2).eval()
    x = _image(2, side=16)
    kwargs = dict(noise_std=0.0, **FAST)
    torch.testing.assert_close(IGOS(model).attribute(x, **kwargs),
                               IGOS(model).attribute(x, target=0, **kwargs))
    from captum_ext._blur import igos_blur

    torch.testing.assert_close(IGOS(model).attribute(x, target=0, **kwargs),
                               IGOS(model).attribute(x, igos_blur(x), target=0, **kwargs))


def test_errors() -> None:
    model = RegionModel(2).eval()
    x = _image(2, side=8)
    method = IGOS(model)
    with pytest.raises(ValueError, match="add a channel dim"):
        method.attribute(x.flatten(1), target=0)
    with pytest.raises(ValueError, match="mask_size"):
        method.attribute(x, target=0, mask_size=(2, 2, 2))
    with pytest.raises(ValueError, match="profile"):
        method.attribute(x, target=0, profile="vgg")
    with pytest.raises(ValueError, match="line_search_loss"):
        method.attribute(x, target=0, line_search_loss="exact")
    with pytest.raises(ValueError, match="decay"):
        method.attribute(x, target=0, decay=1.5)
    with pytest.raises(ValueError, match="iterations"):
        method.attribute(x, target=0, iterations=0)
    with pytest.raises(ValueError, match="out of range"):
        method.attribute(x, target=5)
    with pytest.raises(ValueError, match="baselines"):
        method.attribute(x, torch.zeros(1, 2, 4, 4), target=0)
    with pytest.raises(ValueError, match="generator"):
        method.attribute(x, target=0, generator=_gens(3))
    with pytest.raises(ValueError, match="softmax"):
        IGOS(Linear(torch.ones(1, 2, 8, 8))).attribute(x)
    with pytest.raises(TypeError, match="dtype"):
        method.attribute(x.long(), target=0)


def test_aaai_profile_runs_the_plain_line_search_and_adaptive_l1() -> None:
    model = RegionModel(2).eval()
    x = _image(2, side=16)
    method = IGOS(model)
    method.attribute(x, target=0, profile="aaai", mask_size=4, iterations=4, ig_steps=3,
                     generator=_gens(1), early_stop_tol=None)
    trace = method.last_trace
    assert trace.step_sizes[0, 0] <= 200.0
    # the plain loss costs one forward per trial and per start: fewer than the path loss.
    path = IGOS(model)
    path.attribute(x, target=0, mask_size=4, iterations=4, ig_steps=3, generator=_gens(1),
                   early_stop_tol=None)
    assert trace.forward_images < path.last_trace.forward_images


def test_regularisers_by_hand() -> None:
    from captum_ext.attr._mask_regularisers import bilateral_tv, edge_weights, l1_term, tv_term

    mask = torch.tensor([[[[1.0, 0.5], [0.0, 1.0]]]])  # (1, 1, 2, 2)
    # vertical diffs: -1, 0.5; horizontal: -0.5, 1 → TV_2 = mean(1, .25) + mean(.25, 1)
    torch.testing.assert_close(tv_term(mask, 2.0), torch.tensor([1.25]))
    torch.testing.assert_close(tv_term(mask, 1.0), torch.tensor([1.5]))
    torch.testing.assert_close(l1_term(mask), torch.tensor([0.375]))
    # 3D: one axis of size 1 is skipped, the others count.
    cube = torch.arange(8.0).view(1, 1, 2, 4, 1)
    torch.testing.assert_close(tv_term(cube, 2.0), torch.tensor([16.0 + 1.0]))
    # edge weights: channel 0 differs by 0.1 vertically, channel 1 by 0.3.
    image = torch.zeros(1, 2, 2, 1)
    image[0, 0, 1, 0], image[0, 1, 1, 0] = 0.1, 0.3
    symmetric = edge_weights(image, sigma=0.01)[0]
    official = edge_weights(image, sigma=0.01, official=True)[0]
    e = torch.exp
    torch.testing.assert_close(symmetric, ((e(torch.tensor(-1.0)) + e(torch.tensor(-9.0))) / 2
                                           ).view(1, 1, 1, 1))
    torch.testing.assert_close(official, e(torch.tensor(-4.0)).view(1, 1, 1, 1))  # mean 0.2
    # BTV = ½ (low-res TV + Σ mean w ⊙ (ΔU)²), squares throughout.
    low = torch.tensor([[[[1.0], [0.0]]]])
    up = torch.tensor([[[[1.0], [0.0]]]])
    btv = bilateral_tv(low, up, [symmetric])
    torch.testing.assert_close(btv, 0.5 * (1.0 + symmetric.view(1)))


@pytest.mark.parametrize("method_class", [IGOS, IGOSPlusPlus])
def test_stops_after_two_iterations_without_progress(method_class) -> None:
    """A model whose score does not depend on the input gives no decrease: the optimiser stops
    after two iterations instead of running all of them (the mask stays at its start)."""

    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([0.0, 1.0]))

        def forward(self, x: Tensor) -> Tensor:
            return self.bias.expand(x.shape[0], 2) + 0 * x.flatten(1).sum(1, keepdim=True)

    method = method_class(Constant().eval())
    saliency = method.attribute(_image(2, batch=1), target=0, generator=_gens(1), iterations=8,
                                ig_steps=3, mask_size=4)
    assert method.last_trace.iterations_run.tolist() == [2]
    assert bool(torch.isfinite(saliency).all())
