"""Canonizers: temporary, value-preserving rewrites of a model that make rules apply cleanly.

:class:`MergeBatchNorm` folds each batch norm into the linear or convolution layer that feeds it
(zennit's ``SequentialMergeBatchNorm`` idea; spec §1.2), so that rules such as z⁺ or γ see the
effective weights ``w·γ/σ`` and bias ``(b − μ)·γ/σ + β``. The folded layer's parameters are
overwritten in place (a missing bias is added as a new parameter) and the batch norm is turned
into an exact identity by a forward hook. :meth:`Canonizer.apply` returns a handle whose
``remove()`` restores every parameter bit for bit and deletes added biases and hooks.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from captum_ext.rules._core import RuleHandle

__all__ = ["Canonizer", "MergeBatchNorm", "find_batchnorm_pairs"]

_Linearish = (nn.Linear, _ConvNd)


class Canonizer:
    """A reversible model rewrite; ``apply(model)`` returns a handle that undoes it."""

    def apply(self, model: nn.Module) -> RuleHandle:  # pragma: no cover - interface
        raise NotImplementedError


def _sequential_pairs(model: nn.Module) -> list[tuple[nn.Module, _BatchNorm]]:
    pairs = []
    for container in model.modules():
        if isinstance(container, nn.Sequential):
            children = list(container.children())
            for first, second in zip(children, children[1:]):
                if isinstance(first, _Linearish) and isinstance(second, _BatchNorm):
                    pairs.append((first, second))
    return pairs


def find_batchnorm_pairs(model: nn.Module, *example_inputs: Any) -> list[tuple[nn.Module, _BatchNorm]]:
    """Trace one forward pass and return the (linear/conv, batch norm) pairs where the batch norm
    reads the layer's output tensor directly (works for models that are not ``nn.Sequential``).

    The caller must make sure that the layer output feeds nothing but the batch norm.
    """
    produced: dict[int, nn.Module] = {}
    pairs: list[tuple[nn.Module, _BatchNorm]] = []
    handles = []

    def record(module: nn.Module, _: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            produced[id(output)] = module

    def match(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        layer = produced.get(id(inputs[0])) if inputs and isinstance(inputs[0], Tensor) else None
        if layer is not None and all(bn is not module for _, bn in pairs):
            pairs.append((layer, module))  # type: ignore[arg-type]

    try:
        for module in model.modules():
            if isinstance(module, _Linearish):
                handles.append(module.register_forward_hook(record))
            elif isinstance(module, _BatchNorm):
                handles.append(module.register_forward_pre_hook(match))
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return pairs


class MergeBatchNorm(Canonizer):
    """Fold eval-mode batch norms into the preceding linear/conv layer for the duration.

    Args:
        pairs: explicit ``(layer, batch_norm)`` pairs; by default, consecutive pairs inside
            ``nn.Sequential`` containers (use :func:`find_batchnorm_pairs` for other models).
    """

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]] | None = None) -> None:
        self.pairs = None if pairs is None else list(pairs)

    def apply(self, model: nn.Module) -> RuleHandle:
        pairs = _sequential_pairs(model) if self.pairs is None else self.pairs
        undo: list[Any] = []

        def restore() -> None:
            for step in reversed(undo):
                step()

        try:
            for layer, norm in pairs:
                undo.append(self._merge(layer, norm))
        except BaseException:
            restore()
            raise
        return RuleHandle(restore)

    @staticmethod
    def _merge(layer: nn.Module, norm: nn.Module) -> Any:
        if not isinstance(layer, _Linearish) or not isinstance(norm, _BatchNorm):
            raise TypeError(
                f"MergeBatchNorm folds a batch norm into a Linear/Conv layer; got "
                f"({type(layer).__name__}, {type(norm).__name__})."
            )
        if norm.training or norm.running_mean is None:
            raise ValueError(
                "MergeBatchNorm needs an eval-mode batch norm with running statistics; call "
                "model.eval() first."
            )
        if isinstance(layer, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            raise TypeError("MergeBatchNorm does not fold into transposed convolutions.")
        weight_before = layer.weight.detach().clone()
        had_bias = layer.bias is not None
        bias_before = layer.bias.detach().clone() if had_bias else None
        with torch.no_grad():
            scale = norm.running_var.add(norm.eps).rsqrt()
            if norm.affine:
                scale = scale * norm.weight
            shift = -norm.running_mean * scale
            if norm.affine:
                shift = shift + norm.bias
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.mul_(scale.reshape(shape))
            if had_bias:
                layer.bias.mul_(scale).add_(shift)
            else:
                layer.bias = nn.Parameter(shift.clone(), requires_grad=layer.weight.requires_grad)
        hook = norm.register_forward_hook(lambda module, inputs, output: inputs[0])

        def undo() -> None:
            hook.remove()
            with torch.no_grad():
                layer.weight.copy_(weight_before)
                if had_bias:
                    layer.bias.copy_(bias_before)
            if not had_bias:
                del layer.bias
                layer.register_parameter("bias", None)

        return undo
