"""The fused inference copy used by Score-CAM's masked passes (captum_ext._fused_inference)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_ext._fused_inference import (
    FusedConvolution,
    fused_copy,
    may_survive_fusion,
    validated_fused_copy,
)
from captum_ext.attr import LayerAblationCam, LayerScoreCam
from tests._helpers import hook_count

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
ZERO_PAD = {1: nn.ConstantPad1d, 2: nn.ZeroPad2d, 3: nn.ConstantPad3d}


def _randomise_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            channels = module.num_features
            module.running_mean.copy_(torch.randn(channels, generator=generator))
            module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.randn(channels, generator=generator))
                module.bias.data.copy_(torch.randn(channels, generator=generator))
    return model


class PadConvNormClamp(nn.Module):
    """pad → conv → BN → ReLU6 (modules), a functional conv → BN → F.relu, then a head."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d(1) if rank == 2 else ZERO_PAD[rank](1, 0.0)
        self.conv = CONV[rank](3, 6, 3, bias=False)
        self.norm = NORM[rank](6)
        self.act = nn.ReLU6()
        self.weight = nn.Parameter(torch.randn(5, 6, *([3] * rank)) * 0.3)
        self.norm2 = NORM[rank](5)
        self.head = nn.Linear(5, 4)
        self.rank = rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv(self.pad(x))))
        convolve = (F.conv1d, F.conv2d, F.conv3d)[self.rank - 1]
        x = F.relu(self.norm2(convolve(x, self.weight, None, 1, 1)))
        return self.head(x.flatten(2).mean(2))


def _input(rank: int, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, *([7] * rank), generator=torch.Generator().manual_seed(rank))


def _fused_modules(copy: nn.Module) -> list[FusedConvolution]:
    return [m for m in copy.modules() if isinstance(m, FusedConvolution)]


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_copy_equals_the_model_and_folds_by_the_formula(rank: int) -> None:
    torch.manual_seed(rank)
    model = _randomise_statistics(PadConvNormClamp(rank).eval())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = _input(rank)
    copy = fused_copy(model)
    assert copy is not None
    first, second = _fused_modules(copy)
    # the zero padding moved into the convolution, BN folded, ReLU6 -> hardtanh(0, 6)
    assert first.padding == [1] * rank and first.activation == ("hardtanh", [0.0, 6.0])
    assert second.padding == [1] * rank and second.activation == ("relu", [])
    norm = model.norm
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    expected_weight = model.conv.weight * scale.reshape(-1, *([1] * (rank + 1)))
    expected_bias = norm.bias - norm.running_mean * scale
    torch.testing.assert_close(first.weight, expected_weight.detach())
    torch.testing.assert_close(first.bias, expected_bias.detach())
    names = {type(m).__name__ for m in copy.modules()}
    assert not names & {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "ReLU6"}
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), rtol=1e-5, atol=1e-5)
    # the model is untouched: same modules, same tensors, same mode, no hooks
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.norm, nn.modules.batchnorm._BatchNorm) and not model.training
    assert hook_count(model) == 0


def test_autograd_runs_the_plain_path_with_the_same_input_gradient() -> None:
    torch.manual_seed(0)
    model = _randomise_statistics(PadConvNormClamp(2).eval())
    copy = fused_copy(model)
    assert copy is not None
    x = _input(2).requires_grad_()
    (grad_model,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    (grad_copy,) = torch.autograd.grad(copy(x)[:, 1].sum(), x)
    torch.testing.assert_close(grad_copy, grad_model, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_asymmetric_padding_and_training_norms_are_left_alone() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pad = nn.ZeroPad2d((0, 1, 0, 1))  # "same" padding of a stride-2 convolution
            self.conv = nn.Conv2d(3, 4, 3, stride=2)
            self.norm = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.norm(self.conv(self.pad(x))).flatten(1)

    model = _randomise_statistics(Model().eval())
    copy = fused_copy(model)
    assert copy is not None
    (fused,) = _fused_modules(copy)
    assert fused.padding == [0, 0] and fused.activation is None  # the pad stays a module
    assert any(isinstance(m, nn.ZeroPad2d) for m in copy.modules())
    x = _input(2)
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), rtol=1e-5, atol=1e-5)
    model.norm.train()  # batch statistics: nothing may be folded, and a lone conv gains nothing
    assert fused_copy(model) is None
    assert model.norm.training


def test_hooks_on_fused_modules_prevent_a_copy_and_others_still_run() -> None:
    model = _randomise_statistics(PadConvNormClamp(2).eval())
    for module in (model.conv, model.norm, model.act, model.pad, model):
        handle = module.register_forward_hook(lambda *args: None)
        try:
            assert fused_copy(model) is None, type(module).__name__
        finally:
            handle.remove()
    calls: list[tuple[int, ...]] = []
    handle = model.head.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    try:
        copy = fused_copy(model)  # the head is not fused: the copy calls it, hook and all
        assert copy is not None and calls == []
        with torch.no_grad():
            copy(_input(2))
        assert calls == [(3, 4)]
    finally:
        handle.remove()
    assert hook_count(model) == 0


def test_no_copy_for_untraceable_models_and_functions() -> None:
    model = _randomise_statistics(PadConvNormClamp(2).eval())
    assert fused_copy(lambda x: model(x)) is None
    assert fused_copy(nn.DataParallel(model)) is None

    class Branches(PadConvNormClamp):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 2
            return super().forward(x)

    branching = _randomise_statistics(Branches(2).eval())
    assert fused_copy(branching) is None


