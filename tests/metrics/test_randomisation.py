"""Model-parameter randomisation test and the Spearman correlation."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import LayerGradCam

from captum_ext.metrics import model_parameter_randomisation, spearman_correlation
from captum_ext.metrics.randomisation import default_layers, rank_with_ties
from tests._helpers import assert_unchanged, conv_input, conv_model, snapshot


def test_spearman_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0], [2.0, 2.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    rho = spearman_correlation(a, b)
    assert rho[0].item() == pytest.approx(1 - 6 * 2 / (4 * 15))  # Σd² = 2
    assert rho[1].item() == pytest.approx(4.5 / math.sqrt(4.5 * 5))  # average ranks 1.5, 1.5
    assert math.isnan(rho[2].item())  # no variation
    assert rank_with_ties(a[1:2]).tolist() == [[1.5, 1.5, 3.0, 4.0]]


def test_spearman_is_rank_agnostic():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 3, 4, 5, generator=generator)
    b = a**3 + 1  # monotone: ρ = 1
    torch.testing.assert_close(spearman_correlation(a, b), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(spearman_correlation(a, -b), -torch.ones(2, dtype=torch.float64))


def grad_cam(model, inputs, target):
    return LayerGradCam(model, model.features[-1]).attribute(inputs, target=target)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_user_model_is_never_modified(rank):
    model = conv_model(rank)
    x = conv_input(rank, batch=2, size=5)
    before = snapshot(model, (x,))
    rng = torch.random.get_rng_state()
    for mode in ("cascading", "independent"):
        result = model_parameter_randomisation(
            model, x, [0, 1], grad_cam, mode=mode, generator=torch.Generator().manual_seed(0)
        )
        assert result.correlations.shape == (3, 2)
    assert_unchanged(model, (x,), before)
    assert torch.equal(rng, torch.random.get_rng_state())  # the global RNG is untouched


def test_default_layer_order_is_output_first():
    assert default_layers(conv_model(2)) == ["fc", "features.2", "features.0"]


def test_model_independent_explanation_correlates_perfectly():
    """The edge-detector failure of Adebayo et al.: a map that ignores the model scores ρ = 1."""
    model = conv_model(2)
    x = conv_input(2, batch=2, size=6)
    result = model_parameter_randomisation(model, x, 0, lambda m, inputs, t: inputs.sum(1))
    assert torch.equal(result.correlations, torch.ones(3, 2, dtype=torch.float64))


def head_weights(model, inputs, target):
    """A 'map' that is the head's weight row of the target, repeated per example."""
    return model.fc.weight[target].detach().clone()


def test_cascading_keeps_earlier_randomisations_and_independent_restores():
    model = conv_model(2)
    x = conv_input(2, batch=2, size=5)
    target = torch.tensor([0, 1])
    cascading = model_parameter_randomisation(
        model, x, target, head_weights, generator=torch.Generator().manual_seed(0)
    )
    independent = model_parameter_randomisation(
        model, x, target, head_weights, mode="independent",
        generator=torch.Generator().manual_seed(0),
    )
    # Only the head matters: it is randomised first (same seed in both modes).
    torch.testing.assert_close(cascading.correlations[0], independent.correlations[0])
    # Cascading: the head stays random. Independent: the head is trained again (ρ = 1).
    torch.testing.assert_close(cascading.correlations[1:], cascading.correlations[:1].expand(2, 2))
    assert torch.equal(independent.correlations[1:], torch.ones(2, 2, dtype=torch.float64))
    # ρ by hand: re-initialise a copy of the head with the seed the test draws first.
    seed = int(torch.randint(0, 2**62, (3,), generator=torch.Generator().manual_seed(0))[0])
    head = torch.nn.Linear(8, 5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head.reset_parameters()
    expected = spearman_correlation(model.fc.weight[target].detach(), head.weight[target].detach())
    torch.testing.assert_close(cascading.correlations[0], expected)


def test_seeded_runs_are_reproducible_and_grad_cam_decorrelates():
    model = conv_model(2, channels=(8, 8))
    x = conv_input(2, batch=4, size=8)
    first = model_parameter_randomisation(model, x, 0, grad_cam, generator=torch.Generator().manual_seed(1))
    second = model_parameter_randomisation(model, x, 0, grad_cam, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.correlations, second.correlations)
    assert float(first.mean()[-1]) < 0.9  # with every layer random, the maps change


def test_errors():
    model = conv_model(1)
    x = conv_input(1, batch=1)
    with pytest.raises(ValueError, match="mode"):
        model_parameter_randomisation(model, x, 0, grad_cam, mode="random")
    with pytest.raises(ValueError, match="unknown layer"):
        model_parameter_randomisation(model, x, 0, grad_cam, layers=["nope"])
    with pytest.raises(ValueError, match="rows"):
        model_parameter_randomisation(model, x, 0, lambda m, i, t: torch.zeros(3, 4))
