"""Oracle tests for Score-CAM, SS-CAM and IS-CAM: a per-channel loop that masks and scores by
hand, chunk-size invariance, hook-free masked passes, tuple inputs and clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_ext.attr import LayerISCam, LayerScoreCam, LayerSSCam, tokens_to_grid
from captum_ext.models import TinyViT
from tests._helpers import (
    FailingModule,
    assert_unchanged,
    conv_input,
    conv_model,
    hook_count,
    snapshot,
)

RANKS = [1, 2, 3]
MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def strided_model(rank: int, seed: int = 0) -> nn.Module:
    """Layer maps smaller than the input (3 at input size 5), so the masks are upsampled; two
    channels of the last layer are constant (dead: zero weights and a negative bias)."""
    model = conv_model(rank, seed=seed)
    conv = model.features[-2]
    model.features[-2] = type(conv)(6, 8, 3, stride=2, padding=1)
    with torch.no_grad():
        model.features[-2].weight[:2] = 0
        model.features[-2].bias[:2] = -1.0
    return model.eval()


def hand_score_cam(model, x, target, score="softmax", channel_softmax=False,
                   baseline_subtraction=False, mask_scales=(1.0,)):
    """The algorithm, one example and one channel at a time."""
    maps = []
    for i in range(x.shape[0]):
        with torch.no_grad():
            activation = model.features(x[i : i + 1])[0]  # (K, *S)
            rank = x.dim() - 2

            def scored(inp):
                out = model(inp)
                out = torch.softmax(out, 1) if score == "softmax" else out
                return out[0, target[i]]

            baseline_score = scored(torch.zeros_like(x[i : i + 1]))
            weights, kept = [], []
            for k in range(activation.shape[0]):
                up = F.interpolate(activation[k][None, None], size=x.shape[2:],
                                   mode=MODES[rank], align_corners=False)
                if activation[k].max() == activation[k].min():
                    weights.append(torch.tensor(0.0))
                    kept.append(False)
                    continue
                mask = (up - up.min()) / (up.max() - up.min())
                s = torch.stack([scored(x[i : i + 1] * mask * a) for a in mask_scales]).mean()
                if baseline_subtraction:
                    s = s - baseline_score
                weights.append(s)
                kept.append(True)
            weights, kept = torch.stack(weights), torch.tensor(kept)
            if channel_softmax:
                weights = torch.where(kept, torch.softmax(weights.masked_fill(~kept, -1e30), 0), 0)
            maps.append((weights.reshape((-1,) + (1,) * rank) * activation).sum(0, keepdim=True))
    return torch.stack(maps)


@pytest.mark.parametrize("rank", RANKS)
def test_official_scoring_equals_the_hand_loop(rank):
    model, x = strided_model(rank), conv_input(rank)
    target = [1, 4, 0]
    out = LayerScoreCam(model, model.features[-1]).attribute(x, target=target, batch_size=7)
    assert out.shape == (3, 1) + (3,) * rank
    torch.testing.assert_close(out, hand_score_cam(model, x, target), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        dict(score="logit"),
        dict(score="logit", channel_softmax=True),
        dict(score="logit", baseline_subtraction=True),
        dict(score="softmax", channel_softmax=True, baseline_subtraction=True),
    ],
    ids=["logit", "logit-channel-softmax", "increase-of-confidence", "softmax-both"],
)
def test_scoring_options_equal_the_hand_loop(options):
    model, x = strided_model(2), conv_input(2)
    target = [3, 3, 2]
    out = LayerScoreCam(model, model.features[-1]).attribute(x, target=target, **options)
    torch.testing.assert_close(out, hand_score_cam(model, x, target, **options),
                               rtol=1e-5, atol=1e-6)


def test_layer_at_input_resolution_needs_no_upsampling():
    model, x = conv_model(2), conv_input(2)
    out = LayerScoreCam(model, model.features[-1]).attribute(x, target=[0, 1, 2])
    torch.testing.assert_close(out, hand_score_cam(model, x, [0, 1, 2]), rtol=1e-5, atol=1e-6)


class RowCounter(nn.Module):
    """Wraps a model; records, for every forward call, its rows and the hooks then registered."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, int]] = []

    def forward(self, x, *extra):
        self.calls.append((x.shape[0], hook_count(self)))
        return self.model(x, *extra)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_chunks_have_no_hooks_bounded_rows_and_constant_channels_cost_nothing(batch_size):
    model = RowCounter(strided_model(2))
    x = conv_input(2)
    method = LayerScoreCam(model, model.model.features[-1])
    out = method.attribute(x, target=[0, 1, 2], batch_size=batch_size)
    clean, *masked = model.calls
    assert clean == (3, clean[1]) and clean[1] > 0  # the one hooked pass
    assert all(hooks == 0 for _, hooks in masked), "a hook was active during a masked pass"
    assert all(rows <= batch_size for rows, _ in masked)
    assert sum(rows for rows, _ in masked) == 3 * 6  # 2 of the 8 channels are constant
    assert hook_count(model) == 0
    reference = LayerScoreCam(model.model, model.model.features[-1]).attribute(
        x, target=[0, 1, 2], batch_size=5
    )
    torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-7)


