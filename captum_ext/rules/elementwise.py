"""Pass-through rules for element-wise activations and normalisation layers (spec §2).

* :class:`IdentityRule`: relevance passes an element-wise map unchanged, ``R_in = R_out``
  (AttnLRP's identity rule for GELU/SiLU; RelP's "Identity-rule"; AGF's pass-through for batch
  norm). Surrogate ``t = x ⊙ sg(f(x) / (x + ε sign₀ x))``, so ``x ⊙ ∂t/∂x · c = f(x)·c``.
  Needed for activations whose gradient is not ``f(x)/x`` (GELU, SiLU, ReLU6 above 6, tanh,
  eval-mode batch norm with a bias); a ReLU already passes relevance unchanged under the plain
  gradient.
* :class:`NormRule`: LayerNorm/RMSNorm/GroupNorm/BatchNorm with their statistics treated as
  constants (the LN-rule of Ali et al. 2022 and AttnLRP): ``y = (x − μ) / sg(σ) · γ + β``. The
  centring stays linear, so the layer is linear in ``x`` during the backward pass and relevance
  is conserved up to what the bias ``β`` absorbs. For an eval-mode batch norm the statistics are
  already constants and the rule equals the plain gradient.
"""

from __future__ import annotations

from typing import Any

import torch

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from captum_ext.rules._core import OutputRule, stabilize

__all__ = ["IdentityRule", "NormRule"]


class IdentityRule(OutputRule):
    """Relevance passes an element-wise module unchanged: ``R_in = R_out`` (up to ``ε``).

    Only for element-wise modules (the output has the input's shape and each output depends on
    one input); the stabiliser ε = 1e-6 is RelP's (``z + (sign z + [z = 0])·1e-6``).
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = float(epsilon)

    def surrogate(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        x = inputs[0]
        if not isinstance(x, Tensor) or x.shape != output.shape:
            raise TypeError(
                f"IdentityRule needs an element-wise module (output shaped like the input); "
                f"{type(module).__name__} maps {tuple(getattr(x, 'shape', ()))} to "
                f"{tuple(output.shape)}."
            )
        return x * (output / stabilize(x, self.epsilon)).detach()


def _layer_norm(module: nn.LayerNorm, x: Tensor) -> Tensor:
    dims = tuple(range(-len(module.normalized_shape), 0))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=False)
    y = (x - mean) / torch.sqrt(var + module.eps).detach()
    if module.weight is not None:
        y = y * module.weight
    if getattr(module, "bias", None) is not None:
        y = y + module.bias
    return y


def _rms_norm(module: nn.Module, x: Tensor) -> Tensor:
    dims = tuple(range(-len(module.normalized_shape), 0))
    eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
    y = x / torch.sqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps).detach()
    return y * module.weight if module.weight is not None else y


def _group_norm(module: nn.GroupNorm, x: Tensor) -> Tensor:
    n, c = x.shape[:2]
    grouped = x.reshape(n, module.num_groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    std = torch.sqrt(grouped.var(-1, keepdim=True, unbiased=False) + module.eps).detach()
    y = ((grouped - mean) / std).reshape(x.shape)
    if module.affine:
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = y * module.weight.reshape(shape) + module.bias.reshape(shape)
    return y


def _batch_norm(module: _BatchNorm, x: Tensor) -> Tensor:
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    use_batch = module.training or module.running_mean is None
    if use_batch:
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=False)
    else:
        mean = module.running_mean.reshape(shape)
        var = module.running_var.reshape(shape)
    y = (x - mean) / torch.sqrt(var + module.eps).detach()
    if module.affine:
        y = y * module.weight.reshape(shape) + module.bias.reshape(shape)
    return y


class NormRule(OutputRule):
    """The LN-rule: the normaliser (std or RMS) is a constant in the backward pass.

    Supports ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.GroupNorm`` and ``nn.BatchNorm1d/2d/3d``.
    """

    def check(self, module: nn.Module) -> None:
        rms = getattr(nn, "RMSNorm", None)
        kinds = (nn.LayerNorm, nn.GroupNorm, _BatchNorm) + ((rms,) if rms else ())
        if not isinstance(module, kinds):
            raise TypeError(
                f"NormRule applies to LayerNorm, RMSNorm, GroupNorm and BatchNorm layers, not to "
                f"{type(module).__name__}; use IdentityRule for other element-wise layers."
            )

    def surrogate(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        x = inputs[0]
        if isinstance(module, nn.LayerNorm):
            return _layer_norm(module, x)
        if isinstance(module, nn.GroupNorm):
            return _group_norm(module, x)
        if isinstance(module, _BatchNorm):
            return _batch_norm(module, x)
        return _rms_norm(module, x)


