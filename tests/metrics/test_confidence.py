"""Average Drop, Increase in Confidence and ADCC against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from captum_ext.metrics import (
    adcc,
    average_drop,
    average_increase,
    confidence_scores,
    increase_in_confidence,
)


def summing_model(x: torch.Tensor) -> torch.Tensor:
    """Class 0 scores ``1 + Σx`` (positive for the inputs below), class 1 scores 1."""
    total = x.flatten(1).sum(1) + 1.0
    return torch.stack([total, torch.ones_like(total)], 1)


def as_rank(values: list[float], rank: int) -> torch.Tensor:
    """A (1, 1, *S) tensor holding ``values`` (4 of them) in 1D (4), 2D (2x2) or 3D (1x2x2)."""
    shape = {1: (4,), 2: (2, 2), 3: (1, 2, 2)}[rank]
    return torch.tensor(values).reshape((1, 1) + shape)


X = [1.0, 2.0, 3.0, 4.0]  # Y = 1 + 10 = 11


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_average_drop_by_hand(rank):
    x = as_rank(X, rank)
    # map [0, 1, 2, 4] -> min-max [0, .25, .5, 1] -> O = 1 + .5 + 1.5 + 4 = 7
    drop = average_drop(summing_model, x, as_rank([0, 1, 2, 4], rank), 0, apply_softmax=False)
    torch.testing.assert_close(drop, torch.tensor([100 * 4 / 11]))
    # negative values are ReLU'd first: [-1, 0, 4, 4] -> [0, 0, 1, 1] -> O = 1 + 3 + 4 = 8
    drop = average_drop(summing_model, x, as_rank([-1, 0, 4, 4], rank), 0, apply_softmax=False)
    torch.testing.assert_close(drop, torch.tensor([100 * 3 / 11]))
    assert increase_in_confidence(
        summing_model, x, as_rank([0, 1, 2, 4], rank), 0, apply_softmax=False
    ).tolist() == [0.0]


def test_increase_in_confidence_by_hand():
    x = as_rank([-1.0, -1.0, 2.0, 2.0], 1)  # Y = 3; mask [0, 0, 1, 1] -> O = 5 > Y
    scores = confidence_scores(summing_model, x, as_rank([0, 0, 1, 1], 1), 0, apply_softmax=False)
    torch.testing.assert_close(scores.original, torch.tensor([3.0]))
    torch.testing.assert_close(scores.masked, torch.tensor([5.0]))
    assert scores.increase_in_confidence().tolist() == [100.0]
    assert scores.average_drop().tolist() == [0.0]
    assert average_increase is increase_in_confidence


def test_softmax_scores_by_hand():
    x = as_rank(X, 1)
    drop = average_drop(summing_model, x, as_rank([0, 1, 2, 4], 1), 0)
    y, o = torch.sigmoid(torch.tensor(10.0)), torch.sigmoid(torch.tensor(6.0))  # p = σ(s0 − s1)
    torch.testing.assert_close(drop, (100 * (y - o) / y).reshape(1))


def test_baseline_and_empty_map():
    x = as_rank(X, 1)
    # baseline 1: masked input = 1 + m (x − 1) with m = [0, .25, .5, 1] -> [1, 1.25, 2, 4]
    scores = confidence_scores(
        summing_model, x, as_rank([0, 1, 2, 4], 1), 0, baselines=1.0, apply_softmax=False
    )
    torch.testing.assert_close(scores.masked, torch.tensor([1 + 1 + 1.25 + 2 + 4]))
    # an all-zero map removes everything: O = the baseline's score (1 + 0)
    drop = average_drop(summing_model, x, torch.zeros(1, 1, 4), 0, apply_softmax=False)
    torch.testing.assert_close(drop, torch.tensor([100 * 10 / 11]))


def test_layer_resolution_map_is_upsampled():
    x = as_rank(X, 1)
    # [0, 4] upsampled linearly to 4 (align_corners=False): [0, 1, 3, 4] -> [0, .25, .75, 1]
    maps = torch.tensor([[[0.0, 4.0]]])
    scores = confidence_scores(summing_model, x, maps, 0, apply_softmax=False)
    torch.testing.assert_close(scores.masks, torch.tensor([[[0.0, 0.25, 0.75, 1.0]]]))
    torch.testing.assert_close(scores.masked, torch.tensor([1 + 0.5 + 2.25 + 4]))


def test_multichannel_attributions_are_summed():
    x = as_rank(X, 1).expand(1, 2, 4).contiguous()
    maps = torch.tensor([[[0.0, 1, 1, 2], [0, 0, 1, 2]]])  # sum [0, 1, 2, 4]
    scores = confidence_scores(summing_model, x, maps, 0, apply_softmax=False)
    torch.testing.assert_close(scores.masks, torch.tensor([[[0.0, 0.25, 0.5, 1.0]]]))


def test_batch_equals_stacked_singles():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 5, 5, generator=generator)
    maps = torch.randn(3, 1, 3, 3, generator=generator)
    target = [0, 1, 0]
    batched = confidence_scores(summing_model, x, maps, target)
    for i in range(3):
        single = confidence_scores(summing_model, x[i : i + 1], maps[i : i + 1], target[i])
        torch.testing.assert_close(single.masked, batched.masked[i : i + 1])
        torch.testing.assert_close(single.original, batched.original[i : i + 1])


def test_inputs_are_not_mutated():
    x = torch.rand(2, 1, 4)
    maps = torch.rand(2, 1, 4)
    before = (x.clone(), maps.clone())
    average_drop(summing_model, x, maps, 0)
    assert torch.equal(x, before[0]) and torch.equal(maps, before[1])


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_adcc_by_hand(rank):
    x = as_rank(X, rank)

    def explain(forward_func, inputs, target):
        return inputs  # the map is the input itself

    result = adcc(summing_model, x, explain, 0, apply_softmax=False, return_components=True)
    m = torch.tensor([0.0, 1 / 3, 2 / 3, 1])  # min-max of [1, 2, 3, 4]
    again = torch.tensor([0.0, 1 / 6, 1 / 2, 1])  # min-max of m * x = [0, 2/3, 2, 4]
    rho = float(torch.corrcoef(torch.stack([m, again]))[0, 1])
    coherency, complexity, drop = (rho + 1) / 2, 0.5, (11 - (1 + 2 / 3 + 2 + 4)) / 11
    expected = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - drop))
    assert math.isclose(float(result.adcc), 100 * expected, rel_tol=1e-5)
    assert math.isclose(float(result.coherency), 100 * coherency, rel_tol=1e-5)
    assert math.isclose(float(result.complexity), 50.0, rel_tol=1e-6)
    assert math.isclose(float(result.average_drop), 100 * drop, rel_tol=1e-5)


def test_adcc_constant_map_convention():
    x = as_rank(X, 1)
    # constant map -> all-zero mask: complexity 0, coherency 0.5 (ρ := 0), drop 10/11
    value = adcc(summing_model, x, lambda f, i, t: torch.ones_like(i), 0, apply_softmax=False)
    torch.testing.assert_close(value, torch.tensor([100 * 3 / (2 + 1 + 11)]))


def test_errors():
    x = as_rank(X, 1)
    with pytest.raises(ValueError, match="<= 0"):
        average_drop(lambda t: -summing_model(t), x, torch.rand(1, 1, 4), 0, apply_softmax=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        average_drop(summing_model, x, torch.full((1, 1, 4), 2.0), 0, normalise="none")
    with pytest.raises(ValueError, match="normalise"):
        average_drop(summing_model, x, torch.rand(1, 1, 4), 0, normalise="max")
    with pytest.raises(ValueError, match="N = 1"):
        average_drop(summing_model, x, torch.rand(2, 1, 4), 0)
    with pytest.raises(ValueError, match="entries but the batch"):
        average_drop(summing_model, x, torch.rand(1, 1, 4), [0, 1])
    with pytest.raises(ValueError, match="out of range"):
        average_drop(summing_model, x, torch.rand(1, 1, 4), 5)
