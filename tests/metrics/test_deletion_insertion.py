"""Oracle tests of the deletion/insertion metric on models whose curves are known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from captum_ext._blur import rise_blur
from captum_ext.metrics import DeletionInsertionResult, deletion_insertion


class PixelSum(nn.Module):
    """``f(x) = Σ x`` per example, shape ``(N,)``: every curve is a sum of pixels."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1).sum(1)


class TwoClass(nn.Module):
    """Logits ``[Σ x, 0]``: the softmax probability of class 0 is ``sigmoid(Σ x)``."""

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def _data(rank: int, side: int = 4, batch: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, 1) + (side,) * rank, generator=g)
    saliency = torch.rand((batch, 1) + (side,) * rank, generator=g)
    return x, saliency


def _sorted_pixels(x: Tensor, saliency: Tensor) -> Tensor:
    """Pixel values of each example ordered most salient first."""
    order = saliency.flatten(1).argsort(1, descending=True)
    return x.flatten(1).gather(1, order)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_igos_protocol_at_full_resolution_is_a_right_riemann_sum(rank: int) -> None:
    x, saliency = _data(rank)
    n = x[0].numel()
    result = deletion_insertion(PixelSum(), x, saliency, protocol="igos", output="logit",
                                mask_size=4, deletion_baseline=0.0, insertion_baseline=0.0)
    sorted_x = _sorted_pixels(x, saliency)
    step = max(1, n // 50)
    counts = list(range(step, n + 1, step))
    if counts[-1] != n:
        counts.append(n)
    removed = torch.stack([sorted_x[:, :c].sum(1) for c in counts], 1)
    total = x.flatten(1).sum(1, keepdim=True)
    widths = torch.tensor([counts[0]] + [b - a for a, b in zip(counts, counts[1:])]) / n
    torch.testing.assert_close(result.deletion_curve, total - removed)
    torch.testing.assert_close(result.insertion_curve, removed)
    torch.testing.assert_close(result.deletion, ((total - removed) * widths).sum(1))
    torch.testing.assert_close(result.insertion, (removed * widths).sum(1))
    torch.testing.assert_close(result.fractions, torch.tensor(counts, dtype=x.dtype) / n)
    assert isinstance(result, DeletionInsertionResult) and result.protocol == "igos"
    torch.testing.assert_close(result.difference, result.insertion - result.deletion)


def test_igos_protocol_upsamples_cells_with_align_corners() -> None:
    # 1D, length 3, two cells: up([r0, r1]) = [r0, (r0 + r1)/2, r1] with align_corners=True.
    x = torch.tensor([[[1.0, 2.0, 4.0]]])
    saliency = torch.tensor([[[0.9, 0.1]]])  # cell 0 first
    result = deletion_insertion(PixelSum(), x, saliency, protocol="igos", output="logit",
                                mask_size=2, deletion_baseline=0.0, insertion_baseline=0.0)
    # step 1 removes cell 0: kept fractions [0, .5, 1] → 0 + 1 + 4; step 2 removes everything.
    torch.testing.assert_close(result.deletion_curve, torch.tensor([[5.0, 0.0]]))
    torch.testing.assert_close(result.insertion_curve, torch.tensor([[2.0, 7.0]]))
    torch.testing.assert_close(result.deletion, torch.tensor([2.5]))
    torch.testing.assert_close(result.insertion, torch.tensor([4.5]))


def test_igos_protocol_default_baseline_is_the_blur_and_softmax_scores() -> None:
    x, saliency = _data(2, side=8, batch=1)
    x = x - 0.5
    result = deletion_insertion(TwoClass(), x, saliency, target=0, protocol="igos", mask_size=8)
    from captum_ext._blur import igos_blur

    blurred = igos_blur(x)
    # after the last step every pixel is the baseline in deletion and the image in insertion.
    torch.testing.assert_close(result.deletion_curve[:, -1], torch.sigmoid(blurred.sum((1, 2, 3))))
    torch.testing.assert_close(result.insertion_curve[:, -1], torch.sigmoid(x.sum((1, 2, 3))))


def test_official_last_step_bug_is_not_repeated_and_can_be_emulated() -> None:
    x, saliency = _data(2, side=7, batch=2)
    model = TwoClass()
    kwargs = dict(target=0, protocol="igos", mask_size=7, deletion_baseline=-1.0,
                  insertion_baseline=-1.0)
    fixed = deletion_insertion(model, x, saliency, **kwargs)
    buggy = deletion_insertion(model, x, saliency, emulate_official_bug=True, **kwargs)
    n, step = 49, 1
    last = (n - (n // step - 1) * step) / n  # the last step removes one cell
    # correct: p_last · width; official: the count, i.e. width · 1.
    torch.testing.assert_close(buggy.deletion - fixed.deletion,
                               last * (1 - fixed.deletion_curve[:, -1]))
    torch.testing.assert_close(buggy.insertion - fixed.insertion,
                               last * (1 - fixed.insertion_curve[:, -1]))
    assert bool((buggy.deletion > fixed.deletion).all())


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_rise_protocol_trapezoid_with_start_point(rank: int) -> None:
    x, saliency = _data(rank, side=4)
    n = x[0].numel()
    result = deletion_insertion(PixelSum(), x, saliency, protocol="rise", output="logit",
                                n_steps=n, insertion_baseline=0.0)
    sorted_x = _sorted_pixels(x, saliency)
    cumulative = torch.cat([torch.zeros(x.shape[0], 1), sorted_x.cumsum(1)], 1)  # n + 1 points
    total = x.flatten(1).sum(1, keepdim=True)
    deletion_curve = total - cumulative  # deletion replaces pixels by 0
    insertion_curve = cumulative  # insertion starts from 0 here
    trapezoid = lambda c: (c.sum(1) - c[:, 0] / 2 - c[:, -1] / 2) / (c.shape[1] - 1)  # noqa: E731
    torch.testing.assert_close(result.deletion_curve, deletion_curve)
    torch.testing.assert_close(result.insertion_curve, insertion_curve)
    torch.testing.assert_close(result.deletion, trapezoid(deletion_curve))
    torch.testing.assert_close(result.insertion, trapezoid(insertion_curve))
    assert result.fractions[0] == 0 and result.fractions[-1] == 1


def test_rise_protocol_steps_and_default_insertion_start() -> None:
    x, saliency = _data(2, side=6, batch=1)
    result = deletion_insertion(PixelSum(), x, saliency, protocol="rise", output="logit",
                                n_steps=5)
    # 36 pixels, ceil(36 / 5) = 8 per step: 5 steps, 6 points including the start.
    torch.testing.assert_close(result.fractions, torch.tensor([0, 8, 16, 24, 32, 36]) / 36)
    torch.testing.assert_close(result.insertion_curve[:, 0], rise_blur(x).sum((1, 2, 3)))
    torch.testing.assert_close(result.deletion_curve[:, -1], torch.zeros(1))
    torch.testing.assert_close(result.insertion_curve[:, -1], x.sum((1, 2, 3)))


def test_chunking_batching_and_coarse_maps() -> None:
    x, _ = _data(2, side=8, batch=3)
    coarse = torch.rand(3, 2, 2, 2, generator=torch.Generator().manual_seed(5))
    model = TwoClass()
    full = deletion_insertion(model, x, coarse, target=0, mask_size=4, batch_size=1000)
    chunked = deletion_insertion(model, x, coarse, target=0, mask_size=4, batch_size=3)
    torch.testing.assert_close(full.deletion_curve, chunked.deletion_curve)
    torch.testing.assert_close(full.insertion_curve, chunked.insertion_curve)
    for i in range(3):
        single = deletion_insertion(model, x[i:i + 1], coarse[i:i + 1], target=0, mask_size=4)
        torch.testing.assert_close(single.deletion, full.deletion[i:i + 1])
        torch.testing.assert_close(single.insertion, full.insertion[i:i + 1])


def test_default_target_is_top1_and_no_grad_is_respected() -> None:
    x, saliency = _data(2, side=4, batch=2)
    model = TwoClass()
    with torch.no_grad():
        explicit = deletion_insertion(model, x + 1, saliency, target=0, mask_size=4)
    default = deletion_insertion(model, x + 1, saliency, mask_size=4)  # Σx > 0: class 0 wins
    torch.testing.assert_close(default.deletion, explicit.deletion)
    assert not default.deletion.requires_grad


def test_errors() -> None:
    x, saliency = _data(2, side=4, batch=2)
    model = TwoClass()
    with pytest.raises(ValueError, match="protocol"):
        deletion_insertion(model, x, saliency, target=0, protocol="auc")
    with pytest.raises(ValueError, match="attributions"):
        deletion_insertion(model, x, saliency[:1], target=0)
    with pytest.raises(ValueError, match="spatial dims"):
        deletion_insertion(model, x.flatten(1), saliency.flatten(1), target=0)
    with pytest.raises(ValueError, match="I-GOS protocol only"):
        deletion_insertion(model, x, saliency, target=0, protocol="rise", emulate_official_bug=True)
    with pytest.raises(ValueError, match="out of range"):
        deletion_insertion(model, x, saliency, target=7)
    with pytest.raises(ValueError, match="entries"):
        deletion_insertion(model, x, saliency, target=[0, 1, 0])
    with pytest.raises(ValueError, match="deletion_baseline"):
        deletion_insertion(model, x, saliency, target=0, deletion_baseline=torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="softmax"):
        deletion_insertion(PixelSum(), x, saliency)
