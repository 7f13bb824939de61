"""Shared test helpers: tiny models, state snapshots and hook checks."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from captum_ext.models import ConvClassifier


def conv_model(rank: int, seed: int = 0, **kwargs: Any) -> ConvClassifier:
    torch.manual_seed(seed)
    return ConvClassifier(spatial_dims=rank, **kwargs).eval()


def conv_input(rank: int, batch: int = 3, size: int = 5, channels: int = 3, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, channels) + (size,) * rank, generator=generator)


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


@dataclass
class StateSnapshot:
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    grads: dict[str, Tensor | None]
    params: dict[str, Tensor]
    inputs: list[Tensor]
    input_requires_grad: list[bool]


def snapshot(model: nn.Module, inputs: tuple[Tensor, ...]) -> StateSnapshot:
    return StateSnapshot(
        training={n: m.training for n, m in model.named_modules()},
        requires_grad={n: p.requires_grad for n, p in model.named_parameters()},
        grads={n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        params={n: p.detach().clone() for n, p in model.state_dict().items()},
        inputs=[x.detach().clone() for x in inputs],
        input_requires_grad=[x.requires_grad for x in inputs],
    )


def assert_unchanged(model: nn.Module, inputs: tuple[Tensor, ...], before: StateSnapshot) -> None:
    after = snapshot(model, inputs)
    assert hook_count(model) == 0, "a hook was left on the model"
    assert after.training == before.training, "model.training changed"
    assert after.requires_grad == before.requires_grad, "a parameter's requires_grad changed"
    for name, grad in before.grads.items():
        now = after.grads[name]
        assert (grad is None) == (now is None), f".grad of {name} appeared or vanished"
        if grad is not None:
            assert torch.equal(grad, now), f".grad of {name} changed"
    for name, value in before.params.items():
        assert torch.equal(value, after.params[name]), f"{name} changed"
    for old, new in zip(before.inputs, after.inputs):
        assert _same(old, new), "an input was mutated"
    assert after.input_requires_grad == before.input_requires_grad, "input requires_grad changed"


def _same(old: Tensor, new: Tensor) -> bool:
    """``torch.equal``, with NaN equal to NaN (hostile inputs hold NaN)."""
    if old.shape != new.shape or old.dtype != new.dtype:
        return False
    if old.is_floating_point() or old.is_complex():
        return bool((old == new).logical_or(old.isnan() & new.isnan()).all())
    return torch.equal(old, new)


class FailingModule(nn.Module):
    """Raises in forward when armed, to test cleanup after exceptions."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: Tensor) -> Tensor:
        if self.armed:
            raise RuntimeError("boom")
        return x


@contextmanager
def armed(module: FailingModule) -> Iterator[None]:
    module.armed = True
    try:
        yield
    finally:
        module.armed = False