def test_constant_channels_scored_once_as_the_baseline():
    model = RowCounter(strided_model(2))
    x = conv_input(2)
    method = LayerScoreCam(model, model.model.features[-1])
    out = method.attribute(x, target=[0, 1, 2], skip_constant_channels=False, score="logit",
                           channel_softmax=True)
    assert sum(rows for rows, _ in model.calls[1:]) == 3 * 6 + 3  # + one baseline per example
    # The constant channels take the baseline's logit inside the channel softmax.
    inner = model.model
    with torch.no_grad():
        activation = inner.features(x)
        base = inner(torch.zeros_like(x))[torch.arange(3), [0, 1, 2]]
    kept = LayerScoreCam(inner, inner.features[-1]).attribute(
        x, target=[0, 1, 2], score="logit", channel_softmax=True
    )
    # The dead channels are all zero, so only the softmax normaliser changes: recompute it.
    logits = []
    for i in range(3):
        row = []
        for k in range(8):
            if k < 2:
                row.append(base[i])
                continue
            up = F.interpolate(activation[i, k][None, None], size=(5, 5), mode="bilinear")
            mask = (up - up.min()) / (up.max() - up.min())
            with torch.no_grad():
                row.append(inner(x[i : i + 1] * mask)[0, [0, 1, 2][i]])
        logits.append(torch.stack(row))
    weights = torch.softmax(torch.stack(logits), 1)
    expected = (weights[:, :, None, None] * activation).sum(1, keepdim=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, kept)


@pytest.mark.parametrize("rank", RANKS)
def test_batch_equals_stacked_singles_and_chunk_invariance(rank):
    model, x = strided_model(rank), conv_input(rank)
    method = LayerScoreCam(model, model.features[-1])
    targets = [2, 0, 4]
    batched = method.attribute(x, target=targets, batch_size=1)
    singles = torch.cat(
        [method.attribute(x[i : i + 1], target=t, batch_size=64) for i, t in enumerate(targets)]
    )
    torch.testing.assert_close(batched, singles, rtol=1e-5, atol=1e-7)


