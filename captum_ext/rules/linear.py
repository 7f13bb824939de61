"""LRP rules for linear and convolutional layers (ε, γ, z⁺, αβ, |z|), as gradient modifications.

Every rule here has the form (spec §1.1-1.2, Montavon et al., "Layer-Wise Relevance Propagation:
An Overview", 2019)::

    R_j = Σ_p κ_p Σ_k  ρ_p(a)_j ρ_p(w)_jk / z_pk · R_k,      z_pk = Σ_j ρ_p(a)_j ρ_p(w)_jk + ρ_p(b)_k

with one or two "parts" ``p`` (a coefficient ``κ_p`` and input/weight/bias transforms) and a
stabilised denominator ``z + ε·sign₀(z)``. In the modified-gradient form ``c = R / a`` this is the
VJP of the surrogate ``t = Σ_p κ_p z_p(a) ⊙ sg(y / z_p)`` (``sg`` = detach), because every input
transform used here is positively homogeneous (``ρ(a) = ρ'(a)·a``: identity, ``a⁺``, ``a⁻``,
``|a|``). The layer is re-run with the transformed parameters through
``torch.func.functional_call``, so any ``nn.Linear`` or ``nn.Conv1d/2d/3d`` subclass whose forward
reads ``self.weight``/``self.bias`` works (including "same"-padding wrappers), in 1D, 2D and 3D.

Defaults: ε = 1e-6 (zennit's stabiliser; Captum's ``EpsilonRule`` uses 1e-9), γ = 0.25 (Captum's
``GammaRule`` and zennit's EpsilonGammaBox convs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.conv import _ConvNd

from captum_ext.rules._core import OutputRule, stabilize

__all__ = ["AbsZ", "AlphaBeta", "Epsilon", "Gamma", "LinearLayerRule", "ZPlus"]

Transform = Callable[[Tensor], Tensor]


def _identity(t: Tensor) -> Tensor:
    return t


def _positive(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def _negative(t: Tensor) -> Tensor:
    return t.clamp(max=0)


@dataclass(frozen=True)
class _Part:
    """``κ · Σ_c layer(in_c(a); w_c(W))`` plus ``bias(b)``, with its own denominator."""

    combos: tuple[tuple[Transform, Transform], ...]
    bias: Transform | None
    coefficient: float = 1.0


def run_with_params(module: nn.Module, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``module(x)`` with its weight and bias replaced (the module's own forward, padding included)."""
    params: dict[str, Tensor] = {"weight": weight}
    if getattr(module, "bias", None) is not None:
        params["bias"] = bias if bias is not None else torch.zeros_like(module.bias)
    return functional_call(module, params, (x,))


class LinearLayerRule(OutputRule):
    """Base of the rules for ``nn.Linear`` and convolutions; subclasses list their parts."""

    def __init__(self, epsilon: float = 1e-6) -> None:
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
        self.epsilon = float(epsilon)

    def parts(self) -> Sequence[_Part]:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, module: nn.Module) -> None:
        if not isinstance(module, (nn.Linear, _ConvNd)):
            raise TypeError(
                f"{type(self).__name__} applies to nn.Linear and convolution layers, not to "
                f"{type(module).__name__}."
            )

    def surrogate(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        x = inputs[0]
        weight = module.weight
        bias = getattr(module, "bias", None)
        total: Tensor | None = None
        for part in self.parts():
            z: Tensor | None = None
            for index, (transform_in, transform_w) in enumerate(part.combos):
                part_bias = None
                if index == 0 and part.bias is not None and bias is not None:
                    part_bias = part.bias(bias)
                term = run_with_params(module, transform_in(x), transform_w(weight), part_bias)
                z = term if z is None else z + term
            assert z is not None
            ratio = (output / stabilize(z, self.epsilon)).detach()
            piece = part.coefficient * z * ratio
            total = piece if total is None else total + piece
        assert total is not None
        return total


class Epsilon(LinearLayerRule):
    """LRP-ε: ``R_j = Σ_k a_j w_jk / (z_k + ε sign₀ z_k) · R_k`` (bias in ``z``, absorbing relevance)."""

    def parts(self) -> Sequence[_Part]:
        return (_Part(((_identity, _identity),), _identity),)


class Gamma(LinearLayerRule):
    """LRP-γ: ``ρ(w) = w + γ w⁺`` and ``ρ(b) = b + γ b⁺`` in numerator and denominator.

    Favours positive contributions; meant for layers whose inputs are non-negative (after a ReLU).
    γ = 0.25 as in Captum's ``GammaRule``.
    """

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-6) -> None:
        super().__init__(epsilon)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        self.gamma = float(gamma)

    def parts(self) -> Sequence[_Part]:
        gamma = self.gamma

        def rho(t: Tensor) -> Tensor:
            return t + gamma * t.clamp(min=0)

        return (_Part(((_identity, rho),), rho),)


class AlphaBeta(LinearLayerRule):
    """LRP-αβ: ``α·(positive contributions) − β·(negative contributions)``, ``α − β = 1``.

    Positive contributions are ``(a_j w_jk)⁺ = a⁺w⁺ + a⁻w⁻``, so inputs of either sign are handled.
    The bias is left out unless ``bias=True`` (then ``b⁺`` joins the positive part, ``b⁻`` the
    negative one).
    """

    def __init__(
        self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-6, bias: bool = False
    ) -> None:
        super().__init__(epsilon)
        if abs(alpha - beta - 1.0) > 1e-9 or beta < 0:
            raise ValueError(f"AlphaBeta needs alpha - beta = 1 and beta >= 0, got {alpha}, {beta}.")
        self.alpha, self.beta, self.bias = float(alpha), float(beta), bool(bias)

    def parts(self) -> Sequence[_Part]:
        positive = _Part(
            ((_positive, _positive), (_negative, _negative)),
            _positive if self.bias else None,
            self.alpha,
        )
        if self.beta == 0:
            return (positive,)
        negative = _Part(
            ((_positive, _negative), (_negative, _positive)),
            _negative if self.bias else None,
            -self.beta,
        )
        return (positive, negative)


class ZPlus(AlphaBeta):
    """The z⁺ rule (α1β0): only positive contributions, ``R_j = Σ_k (a_j w_jk)⁺ / Σ_j (a_j w_jk)⁺ · R_k``.

    Conserves relevance exactly wherever a unit has a positive contribution (no bias is used).
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__(alpha=1.0, beta=0.0, epsilon=epsilon)


class AbsZ(LinearLayerRule):
    """The absolute z-rule of AGF (Gur et al. 2021): ``R_j = Σ_k |a_j||w_jk| / Σ_j |a_j||w_jk| · R_k``.

    No bias; conserves relevance exactly wherever ``Σ_j |a_j||w_jk| > 0``.
    """

    def __init__(self, epsilon: float = 0.0) -> None:
        super().__init__(epsilon)

    def parts(self) -> Sequence[_Part]:
        return (_Part(((torch.abs, torch.abs),), None),)

    def surrogate(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        x = inputs[0]
        z = run_with_params(module, x.abs(), module.weight.abs(), None)
        ok = z.abs() > torch.finfo(z.dtype).tiny
        ratio = torch.where(ok, output / torch.where(ok, z, torch.ones_like(z)), 0.0).detach()
        return z * ratio
