"""Property: the fused inference copy computes what the model computes, and leaves no trace.

Generated chains ``[pad] → conv → [batch norm] → [clamp] → head`` over every rank, kernel,
stride, dilation, grouping, padding form, norm mode and activation form that
:mod:`captum_ext._fused_inference` recognises (and some it must leave alone).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from captum_ext._fused_inference import FusedConvolution, fused_copy
from tests._helpers import hook_count

CONV_MODULE = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_FUNCTION = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
PAD_MODULE = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}


class Chain(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        rank, channels = config["rank"], config["channels"]
        groups = channels if config["depthwise"] else 1
        self.conv = CONV_MODULE[rank](
            channels, channels, config["kernel"], stride=config["stride"],
            dilation=config["dilation"], groups=groups, bias=config["bias"],
        )
        pads = config["pads"]
        self.pad: Optional[nn.Module] = None
        if config["pad_form"] == "module" and pads is not None:
            self.pad = PAD_MODULE[rank](pads, 0.0)
        norm = config["norm"]
        self.norm: Optional[nn.Module] = None
        if norm != "none":
            self.norm = NORM[rank](channels, affine=norm != "eval-plain")
            generator = torch.Generator().manual_seed(config["seed"])
            self.norm.running_mean.copy_(torch.randn(channels, generator=generator))
            self.norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.3)
            if self.norm.affine:
                self.norm.weight.data.copy_(torch.randn(channels, generator=generator))
                self.norm.bias.data.copy_(torch.randn(channels, generator=generator))
            self.norm.train(norm == "train")
        activation = config["activation"]
        self.act: Optional[nn.Module] = {
            "relu": nn.ReLU(), "relu6": nn.ReLU6(), "hardtanh": nn.Hardtanh(-0.5, 0.5),
        }.get(activation)
        self.head = nn.Linear(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        config = self.config
        pads = config["pads"]
        if self.pad is not None:
            x = self.pad(x)
        elif config["pad_form"] == "function" and pads is not None:
            x = F.pad(x, pads)
        if config["conv_form"] == "module":
            x = self.conv(x)
        else:
            x = CONV_FUNCTION[config["rank"]](
                x, self.conv.weight, self.conv.bias, self.conv.stride, self.conv.padding,
                self.conv.dilation, self.conv.groups,
            )
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        elif config["activation"] == "F.relu":
            x = F.relu(x)
        elif config["activation"] == "method":
            x = x.relu()
        return self.head(x.flatten(2).mean(2))


@st.composite
def chains(draw: Any) -> dict[str, Any]:
    rank = draw(st.integers(1, 3))
    pad_amounts = draw(st.lists(st.integers(0, 2), min_size=2 * rank, max_size=2 * rank))
    symmetric = draw(st.booleans())
    if symmetric:
        pad_amounts[1::2] = pad_amounts[0::2]
    return {
        "rank": rank,
        "channels": draw(st.sampled_from([2, 4])),
        "kernel": draw(st.sampled_from([1, 3])),
        "stride": draw(st.sampled_from([1, 2])),
        "dilation": draw(st.sampled_from([1, 2])),
        "depthwise": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "pads": draw(st.sampled_from([None, tuple(pad_amounts)])),
        "pad_form": draw(st.sampled_from(["module", "function"])),
        "conv_form": draw(st.sampled_from(["module", "function"])),
        "norm": draw(st.sampled_from(["none", "eval", "eval-plain", "train"])),
        "activation": draw(
            st.sampled_from(["none", "relu", "relu6", "hardtanh", "F.relu", "method"])
        ),
        "seed": draw(st.integers(0, 1000)),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_fused_copy_computes_the_model_and_leaves_no_trace(config: dict[str, Any]) -> None:
    torch.manual_seed(config["seed"])
    model = Chain(config)
    model.eval()
    if config["norm"] == "train":
        model.norm.train()  # type: ignore[union-attr]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x = torch.randn(2, config["channels"], *([9] * config["rank"]))
    x_before = x.clone()
    copy = fused_copy(model)
    pads = config["pads"]
    absorbable_pad = pads is not None and list(pads[0::2]) == list(pads[1::2])
    foldable_norm = config["norm"] in ("eval", "eval-plain")
    attachable_clamp = config["activation"] != "none" and config["norm"] != "train"
    assert (copy is not None) == (absorbable_pad or foldable_norm or attachable_clamp)
    if copy is not None:
        fused = [m for m in copy.modules() if isinstance(m, FusedConvolution)]
        assert len(fused) == 1
        # what the copy folded is exactly what the model allowed
        norm_left = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in copy.modules())
        assert norm_left == (config["norm"] == "train")
        with torch.no_grad():
            if config["norm"] == "train":
                model.norm.eval()  # type: ignore[union-attr]
                copy.get_submodule("norm").eval()  # the same module: compare without updates
            expected = model(x)
            got = copy(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        if config["norm"] == "train":
            model.norm.train()  # type: ignore[union-attr]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert hook_count(model) == 0
    assert torch.equal(x, x_before)
