"""Shared tiny models and brute-force helpers for the NormGrad tests (not a test module)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONV",
    "SIZE",
    "aggregate",
    "count_hooks",
    "layer_tensors",
    "make_input",
    "make_model",
    "patches",
    "positions",
]


CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
SIZE = {1: (9,), 2: (6, 5), 3: (4, 5, 3)}


def make_model(rank: int, seed: int = 0) -> nn.Sequential:
    """conv → ReLU → grouped conv → Tanh → strided conv → flatten → linear (3 classes)."""
    torch.manual_seed(seed)
    conv = CONV[rank]
    body = nn.Sequential(
        conv(2, 4, 3, padding=1), nn.ReLU(),
        conv(4, 6, 3, padding=1, groups=2), nn.Tanh(),
        conv(6, 4, 3, stride=2, padding=1), nn.Flatten(),
    )
    features = body(torch.zeros(1, 2, *SIZE[rank])).shape[1]
    return nn.Sequential(*body, nn.Linear(features, 3)).eval()


def make_input(rank: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 2, *SIZE[rank], generator=torch.Generator().manual_seed(seed))


def layer_tensors(model, layer, x, target, use_input=False):
    """(A, G) at ``layer`` by a plain hook and torch.autograd.grad (no Captum)."""
    saved = {}

    def hook(module, args, output):
        saved["a"] = args[0] if use_input else output

    handle = layer.register_forward_hook(hook)
    try:
        x = x.detach().requires_grad_(True)
        out = model(x)
    finally:
        handle.remove()
    target = torch.as_tensor(target).expand(x.shape[0])
    score = out.gather(1, target[:, None]).sum()
    return saved["a"].detach(), torch.autograd.grad(score, saved["a"])[0]


def positions(shape):
    return itertools.product(*(range(s) for s in shape))


def aggregate(c: torch.Tensor, phase2: str) -> torch.Tensor:
    c = c.flatten()
    values = {"norm": c.norm, "sum": c.sum, "max": c.max, "filter_norm": F.relu(c).norm}
    return values[phase2]()


def patches(a, kernel, stride=1, dilation=1, pad=None, mode="constant"):
    """Brute-force patches ``(N, K, *S_out, *kernel)`` with Tensor.unfold, any rank."""
    rank = a.dim() - 2
    pad = [kernel // 2 * dilation] * 2 * rank if pad is None else pad
    a = F.pad(a, pad, mode=mode) if mode != "constant" else F.pad(a, pad)
    span = (kernel - 1) * dilation + 1
    for dim in range(2, 2 + rank):
        a = a.unfold(dim, span, stride)
    index = (slice(None),) * (2 + rank) + (slice(None, None, dilation),) * rank
    return a[index]


def count_hooks(model: nn.Module) -> int:
    """Forward, pre-forward and backward hooks left on any module."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )
