"""Components, activation capture and patching hooks shared by :mod:`captum_ext.attr.relp`."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Component", "capture", "patch", "reduce_scores", "unit_masks"]


@dataclass(frozen=True, eq=False)
class Component:
    """A model component to score: a module's output (or input), optionally split into units.

    Args:
        module: the module; its activation is its output, or the first element of a tuple
            output (HuggingFace attention modules return ``(context, weights)``).
        heads: split the last dimension into this many equal heads (attention outputs before
            the output projection, e.g. ``BertSelfAttention``): one score per head.
        per_position: one score per position along dimension 1 (residual-stream positions).
        use_input: score the module's first input instead of its output (e.g. a block's input
            is the residual stream before the block).
    """

    module: nn.Module
    heads: int | None = None
    per_position: bool = False
    use_input: bool = False

    def grid(self, activation: Tensor) -> tuple[int, ...]:
        """The shape of the scores of one example: ``()``, ``(H,)``, ``(T,)`` or ``(T, H)``."""
        shape: tuple[int, ...] = ()
        if self.per_position:
            if activation.dim() < 3:
                raise ValueError(
                    f"per_position needs an activation (N, T, ...); the {type(self.module).__name__} "
                    f"activation has shape {tuple(activation.shape)}."
                )
            shape += (int(activation.shape[1]),)
        if self.heads:
            if activation.shape[-1] % self.heads:
                raise ValueError(
                    f"cannot split the last dimension ({activation.shape[-1]}) of the "
                    f"{type(self.module).__name__} activation into {self.heads} heads."
                )
            shape += (self.heads,)
        return shape


def as_components(layers: Any, use_input: bool) -> list[Component]:
    items = layers if isinstance(layers, (list, tuple)) else [layers]
    out = []
    for item in items:
        if isinstance(item, Component):
            out.append(item)
        elif isinstance(item, nn.Module):
            out.append(Component(item, use_input=use_input))
        else:
            raise TypeError(
                f"components must be nn.Module or captum_ext.attr.Component, got {type(item).__name__}."
            )
    return out


def _split_heads(t: Tensor, component: Component) -> Tensor:
    return t.unflatten(-1, (component.heads, -1)) if component.heads else t


def reduce_scores(products: Tensor, component: Component) -> Tensor:
    """Sum element-wise scores ``(N, *S)`` into one score per unit: ``(N, *grid)``."""
    t = _split_heads(products, component)
    if component.heads:
        t = t.movedim(-2, 2 if component.per_position else 1)
    keep = 1 + int(component.per_position) + int(bool(component.heads))
    return t.flatten(keep).sum(-1) if t.dim() > keep else t


def unit_masks(activation_shape: Sequence[int], component: Component) -> Tensor:
    """One boolean mask per unit, ``(U, *S)`` for activations ``(N, *S)``, in ``grid`` order."""
    sample = torch.zeros(tuple(activation_shape[1:]), dtype=torch.bool)
    grid = component.grid(torch.empty((1,) + tuple(activation_shape[1:]), device="meta"))
    units = int(torch.tensor(grid).prod()) if grid else 1
    masks = sample.unsqueeze(0).repeat((units,) + (1,) * sample.dim())
    for u in range(units):
        view = _split_heads(masks[u], component)
        index: list[Any] = []
        rest = u
        if component.per_position:
            per_pos = component.heads or 1
            index.append(rest // per_pos)
            rest = rest % per_pos
        if component.heads:
            index += [Ellipsis, rest, slice(None)]
        if index:
            view[tuple(index)] = True
        else:
            view.fill_(True)
    return masks


def _activation(value: Any) -> Tensor:
    tensor = value[0] if isinstance(value, (tuple, list)) else value
    if not isinstance(tensor, Tensor):
        raise TypeError(
            f"a component's activation must be a tensor (or a tuple starting with one), got "
            f"{type(tensor).__name__}."
        )
    return tensor


def _replace(value: Any, tensor: Tensor) -> Any:
    if isinstance(value, tuple):
        return (tensor,) + tuple(value[1:])
    if isinstance(value, list):
        return [tensor] + list(value[1:])
    return tensor


def _register(component: Component, fn: Any) -> Any:
    module = component.module
    if component.use_input:
        return module.register_forward_pre_hook(lambda m, args: fn(args))
    return module.register_forward_hook(lambda m, args, output: fn(output))


@contextmanager
def capture(components: Sequence[Component], *, track_grad: bool) -> Iterator[list[Tensor]]:
    """Record each component's activation during one forward pass (each must run once).

    With ``track_grad`` an activation that does not require a gradient (nothing before it
    does) is replaced by a leaf that does, so that ``∂m/∂a`` exists.
    """
    found: list[list[Tensor]] = [[] for _ in components]
    handles = []

    def make(index: int) -> Any:
        def fn(value: Any) -> Any:
            tensor = _activation(value)
            if track_grad and torch.is_grad_enabled() and not tensor.requires_grad:
                tensor = tensor.detach().requires_grad_(True)
                found[index].append(tensor)
                return _replace(value, tensor)
            found[index].append(tensor)
            return None

        return fn

    results: list[Tensor] = []
    try:
        for index, component in enumerate(components):
            handles.append(_register(component, make(index)))
        yield results
    finally:
        for handle in handles:
            handle.remove()
    for component, tensors in zip(components, found):
        if len(tensors) != 1:
            what = "did not run" if not tensors else f"ran {len(tensors)} times"
            raise ValueError(
                f"the component {type(component.module).__name__} {what} in one forward pass; "
                "each component must run exactly once (pick a module that is not shared)."
            )
        results.append(tensors[0])


@contextmanager
def patch(
    components: Sequence[Component],
    patched: Sequence[Tensor],
    masks: Sequence[Tensor],
    copies: int,
) -> Iterator[None]:
    """Replace, in ``copies`` stacked copies of the batch, the masked units by patched values.

    ``masks[i]`` has shape ``(copies, *S)`` for component ``i`` (all False where a copy does not
    patch that component); ``patched[i]`` is its activation on the patch input, ``(N, *S)``.
    """

    def make(index: int) -> Any:
        def fn(value: Any) -> Any:
            tensor = _activation(value)
            n = patched[index].shape[0]
            grouped = tensor.reshape((copies, n) + tuple(tensor.shape[1:]))
            mask = masks[index].to(tensor.device).unsqueeze(1)
            new = torch.where(mask, patched[index].unsqueeze(0).to(tensor.dtype), grouped)
            return _replace(value, new.reshape(tensor.shape))

        return fn

    handles = []
    try:
        for index, component in enumerate(components):
            handles.append(_register(component, make(index)))
        yield
    finally:
        for handle in handles:
            handle.remove()
