"""CF-CAM checked step by step (tiers, eps, min_samples, DBSCAN labels, the filter, the final
weights), the per-example plumbing, and class discrimination on the real EfficientNet-Lite0."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from captum_ext.attr import LayerCFCam
from captum_ext.attr.cf_cam import cf_cam_channel_weights, cluster_filter, filter_kernels
from tests._helpers import assert_unchanged, conv_input, conv_model, hook_count, snapshot

RANKS = [1, 2, 3]


def percentile(values, q):
    """numpy's default (linear) percentile, written out."""
    ordered = sorted(values)
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def designed_example():
    """12 channels on a 2×2 map: 3 strong channels (tier 1), two groups of 4 channels that are
    regular simplices (all within-group distances equal) far apart, and one outlier."""
    eye = torch.eye(4, dtype=torch.float64)
    strong = torch.tensor([[50.0, 0, 0, 0], [0, 60.0, 0, 0], [0, 0, 70.0, 0]], dtype=torch.float64)
    group_a = 0.5 * eye + 1.0
    group_b = 0.5 * eye - 3.0
    outlier = torch.tensor([[0.0, 0.0, 12.0, -9.0]], dtype=torch.float64)
    # Interleave so that the groups are not contiguous channel ranges.
    rows = [strong[0], group_a[0], group_b[0], outlier[0], group_a[1], strong[1], group_b[1],
            group_a[2], group_b[2], group_a[3], strong[2], group_b[3]]
    activation = torch.stack(rows).reshape(12, 2, 2)
    gradient = torch.randn(12, 2, 2, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64) * 0.05
    return activation, gradient


STRONG, GROUP_A, GROUP_B, OUTLIER = [0, 5, 10], [1, 4, 7, 9], [2, 6, 8, 11], [3]


def hand_code_filter(grid, sigma_s=5.0, sigma_r=0.1):
    """The code's filter on a 2×2 map, by loops: kernel, normalise, zero-padded 'same'
    cross-correlation (an even kernel pads 0 before and 1 after)."""
    h, w = grid.shape
    mean = grid.mean()
    kernel = torch.zeros(h, w, dtype=grid.dtype)
    for y in range(h):
        for x in range(w):
            spatial = math.exp(-((y - h / 2) ** 2 + (x - w / 2) ** 2) / (2 * sigma_s**2))
            kernel[y, x] = spatial * torch.exp(-((grid[y, x] - mean) ** 2) / (2 * sigma_r**2))
    kernel = kernel / kernel.sum()
    out = torch.zeros_like(grid)
    for y in range(h):
        for x in range(w):
            for i in range(h):
                for j in range(w):
                    if y + i < h and x + j < w:
                        out[y, x] += kernel[i, j] * grid[y + i, x + j]
    return out, kernel


def test_steps_one_by_one():
    activation, gradient = designed_example()
    steps = cf_cam_channel_weights(activation, gradient, weight_norm="softmax")
    norms = [float(row.norm()) for row in activation.reshape(12, -1)]
    torch.testing.assert_close(steps.norms, torch.tensor(norms, dtype=torch.float64))
    # Tier 1: norm >= P75 (linear interpolation).
    threshold = percentile(norms, 75)
    assert steps.important.tolist() == [n >= threshold for n in norms]
    assert steps.important.nonzero().squeeze(1).tolist() == STRONG
    # eps: P25 of the off-diagonal distances among the other 9 channels (both triangles).
    rest = [k for k in range(12) if k not in STRONG]
    flat = activation.reshape(12, -1)
    distances = [float((flat[i] - flat[j]).norm()) for i in rest for j in rest if i != j]
    assert len(distances) == 72
    assert steps.eps == pytest.approx(max(percentile(distances, 25), 1e-5), rel=1e-12)
    assert steps.eps == pytest.approx(0.5 * math.sqrt(2), rel=1e-12)  # the simplex edge
    assert steps.min_samples == max(2, math.floor(0.05 * 9)) == 2
    # DBSCAN labels: the two groups are clusters (numbered by first channel), the outlier noise.
    expected_labels = [-2] * 12
    for k in GROUP_A:
        expected_labels[k] = 0
    for k in GROUP_B:
        expected_labels[k] = 1
    expected_labels[OUTLIER[0]] = -1
    assert steps.labels.tolist() == expected_labels
    # Raw weights: Grad-CAM on tier 1, the filtered cluster mean gradient on the clusters.
    raw = torch.zeros(12, dtype=torch.float64)
    for k in STRONG:
        raw[k] = gradient[k].mean()
    for group in (GROUP_A, GROUP_B):
        filtered, _ = hand_code_filter(gradient[group].mean(0))
        raw[group] = filtered.mean()
    torch.testing.assert_close(steps.raw_weights, raw)
    # Final weights: softmax over the kept channels, 0 for the noise channel.
    kept = [k for k in range(12) if k not in OUTLIER]
    expected = torch.zeros(12, dtype=torch.float64)
    expected[kept] = torch.softmax(raw[kept], 0)
    torch.testing.assert_close(steps.weights, expected)


