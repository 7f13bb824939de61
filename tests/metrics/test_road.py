"""ROAD: the noisy linear imputation against exact solves, the orderings, and the curves."""

from __future__ import annotations

import itertools

import pytest
import torch

from captum_ext.metrics import noisy_linear_imputation, road
from captum_ext.metrics.road import neighbour_sum, removal_masks


def exact_imputation(x: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """ROAD's system, assembled pixel by pixel and solved densely (any rank, small sizes).

    Weights: 1/6 for a neighbour that differs in one coordinate, 1/12 in two, 1/24 in three.
    """
    out = x.clone().double()
    spatial = x.shape[2:]
    offsets = [o for o in itertools.product((-1, 0, 1), repeat=len(spatial)) if any(o)]
    for n in range(x.shape[0]):
        holes = [p for p in itertools.product(*map(range, spatial)) if removed[(n, 0) + p]]
        index = {p: k for k, p in enumerate(holes)}
        a = torch.zeros(len(holes), len(holes), dtype=torch.float64)
        b = torch.zeros(len(holes), x.shape[1], dtype=torch.float64)
        for p, k in index.items():
            for o in offsets:
                q = tuple(pi + oi for pi, oi in zip(p, o))
                if not all(0 <= qi < si for qi, si in zip(q, spatial)):
                    continue
                weight = (1 / 6) / 2 ** (sum(map(abs, o)) - 1)
                a[k, k] += weight
                if q in index:
                    a[k, index[q]] -= weight
                else:
                    b[k] += weight * x[(n, slice(None)) + q].double()
        solution = torch.linalg.solve(a, b)
        for p, k in index.items():
            out[(n, slice(None)) + p] = solution[k]
    return out


def test_neighbour_weights():
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 1, 1] = 1.0
    expected = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
    torch.testing.assert_close(neighbour_sum(image)[0, 0], expected)
    volume = torch.zeros(1, 1, 3, 3, 3)
    volume[0, 0, 1, 1, 1] = 1.0
    around = neighbour_sum(volume)[0, 0]
    assert around[0, 0, 0] == pytest.approx(1 / 24) and around[0, 1, 1] == pytest.approx(1 / 6)
    assert around[0, 0, 1] == pytest.approx(1 / 12) and around[1, 1, 1] == 0


def test_1d_is_linear_interpolation():
    x = torch.tensor([[[0.0, 9.0, 9.0, 3.0, 5.0, 9.0]]])
    removed = torch.tensor([[[False, True, True, False, False, True]]])
    out = noisy_linear_imputation(x, removed, noise_std=0.0)
    # interior holes: the line from 0 to 3; the last pixel copies its only neighbour (5)
    torch.testing.assert_close(out, torch.tensor([[[0.0, 1.0, 2.0, 3.0, 5.0, 5.0]]]))


@pytest.mark.parametrize("shape", [(2, 3, 11), (2, 3, 9, 7), (1, 2, 5, 4, 6)])
def test_matches_exact_solve(shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator)
    removed = torch.rand((shape[0], 1) + shape[2:], generator=generator) < 0.6
    out = noisy_linear_imputation(x, removed, noise_std=0.0)
    torch.testing.assert_close(out.double(), exact_imputation(x, removed), atol=1e-4, rtol=0)
    kept = ~removed.expand_as(x)
    assert torch.equal(out[kept], x[kept])


@pytest.mark.parametrize("shape", [(40,), (24, 24), (10, 9, 8)])
def test_large_hole_within_tolerance(shape):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand((1, 1) + shape, generator=generator)
    removed = torch.zeros((1, 1) + shape, dtype=torch.bool)
    removed[(0, 0) + tuple(slice(1, s - 2) for s in shape)] = True  # one large hole
    out = noisy_linear_imputation(x, removed, noise_std=0.0)  # uses the coarse-grid start
    torch.testing.assert_close(out.double(), exact_imputation(x, removed), atol=1e-4, rtol=0)


