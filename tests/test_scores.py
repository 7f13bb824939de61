"""``ExampleScorer``'s channels-last passes: the model sees channels-last CPU images, scores and
input gradients equal the input-format ones, and a model that cannot take such inputs falls
back to the input's format instead of failing."""

from __future__ import annotations

import torch
from torch import nn

from captum_ext._scores import ExampleScorer
from captum_ext.attr import IGOS


class RecordsFormat(nn.Module):
    """A small conv classifier that records whether each input batch was channels-last."""

    def __init__(self, views_input: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)
        self.views_input = views_input
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last)
                         and not x.is_contiguous())
        if self.views_input:
            x = x.view(x.shape[0], -1).view(x.shape[0], 3, 6, 6)  # fails if channels-last
        return self.fc(torch.relu(self.conv(x)).reshape(x.shape[0], -1))


def _scores_and_grads(scorer: ExampleScorer, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    leaf = images.clone().requires_grad_(True)
    scores = scorer((leaf,), torch.tensor([0, 1, 0, 1]))
    (grad,) = torch.autograd.grad(scores.sum(), leaf)
    return scores.detach(), grad


def test_channels_last_passes_equal_input_format_passes() -> None:
    torch.manual_seed(0)
    model = RecordsFormat().eval()
    x = torch.randn(2, 3, 6, 6)
    images = torch.randn(4, 3, 6, 6)
    fast = ExampleScorer(model, (x,), torch.tensor([2, 0]), None)
    assert model.seen == [True]  # the clean pass too
    plain = ExampleScorer(model, (x,), torch.tensor([2, 0]), None, channels_last=False)
    assert model.seen[-1] is False
    torch.testing.assert_close(fast.clean_scores, plain.clean_scores)
    fast_scores, fast_grad = _scores_and_grads(fast, images)
    assert model.seen[-1] is True
    plain_scores, plain_grad = _scores_and_grads(plain, images)
    torch.testing.assert_close(fast_scores, plain_scores)
    torch.testing.assert_close(fast_grad, plain_grad)
    assert images.is_contiguous()  # the caller's tensor is not reformatted


def test_model_that_views_its_input_falls_back_once() -> None:
    torch.manual_seed(0)
    model = RecordsFormat(views_input=True).eval()
    x = torch.randn(2, 3, 6, 6)
    scorer = ExampleScorer(model, (x,), None, None)
    assert scorer.channels_last is False  # the clean pass failed channels-last, then ran
    assert model.seen == [True, False]
    scores, grad = _scores_and_grads(scorer, torch.randn(4, 3, 6, 6))
    assert model.seen[2:] == [False]  # no second channels-last attempt
    assert scores.shape == (4,) and torch.isfinite(grad).all()


def test_igos_channels_last_run_matches_input_format_run() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 6)
    for views_input in (False, True):
        model = RecordsFormat(views_input=views_input).eval()
        with torch.no_grad():
            model.fc.weight.mul_(30)  # a logit strong enough to move the mask
        maps = []
        for channels_last in (True, False):
            method = IGOS(model)
            method.channels_last_passes = channels_last
            maps.append(method.attribute(x, target=1, mask_size=3, iterations=4, ig_steps=3, output="logit",
                                         generator=torch.Generator().manual_seed(0)))
        assert model.seen[0] is True and model.seen[-1] is False
        torch.testing.assert_close(maps[0], maps[1], atol=1e-5, rtol=0)
        assert float(maps[0].max()) > 1e-3  # the mask moved (100x the tolerance)