@pytest.mark.parametrize(
    "weight_norm, temperature",
    [("softmax_standardized", 1.0), ("softmax_standardized", 0.5), ("softmax_temperature", 0.01),
     ("none", 1.0)],
)
def test_weight_norms(weight_norm, temperature):
    activation, gradient = designed_example()
    steps = cf_cam_channel_weights(activation, gradient, weight_norm=weight_norm,
                                   temperature=temperature)
    kept = steps.labels != -1
    raw = steps.raw_weights[kept]
    if weight_norm == "none":
        expected = raw
    elif weight_norm == "softmax_temperature":
        expected = torch.softmax(raw / temperature, 0)
    else:
        z = (raw - raw.mean()) / raw.std(unbiased=False)
        expected = torch.softmax(z / temperature, 0)
    torch.testing.assert_close(steps.weights[kept], expected)
    assert (steps.weights[~kept] == 0).all()


@pytest.mark.parametrize("shape", [(7, 7), (6, 6), (5,), (3, 4, 4)])
def test_filter_kernels_sum_to_one_and_follow_the_formula(shape):
    maps = torch.randn((2,) + shape, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64) * 0.1
    kernels = filter_kernels(maps, "code")
    torch.testing.assert_close(kernels.flatten(1).sum(1), torch.ones(2, dtype=torch.float64))
    gaussian = filter_kernels(maps, "gaussian", gaussian_sigma=1.5)
    torch.testing.assert_close(gaussian.flatten(1).sum(1), torch.ones(2, dtype=torch.float64))
    # the code's kernel: a Gaussian centred at S/2 times the range term, normalised
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) - s / 2 for s in shape],
                           indexing="ij")
    spatial = torch.exp(-sum(g * g for g in grids) / 50.0)
    for m, kernel in zip(maps, kernels):
        expected = spatial * torch.exp(-((m - m.mean()) ** 2) / 0.02)
        torch.testing.assert_close(kernel, expected / expected.sum())


def test_filter_matches_the_loop_and_none_is_identity():
    maps = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    filtered = cluster_filter(maps * 0.05, "code")
    for got, m in zip(filtered, maps * 0.05):
        torch.testing.assert_close(got, hand_code_filter(m)[0])
    torch.testing.assert_close(cluster_filter(maps, "none"), maps)


def gradients_by_hand(model, x, target):
    store = {}
    layer = model.features[-1]
    handle = layer.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        out = model(x)
        (grad,) = torch.autograd.grad(out[torch.arange(x.shape[0]), target].sum(), store["a"])
    finally:
        handle.remove()
    return store["a"].detach(), grad


@pytest.mark.parametrize("rank", RANKS)
def test_map_is_the_per_example_weighted_sum(rank):
    model, x = conv_model(rank, channels=(6, 24)), conv_input(rank)
    target = [1, 4, 0]
    out = LayerCFCam(model, model.features[-1]).attribute(x, target=target)
    activation, gradient = gradients_by_hand(model, x, target)
    expected = torch.stack([
        (cf_cam_channel_weights(a, g).weights.reshape((-1,) + (1,) * rank) * a).sum(0, keepdim=True)
        for a, g in zip(activation, gradient)
    ])
    assert out.shape == (3, 1) + (5,) * rank
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    singles = torch.cat([
        LayerCFCam(model, model.features[-1]).attribute(x[i : i + 1], target=t)
        for i, t in enumerate(target)
    ])
    torch.testing.assert_close(out, singles, rtol=1e-5, atol=1e-6)


