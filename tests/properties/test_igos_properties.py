"""Property-based tests of I-GOS's integrated-gradient direction (completeness along the path).

On a linear model ``F(x) = Σ w ⊙ x`` the path objective at the all-ones mask is a Riemann sum
that is exact: ``S_IG(1) = F(b) + ā (F(x) − F(b))`` with ``ā = (K + 1) / 2K`` and ``b`` the
default baseline (the I-GOS blur of the input), and its gradient with respect to the mask is
``ā Σ_c w_c (x_c − b_c)``, whose sum is ``ā (F(x) − F(b))`` (completeness). The first step is
then ``M = clamp(1 − α · direction)`` with the Armijo step ``α`` the method reports. The
regularisers (L1 of ``1 − M``, TV) vanish at ``M = 1``, so these identities pin the direction.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from captum_ext._blur import igos_blur
from captum_ext.attr import IGOS


class LinearScore(nn.Module):
    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.weight).flatten(1).sum(1)


@st.composite
def linear_cases(draw):
    rank = draw(st.sampled_from([1, 2, 3]))
    side = draw(st.integers(3, 8 if rank < 3 else 4))
    channels = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 10_000))
    steps = draw(st.integers(2, 8))
    g = torch.Generator().manual_seed(seed)
    shape = (1, channels) + (side,) * rank
    return torch.randn(shape, generator=g), torch.rand(shape, generator=g) * 2, steps


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linear_cases())
def test_igos_path_objective_and_direction_are_complete(case):
    weight, x, steps = case
    model = LinearScore(weight)
    method = IGOS(model)
    _, mask = method.attribute(
        x, output="logit", mask_size=tuple(x.shape[2:]), iterations=1, ig_steps=steps,
        noise_std=0.0, return_masks=True,
    )
    trace = method.last_trace
    baseline = igos_blur(x)
    a_bar = (steps + 1) / (2 * steps)
    with torch.no_grad():
        f_x, f_b = model(x), model(baseline)
    torch.testing.assert_close(trace.loss_before[:, 0], f_b + a_bar * (f_x - f_b),
                               rtol=1e-4, atol=1e-4)
    direction = a_bar * (weight * (x - baseline)).sum(1, keepdim=True)
    torch.testing.assert_close(direction.sum(), (a_bar * (f_x - f_b)).sum(), rtol=1e-4, atol=1e-4)
    alpha = float(trace.step_sizes[0, 0])
    torch.testing.assert_close(mask, (1 - alpha * direction).clamp(0, 1), rtol=1e-4, atol=1e-5)
