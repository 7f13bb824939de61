"""combine_saliency_maps: upsampling, per-sample min-max, product / sum / geometric, weights,
and the documented choices for constant and all-zero maps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captum_ext.attr import combine_saliency_maps, layer_weights


def minmax(m):
    flat = m.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    shape = (-1,) + (1,) * (m.dim() - 1)
    return (m - low.reshape(shape)) / (high - low).reshape(shape)


@pytest.mark.parametrize(
    "mode, size", [("linear", (12,)), ("bilinear", (8, 6)), ("trilinear", (4, 6, 2))]
)
def test_rank_agnostic_upsampling_and_product(mode, size):
    gen = torch.Generator().manual_seed(0)
    small = [s // 2 for s in size]
    maps = [torch.rand(2, 1, *small, generator=gen), torch.rand(2, 1, *size, generator=gen)]
    up = F.interpolate(maps[0], size=size, mode=mode, align_corners=False)
    expected = (minmax(up) + 1e-6) * (minmax(maps[1]) + 1e-6)
    torch.testing.assert_close(combine_saliency_maps(maps, size), expected)


def test_weights():
    like = torch.zeros(1)
    torch.testing.assert_close(layer_weights("linear", 3, like), torch.tensor([1.0, 2.0, 3.0]) / 6)
    torch.testing.assert_close(layer_weights("uniform", 4, like), torch.full((4,), 0.25))
    torch.testing.assert_close(layer_weights([2.0, 6.0], 2, like), torch.tensor([0.25, 0.75]))


def test_uniform_geometric_mean_is_the_root_of_the_product():
    maps = [torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    product = combine_saliency_maps(maps, (5, 5), "product")
    geometric = combine_saliency_maps(maps, (5, 5), "geometric")
    torch.testing.assert_close(geometric, product ** (1 / 3))


def test_constant_maps_are_neutral_and_zeros_do_not_zero_the_product():
    varying = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    constant = torch.full((2, 1, 4, 4), 3.0)
    constant[1] = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(2))  # sample 1 varies
    product = combine_saliency_maps([varying, constant], (4, 4), "product")
    torch.testing.assert_close(product[0], minmax(varying)[0] + 1e-6)
    both = (minmax(varying)[1] + 1e-6) * (minmax(constant)[1] + 1e-6)
    torch.testing.assert_close(product[1], both)
    assert bool((product > 0).all())
    summed = combine_saliency_maps([varying, constant], (4, 4), "sum", weights=[1.0, 3.0])
    torch.testing.assert_close(summed[0], minmax(varying)[0])  # the constant map is dropped
    torch.testing.assert_close(summed[1], 0.25 * minmax(varying)[1] + 0.75 * minmax(constant)[1])
    all_constant = combine_saliency_maps([constant[:1], constant[:1] * 0], (4, 4), "sum")
    assert torch.equal(all_constant, torch.zeros(1, 1, 4, 4))


def test_errors():
    good = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="at least one"):
        combine_saliency_maps([], (4, 4))
    with pytest.raises(ValueError, match="spatial dims"):
        combine_saliency_maps([good], (4, 4, 4))
    with pytest.raises(ValueError, match="batch size"):
        combine_saliency_maps([good, good[:1]], (4, 4), "sum")
    with pytest.raises(ValueError, match="unknown weights"):
        combine_saliency_maps([good], (4, 4), "sum", weights="depth")
    with pytest.raises(ValueError, match="not all zero"):
        combine_saliency_maps([good, good], (4, 4), "sum", weights=[0.0, 0.0])