class TwoInputs(nn.Module):
    """An image branch and a vector branch; ``scale`` is an additional forward argument."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.vector = nn.Linear(2, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, image, vector, scale):
        pooled = self.act(self.conv(image)).mean((2, 3))
        return self.fc(pooled * scale[:, None] + self.vector(vector))


def test_tuple_inputs_mask_only_spatial_tensors_and_pass_extra_args():
    model = TwoInputs().eval()
    image, vector = conv_input(2), torch.randn(3, 2)
    scale = torch.tensor([1.0, 2.0, 0.5])
    out = LayerScoreCam(model, model.act).attribute(
        (image, vector), target=[0, 1, 2], additional_forward_args=(scale,), batch_size=3
    )
    expected = []
    with torch.no_grad():
        for i in range(3):
            activation = model.act(model.conv(image[i : i + 1]))[0]
            weights = []
            for k in range(4):
                low, high = activation[k].min(), activation[k].max()
                mask = (activation[k] - low) / (high - low)
                logits = model(image[i : i + 1] * mask, vector[i : i + 1], scale[i : i + 1])
                weights.append(torch.softmax(logits, 1)[0, i])
            expected.append((torch.stack(weights)[:, None, None] * activation).sum(0, keepdim=True))
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_baselines_blend_the_masked_input():
    model, x = strided_model(2), conv_input(2)
    baseline = torch.full((1, 3, 5, 5), 0.5)
    method = LayerScoreCam(model, model.features[-1])
    out = method.attribute(x, baselines=baseline, target=[0, 1, 2])
    expected = []
    with torch.no_grad():
        for i in range(3):
            activation = model.features(x[i : i + 1])[0]
            weights = []
            for k in range(8):
                if activation[k].max() == activation[k].min():
                    weights.append(torch.tensor(0.0))
                    continue
                up = F.interpolate(activation[k][None, None], size=(5, 5), mode="bilinear")
                mask = (up - up.min()) / (up.max() - up.min())
                masked = baseline + (x[i : i + 1] - baseline) * mask
                weights.append(torch.softmax(model(masked), 1)[0, i])
            expected.append((torch.stack(weights)[:, None, None] * activation).sum(0, keepdim=True))
    torch.testing.assert_close(out, torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_ss_cam_is_reproducible_chunk_invariant_and_reduces_to_score_cam():
    model, x = strided_model(2), conv_input(2)
    method = LayerSSCam(model, model.features[-1])
    kwargs = dict(target=[0, 1, 2], n_samples=3)
    a = method.attribute(x, batch_size=2, generator=torch.Generator().manual_seed(7), **kwargs)
    b = method.attribute(x, batch_size=50, generator=torch.Generator().manual_seed(7), **kwargs)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    c = method.attribute(x, generator=torch.Generator().manual_seed(8), **kwargs)
    assert not torch.allclose(a, c)
    noiseless = method.attribute(x, stdev=0.0, **kwargs)
    plain = LayerScoreCam(model, model.features[-1]).attribute(x, target=[0, 1, 2])
    torch.testing.assert_close(noiseless, plain, rtol=1e-5, atol=1e-7)


def test_is_cam_averages_scaled_masks():
    model, x = strided_model(2), conv_input(2)
    method = LayerISCam(model, model.features[-1])
    out = method.attribute(x, target=[0, 1, 2], n_steps=3, batch_size=4)
    expected = hand_score_cam(model, x, [0, 1, 2], mask_scales=(1 / 3, 2 / 3, 1.0))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    one_step = method.attribute(x, target=[0, 1, 2], n_steps=1)
    plain = LayerScoreCam(model, model.features[-1]).attribute(x, target=[0, 1, 2])
    torch.testing.assert_close(one_step, plain)


class FailsOnSecondCall(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.fail, self.calls = model, FailingModule(), 0

    def forward(self, x):
        self.calls += 1
        self.fail.armed = self.calls > 1
        return self.model(self.fail(x))


def test_no_trace_after_success_and_after_a_failing_masked_pass():
    model, x = strided_model(2), conv_input(2)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    before = snapshot(model, (x,))
    LayerScoreCam(model, model.features[-1]).attribute(x, target=[0, 1, 2], batch_size=4)
    assert_unchanged(model, (x,), before)
    failing = FailsOnSecondCall(model)
    with pytest.raises(RuntimeError, match="boom"):
        LayerScoreCam(failing, model.features[-1]).attribute(x, target=0)
    assert hook_count(failing) == 0


def test_channels_last_inputs_stay_channels_last():
    model, x = strided_model(2), conv_input(2)
    formats = []
    inner = model.forward
    model.forward = lambda inp: formats.append(inp.is_contiguous(
        memory_format=torch.channels_last)) or inner(inp)
    fast = x.contiguous(memory_format=torch.channels_last)
    out = LayerScoreCam(model, model.features[-1]).attribute(fast, target=[0, 1, 2])
    assert all(formats)
    del model.forward
    reference = LayerScoreCam(model, model.features[-1]).attribute(x, target=[0, 1, 2])
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


def test_token_layer_through_reshape_transform():
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(2, 3, 16, 16)
    method = LayerScoreCam(model, model.blocks[-1], reshape_transform=tokens_to_grid(n_prefix=1))
    out = method.attribute(x, target=[1, 2], batch_size=8)
    assert out.shape == (2, 1, 4, 4) and torch.isfinite(out).all() and out.abs().sum() > 0


def test_progress_bar(capsys):
    model, x = strided_model(1), conv_input(1, batch=1)
    LayerScoreCam(model, model.features[-1]).attribute(x, target=0, show_progress=True)
    assert "Score Cam" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(target=0, batch_size=0), ValueError, "batch_size"),
        (dict(target=0, score="probability"), ValueError, "score must be"),
        (dict(target=None), ValueError, "needs a class target"),
        (dict(target=0, baselines=torch.zeros(2, 3, 5, 5)), ValueError, "baselines"),
        (dict(target=0, additional_forward_args=(torch.ones(2),)), ValueError, "batch"),
    ],
    ids=["batch-size", "score", "softmax-without-target", "baseline-batch", "extra-arg-batch"],
)
def test_clear_errors(kwargs, error, message):
    model, x = strided_model(2), conv_input(2)
    with pytest.raises(error, match=message):
        LayerScoreCam(model, model.features[-1]).attribute(x, **kwargs)
    assert hook_count(model) == 0


def test_layer_and_input_ranks_must_allow_masks():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    with pytest.raises(ValueError, match=r"\(N, K, L\)"):
        LayerScoreCam(mlp, mlp[1]).attribute(torch.randn(2, 4), target=0)
    model = conv_model(2)
    flat = nn.Sequential(nn.Unflatten(1, (3, 5, 5)), model).eval()
    with pytest.raises(ValueError, match="no input tensor has spatial"):
        LayerScoreCam(flat, model.features[-1]).attribute(torch.randn(2, 75), target=0)
    assert hook_count(flat) == 0 and hook_count(mlp) == 0


def test_channels_last_chunks_match_and_fall_back_for_view_models() -> None:
    """CPU chunks run channels-last by default: the same map as the input's own format, and a
    model that cannot take channels-last inputs (it calls ``.view``) falls back after the first
    chunk instead of failing."""
    torch.manual_seed(0)

    class ViewsInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.fc = nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            x = x.view(x.shape[0], -1).view(x.shape[0], 3, 6, 6)  # fails if channels-last
            return self.fc(self.act(self.conv(x)).reshape(x.shape[0], -1))

    for model in (ViewsInput().eval(),):
        x = torch.randn(2, 3, 6, 6)
        fast = LayerScoreCam(model, model.act)
        plain = LayerScoreCam(model, model.act)
        plain.channels_last_chunks = False
        torch.testing.assert_close(fast.attribute(x, target=1, batch_size=3),
                                   plain.attribute(x, target=1, batch_size=3))
    conv = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    plain = LayerScoreCam(conv, conv[1])
    plain.channels_last_chunks = False
    torch.testing.assert_close(LayerScoreCam(conv, conv[1]).attribute(x, target=0, batch_size=4),
                               plain.attribute(x, target=0, batch_size=4))
