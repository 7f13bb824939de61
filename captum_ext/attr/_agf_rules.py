"""The AGF propagation steps as rules in the modified-gradient form (Gur, Ali, Wolf, AAAI 2021).

AGF carries relevance ``C`` backwards with layer-specific rules and, at convolutions, adds
residual terms built from a second "gradient stream" ``∇`` (the plain gradient of the re-weighted
class score) and from the activations, with a shift that conserves relevance (spec §4.1).

Here each step is an :class:`~captum_ext.rules.OutputRule`-like hook whose custom autograd node
maps the incoming modified gradient ``c_out`` to ``c_in`` in three moves: relevance at the
output ``C = y ⊙ c_out``, the AGF step ``C → C_in``, and ``c_in = C_in / x`` (0 where ``x = 0``,
where every AGF relevance is 0 too except at the z^B input layer; see the docstring of
:class:`AttributionGuidedFactorization`). Every other layer keeps its plain gradient, which in
this form is already AGF's LRP-0 for ReLU, pooling and residual additions (proportional split).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from captum_ext._tensor_ops import safe_divide
from captum_ext.rules import Rule, RuleHandle
from captum_ext.rules.linear import run_with_params

__all__ = ["AGFConvStep", "AGFOptions", "ZBoxStep", "factorize"]


class AGFOptions:
    """The paper's ablation switches (all on by default, as in the official code)."""

    def __init__(self, use_a: bool = True, use_fx: bool = True, use_fdx: bool = True,
                 use_m: bool = True, use_sigmoid: bool = True) -> None:
        self.use_a, self.use_fx, self.use_fdx = use_a, use_fx, use_fdx
        self.use_m, self.use_sigmoid = use_m, use_sigmoid


def _per_sample(t: Tensor, reduce: str) -> Tensor:
    flat = t.flatten(1)
    value = flat.amax(1) if reduce == "max" else flat.sum(1)
    return value.reshape((-1,) + (1,) * (t.dim() - 1))


def _vjp(fn: Callable[[Tensor], Tensor], at: Tensor, v: Tensor) -> Tensor:
    at = at.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(at), at, v)
    return grad


def factorize(x: Tensor, grad: Tensor, phi: Tensor) -> tuple[Tensor, Tensor]:
    """AGF's factorisation (§4.1 step 3): ``F_x`` from the activations, ``F_dx`` from the gradient.

    For ``T ∈ {x, ∇}``: ``H = sigmoid(10·T/max T)``; channel representatives of the foreground
    (``φ > 0``) and background (``φ < 0``): ``r± = mean_{φ≷0} H``; per-pixel ridge coefficients
    ``W = (RᵀR + I)⁻¹ RᵀH`` with ``R = [r⁻, r⁺]``; ``F = ReLU(W)⁺-coefficient − ReLU(W)⁻-coefficient``.
    Shapes: ``x``, ``grad`` ``(N, K, *S)``; ``phi`` ``(N, 1, *S)``; returns two ``(N, K, *S)``.
    """
    fg, bg = (phi > 0).flatten(2).to(x.dtype), (phi < 0).flatten(2).to(x.dtype)  # (N, 1, P)
    results = []
    for t in (grad, x):
        h = torch.sigmoid(10 * safe_divide(t, _per_sample(t, "max"))).flatten(2)  # (N, K, P)
        r_pos = safe_divide((h * fg).sum(-1), fg.sum((1, 2))[:, None])
        r_neg = safe_divide((h * bg).sum(-1), bg.sum((1, 2))[:, None])
        reps = torch.stack([r_neg, r_pos], -1)  # (N, K, 2)
        gram = reps.transpose(1, 2) @ reps + torch.eye(2, dtype=x.dtype, device=x.device)
        # float32 for 16-bit layers: torch has no 16-bit LU solve on CPU.
        solve_dtype = torch.promote_types(x.dtype, torch.float32)
        coeffs = torch.linalg.solve(
            gram.to(solve_dtype), (reps.transpose(1, 2) @ h).to(solve_dtype)
        ).clamp(min=0).to(x.dtype)  # (N, 2, P)
        f = (coeffs[:, 1] - coeffs[:, 0]).reshape((x.shape[0], 1) + tuple(x.shape[2:]))
        results.append(f.expand_as(x).clamp(min=0))
    f_dx, f_x = results
    return f_x, f_dx