def test_rank_two_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    out = LayerCFCam(model, model[1]).attribute(torch.randn(3, 4), target=2)
    assert out.shape == (3, 1) and torch.isfinite(out).all()


def test_softmax_weighting_is_uniform_and_warns_on_a_gap_head():
    # 16×16 positions: logit gradients are W[c, k] / 256, so softmax(ŵ) is uniform to ~1e-3.
    model, x = conv_model(2, channels=(6, 24)), conv_input(2, size=16)
    method = LayerCFCam(model, model.features[-1])
    with pytest.warns(UserWarning, match="uniform"):
        a = method.attribute(x, target=0, weight_norm="softmax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = method.attribute(x, target=3, weight_norm="softmax")
    torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)  # class-agnostic, as §12 predicts
    c = method.attribute(x, target=0)
    d = method.attribute(x, target=3)
    assert (c - d).abs().max() > 0.1 * c.abs().max()


def test_no_trace_and_errors():
    model, x = conv_model(2), conv_input(2)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before = snapshot(model, (x,))
    LayerCFCam(model, model.features[-1]).attribute(x, target=[0, 1, 2])
    assert_unchanged(model, (x,), before)
    method = LayerCFCam(model, model.features[-1])
    for kwargs, message in [
        (dict(weight_norm="sigmoid"), "weight_norm"),
        (dict(filter="bilateral"), "filter"),
        (dict(temperature=0.0), "temperature"),
        (dict(importance_percentile=120.0), "importance_percentile"),
        (dict(min_samples_fraction=-0.1), "min_samples_fraction"),
    ]:
        with pytest.raises(ValueError, match=message):
            method.attribute(x, target=0, **kwargs)
    assert hook_count(model) == 0


def _correlation(a, b):
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.real_model
def test_class_discrimination_on_efficientnet_lite0():
    """Cat photo, top-1 class 285 (Egyptian cat) against 967 (espresso), layer ``_bn1``.

    One forward and backward pass gives both classes' gradients; every weighting is then
    applied to them, and the default is also run through ``LayerCFCam.attribute``. Measured
    correlations of the raw maps: softmax 1.000 and softmax_temperature (τ = 1) 1.000, i.e.
    class-agnostic as §12 predicts; softmax_standardized -0.36; none -0.39.
    """
    from captum_ext.datasets import load_photo
    from captum_ext.models import load_efficientnet_lite0, preprocess_imagenet

    model = load_efficientnet_lite0()
    pair = preprocess_imagenet(load_photo("chelsea")).expand(2, -1, -1, -1)
    store = {}
    handle = model._bn1.register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        logits = model(pair)
        (gradient,) = torch.autograd.grad(logits[0, 285] + logits[1, 967], store["a"])
    finally:
        handle.remove()
    assert int(logits[0].argmax()) == 285
    activation = store["a"].detach()
    correlations = {}
    maps = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for weight_norm in ("softmax", "softmax_temperature", "softmax_standardized", "none"):
            maps[weight_norm] = [
                (cf_cam_channel_weights(a, g, weight_norm=weight_norm).weights[:, None, None] * a)
                .sum(0, keepdim=True)
                for a, g in zip(activation, gradient)
            ]
            correlations[weight_norm] = _correlation(*maps[weight_norm])
    assert correlations["softmax"] > 0.99
    assert correlations["softmax_temperature"] > 0.99  # τ = 1 is the code's softmax
    assert correlations["softmax_standardized"] < 0.5  # the default: class-discriminative
    assert correlations["none"] < 0.5
    default = LayerCFCam(model, model._bn1).attribute(pair, target=[285, 967])
    torch.testing.assert_close(default, torch.stack(maps["softmax_standardized"]),
                               rtol=1e-4, atol=1e-4)