def test_tracing_side_effects_on_module_attributes_are_undone() -> None:
    class Recorder(PadConvNormClamp):
        def __init__(self) -> None:
            super().__init__(2)
            self.calls: list[int] = []
            self.cache: dict[str, object] = {}
            self.last = None

        def forward(self, x):
            self.calls.append(x.shape[0])
            self.cache["input"] = x
            self.last = x
            return super().forward(x)

    model = _randomise_statistics(Recorder().eval())
    x = _input(2)
    with torch.no_grad():
        model(x)
    calls, cache_input, last = list(model.calls), model.cache["input"], model.last
    assert fused_copy(model) is None
    assert model.calls == calls and model.cache["input"] is cache_input and model.last is last


def test_validation_rejects_a_copy_that_disagrees() -> None:
    model = _randomise_statistics(PadConvNormClamp(2).eval())
    x = _input(2)
    with torch.no_grad():
        output = model(x)
    assert validated_fused_copy(model, (x,), None, output) is not None
    assert validated_fused_copy(model, (x,), None, output + 0.1 * output.abs().max()) is None
    assert validated_fused_copy(model, (x,), None, output[:1]) is None  # wrong shape


class NormNet(nn.Module):
    """A conv net whose layers fuse: conv → BN → ReLU6 twice, GAP and a linear head."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            CONV[rank](3, 6, 3, padding=1), NORM[rank](6), nn.ReLU6(),
            CONV[rank](6, 8, 3, padding=1), NORM[rank](8), nn.ReLU6(),
        )
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.features(x).flatten(2).mean(2))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_score_cam_through_the_copy_equals_the_model(rank: int, caplog) -> None:
    torch.manual_seed(rank)
    model = _randomise_statistics(NormNet(rank).eval(), seed=rank)
    x = _input(rank, batch=2)
    layer = model.features[4]  # a batch norm that the copy folds away: no hook needed there
    fast = LayerScoreCam(model, layer)
    plain = LayerScoreCam(model, layer)
    plain.fused_inference_chunks = False
    with caplog.at_level(logging.DEBUG, logger="captum_ext.attr._channel_scoring"):
        maps = fast.attribute(x, target=[1, 3], batch_size=5)
    assert "through the fused copy" in caplog.text
    torch.testing.assert_close(maps, plain.attribute(x, target=[1, 3], batch_size=5),
                               rtol=1e-4, atol=1e-6)
    assert hook_count(model) == 0 and not model.training


def test_ss_cam_and_is_cam_use_the_copy_too(caplog) -> None:
    from captum_ext.attr import LayerISCam, LayerSSCam

    model = _randomise_statistics(NormNet(2).eval())
    x = _input(2, batch=2)

    def run(method: LayerScoreCam) -> torch.Tensor:
        if isinstance(method, LayerSSCam):
            return method.attribute(x, target=[0, 2], batch_size=7, n_samples=3,
                                    generator=torch.Generator().manual_seed(1))
        return method.attribute(x, target=[0, 2], batch_size=7)

    for method_class in (LayerSSCam, LayerISCam):
        fast = method_class(model, model.features[4])
        plain = method_class(model, model.features[4])
        plain.fused_inference_chunks = False
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="captum_ext.attr._channel_scoring"):
            maps = run(fast)
        assert "through the fused copy" in caplog.text
        torch.testing.assert_close(maps, run(plain), rtol=1e-4, atol=1e-6)


def test_ablation_cam_uses_the_copy_only_when_it_calls_the_hooked_layer(caplog) -> None:
    """Ablation-CAM replaces the layer's tensor with a hook during its passes, so the copy is
    used only if it calls that layer itself: not for a batch norm that the copy folds away,
    yes for a pooling layer that it leaves alone. The maps are the model's either way."""
    model = _randomise_statistics(NormNet(2).eval())
    pooled = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                           nn.Linear(32, 4)).eval()
    x = _input(2, batch=2)
    for net, layer, expected in ((model, model.features[4], False), (pooled, pooled[1], True)):
        fast, plain = LayerAblationCam(net, layer), LayerAblationCam(net, layer)
        plain.fused_inference_chunks = False
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="captum_ext.attr._channel_scoring"):
            maps = fast.attribute(x, target=[0, 3], batch_size=4)
        assert ("through the fused copy" in caplog.text) == expected
        torch.testing.assert_close(maps, plain.attribute(x, target=[0, 3], batch_size=4),
                                   rtol=1e-4, atol=1e-6)
        assert hook_count(net) == 0


def test_which_modules_a_copy_may_still_call() -> None:
    for module in (nn.AdaptiveAvgPool2d(1), nn.Linear(2, 2), nn.Dropout(), nn.SiLU()):
        assert may_survive_fusion(module), module
    for module in (nn.ReLU(), nn.ReLU6(), nn.Conv2d(1, 1, 1), nn.BatchNorm3d(2),
                   nn.ZeroPad2d(1), nn.Sequential(nn.Identity()), NormNet(1)):
        assert not may_survive_fusion(module), type(module).__name__


def test_efficientnet_copy_matches_and_gives_the_same_score_cam() -> None:
    from captum_ext.models import load_efficientnet_lite0

    model = load_efficientnet_lite0()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = model(x)
    copy = validated_fused_copy(model, (x,), None, output)
    assert copy is not None
    # every conv of EfficientNet-Lite0 is followed by a BN: 49 chains, no BN left
    assert len(_fused_modules(copy)) == 49
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())
    first_channels = LayerScoreCam(model, model._bn1, reshape_transform=lambda a: a[:, :6])
    plain = LayerScoreCam(model, model._bn1, reshape_transform=lambda a: a[:, :6])
    plain.fused_inference_chunks = False
    torch.testing.assert_close(
        first_channels.attribute(x[:1], target=285, batch_size=4),
        plain.attribute(x[:1], target=285, batch_size=4),
        rtol=1e-4, atol=1e-6,
    )