class _RelevanceNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, step: "_RelevanceStep", payload: Any) -> Tensor:
        ctx.save_for_backward(x, y)
        ctx.step, ctx.payload = step, payload
        return y.clone()

    @staticmethod
    def backward(ctx: Any, c_out: Tensor) -> Any:
        x, y = ctx.saved_tensors
        step: _RelevanceStep = ctx.step
        step.busy = True
        try:
            with torch.enable_grad():
                r_in = step.propagate(x, y * c_out, ctx.payload)
        finally:
            step.busy = False
        return safe_divide(r_in.detach(), x), None, None, None


class _RelevanceStep(Rule):
    """A rule whose backward maps output relevance to input relevance for one module call."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.busy = False

    def payload(self) -> Any:
        return None

    def propagate(self, x: Tensor, r_out: Tensor, payload: Any) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def attach(self, module: nn.Module) -> RuleHandle:
        def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            if self.busy or not torch.is_grad_enabled() or not isinstance(output, Tensor):
                return None
            return _RelevanceNode.apply(inputs[0], output.detach(), self, self.payload())

        return RuleHandle(module.register_forward_hook(hook).remove)

    def conv(self, x: Tensor, weight: Tensor) -> Tensor:
        """The module's own forward (padding included), with ``weight`` and no bias."""
        return run_with_params(self.module, x, weight, None)


class ZBoxStep(_RelevanceStep):
    """AGF's input layer: the z^B rule with ``l = min(x)``, ``h = max(x)`` per example.

    ``R_j = Σ_k (x_j w_jk − l w⁺_jk − h w⁻_jk) / Σ_j (…) · R_k``.
    """

    def propagate(self, x: Tensor, r_out: Tensor, payload: Any) -> Tensor:
        w = self.module.weight
        low = torch.ones_like(x) * x.flatten(1).amin(1).reshape((-1,) + (1,) * (x.dim() - 1))
        high = torch.ones_like(x) * x.flatten(1).amax(1).reshape((-1,) + (1,) * (x.dim() - 1))
        w_pos, w_neg = w.clamp(min=0), w.clamp(max=0)
        z = self.conv(x, w) - self.conv(low, w_pos) - self.conv(high, w_neg)
        s = safe_divide(r_out, z)
        return (
            x * _vjp(lambda t: self.conv(t, w), x, s)
            - low * _vjp(lambda t: self.conv(t, w_pos), low, s)
            - high * _vjp(lambda t: self.conv(t, w_neg), high, s)
        )


class AGFConvStep(_RelevanceStep):
    """One AGF convolution step: the |z|-rule base relevance plus the class-guided residual terms.

    ``grad_stream()`` returns the plain gradient ``∇`` at this call's output (recorded in a
    first pass). With ``factorize=False`` only the base relevance is propagated (the official
    code's ``flat`` convolutions).
    """

    def __init__(self, module: nn.Module, grad_stream: Callable[[], Tensor],
                 options: AGFOptions, factorized: bool) -> None:
        super().__init__(module)
        self.grad_stream = grad_stream
        self.options = options
        self.factorized = factorized

    def payload(self) -> Any:
        return self.grad_stream() if self.factorized else None

    def propagate(self, x: Tensor, r_out: Tensor, grad_out: Any) -> Tensor:
        w_abs = self.module.weight.abs()
        mask = (r_out != 0).to(x.dtype)
        z = self.conv(x.abs(), w_abs) * mask
        base = x.abs() * _vjp(lambda t: self.conv(t, w_abs), x.abs(), safe_divide(r_out, z))
        if not self.factorized:
            return base
        opts, w = self.options, self.module.weight
        keep = (base != 0).to(x.dtype)
        extra = torch.zeros_like(base)
        numerator = torch.zeros_like(base)
        if opts.use_m:
            grad_x = _vjp(lambda t: self.conv(t, w), x, grad_out)
            m = (x * grad_x).mean(1, keepdim=True).clamp(min=0).expand_as(x)
            numerator = numerator + safe_divide(m, _per_sample(m, "max"))
        if opts.use_fx or opts.use_fdx:
            grad_masked = _vjp(lambda t: self.conv(t, w), x, grad_out * mask)
            f_x, f_dx = factorize(x, grad_masked, base.mean(1, keepdim=True))
            if opts.use_fx:
                numerator = numerator + f_x
            if opts.use_fdx:
                extra = extra + f_dx
        extra = extra + (numerator * torch.sigmoid(base) if opts.use_sigmoid else numerator)
        if opts.use_a:
            ones = torch.ones_like(x)
            z_ones = self.conv(ones, w_abs) * mask
            extra = extra + _vjp(lambda t: self.conv(t, w_abs), ones, safe_divide(r_out, z_ones))
        extra = extra * keep
        shift = safe_divide(_per_sample(extra, "sum"), _per_sample(keep, "sum"))
        return base + extra - shift * keep