def test_noise_is_seeded_and_has_the_right_scale():
    x = torch.rand(2, 3, 32, 32)
    removed = torch.rand(2, 1, 32, 32) < 0.5
    clean = noisy_linear_imputation(x, removed, noise_std=0.0)
    first = noisy_linear_imputation(x, removed, generator=torch.Generator().manual_seed(3))
    second = noisy_linear_imputation(x, removed, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    holes = removed.expand_as(x)
    noise = (first - clean)[holes]
    assert 0.009 < float(noise.std()) < 0.011
    assert torch.equal(first[~holes], x[~holes])


def test_everything_removed_gives_zeros_and_input_untouched():
    x = torch.rand(1, 2, 6, 6)
    before = x.clone()
    out = noisy_linear_imputation(x, torch.ones(1, 1, 6, 6, dtype=torch.bool), noise_std=0.0)
    assert torch.equal(out, torch.zeros_like(x)) and torch.equal(x, before)


def test_removal_order_by_hand():
    maps = torch.tensor([[[5.0, 1.0, 4.0, 2.0, 3.0]], [[1.0, 1.0, 1.0, 0.0, 2.0]]])
    morf = removal_masks(maps, 40, "morf")  # floor(0.4 * 5) = 2 pixels
    lerf = removal_masks(maps, 40, "lerf")
    assert morf[:, 0].int().tolist() == [[1, 0, 1, 0, 0], [1, 0, 0, 0, 1]]  # ties: first wins
    assert lerf[:, 0].int().tolist() == [[0, 1, 0, 1, 0], [1, 0, 0, 1, 0]]
    assert removal_masks(maps, 0, "morf").sum() == 0 and removal_masks(maps, 100, "lerf").all()


def linear_model(x: torch.Tensor) -> torch.Tensor:
    """Class 0 grows with the first half of the signal, class 1 with the second half."""
    half = x.shape[-1] // 2
    return torch.stack([x[..., :half].flatten(1).sum(1), x[..., half:].flatten(1).sum(1)], 1)


def test_road_curves_compose_imputation_and_scores():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 8, generator=generator)
    maps = torch.rand(3, 1, 4, 4, generator=generator)  # layer resolution: upsampled to 8x8
    target = torch.tensor([0, 1, 0])
    percentages = (25, 50)
    result = road(linear_model, x, maps, target, order="lerf", percentages=percentages,
                  noise_std=0.0)
    upsampled = torch.nn.functional.interpolate(maps, size=(8, 8), mode="bilinear")
    for j, p in enumerate(percentages):
        removed = removal_masks(upsampled, p, "lerf")
        assert int(removed[0].sum()) == 64 * p // 100
        probabilities = torch.softmax(linear_model(noisy_linear_imputation(x, removed, noise_std=0.0)), 1)
        torch.testing.assert_close(result.scores[:, j], probabilities[torch.arange(3), target])
        assert torch.equal(result.correct[:, j], probabilities.argmax(1) == target)
    torch.testing.assert_close(result.original_scores, torch.softmax(linear_model(x), 1)[torch.arange(3), target])
    torch.testing.assert_close(result.curve(), result.scores.mean(0))


def test_road_morf_hurts_more_than_lerf_for_a_faithful_map():
    x = torch.full((2, 1, 16), 0.5)
    x[:, :, :8] = torch.arange(8.0, 0.0, -1.0)  # class-0 evidence: 8, 7, ..., 1
    maps = x.clone()  # a faithful map for class 0
    kwargs = dict(percentages=(25,), noise_std=0.0, apply_softmax=False)
    morf = road(linear_model, x, maps, 0, order="morf", **kwargs)
    lerf = road(linear_model, x, maps, 0, order="lerf", **kwargs)
    # MoRF imputes 8, 7, 6, 5 from their one kept neighbour (4): 36 -> 4·4 + 4 + 3 + 2 + 1 = 26.
    # LeRF removes four 0.5s of the second half (class 1's): class 0 keeps 36.
    torch.testing.assert_close(morf.scores, torch.full((2, 1), 26.0))
    torch.testing.assert_close(lerf.scores, torch.full((2, 1), 36.0))


@pytest.mark.parametrize("rank", [1, 3])
def test_road_batch_equals_singles(rank):
    generator = torch.Generator().manual_seed(rank)
    x = torch.rand((3, 1) + (6,) * rank, generator=generator)
    maps = torch.rand((3, 1) + (6,) * rank, generator=generator)
    batched = road(linear_model, x, maps, [0, 1, 1], percentages=(30, 60), noise_std=0.0)
    for i, t in enumerate([0, 1, 1]):
        single = road(linear_model, x[i : i + 1], maps[i : i + 1], t, percentages=(30, 60),
                      noise_std=0.0)
        torch.testing.assert_close(single.scores, batched.scores[i : i + 1])


def test_road_errors():
    x = torch.rand(1, 1, 8)
    with pytest.raises(ValueError, match="order"):
        road(linear_model, x, x, 0, order="random")
    with pytest.raises(ValueError, match="percentages"):
        road(linear_model, x, x, 0, percentages=(120,))
    with pytest.raises(ValueError, match="class target"):
        road(linear_model, x, x, None)
    with pytest.raises(ValueError, match="removed must be"):
        noisy_linear_imputation(x, torch.zeros(1, 1, 7, dtype=torch.bool))
