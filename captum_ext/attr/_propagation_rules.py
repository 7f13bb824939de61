"""Learnable backward rules for element-wise activations (the plug-in of LearnedPropagation).

At an activation ``y = f(a)`` the ordinary backward pass computes ``g_in = f'(a) ⊙ g_out``. A
rule replaces it with ``g_in = c ⊙ g_out``, where the coefficients ``c`` come from a small
network :class:`PropagationRuleNet` applied at every element. The rule is installed by a
value-preserving forward rewrite (the forward output is unchanged; only the backward differs):

    ŷ = sg(y) + (a − sg(a)),  with a tensor hook on ŷ that maps g_out to c(a, g_out) ⊙ g_out

where ``sg`` is ``detach``. The hook's arithmetic is recorded when the backward pass runs with
``create_graph=True``, so the resulting input gradient is differentiable with respect to the
rule's parameters (double backpropagation).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

__all__ = ["PropagationRuleNet", "SUPPORTED_ACTIVATIONS", "installed_rules", "local_derivative"]

#: activation modules whose local derivative is known (piecewise-linear ones).
SUPPORTED_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU)


def local_derivative(module: nn.Module, activation_input: Tensor) -> Tensor:
    """``f'(a)`` of a supported element-wise activation module, as a float tensor."""
    a = activation_input
    if isinstance(module, nn.ReLU):
        return (a > 0).to(a.dtype)
    if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        return ((a > module.min_val) & (a < module.max_val)).to(a.dtype)
    if isinstance(module, nn.LeakyReLU):
        return torch.where(a > 0, torch.ones_like(a), torch.full_like(a, module.negative_slope))
    raise TypeError(
        f"{type(module).__name__} is not supported; learned rules replace the backward of "
        f"{', '.join(t.__name__ for t in SUPPORTED_ACTIVATIONS)} modules."
    )


def _per_example_rms(t: Tensor) -> Tensor:
    rms = t.reshape(t.shape[0], -1).pow(2).mean(1).sqrt()
    rms = rms.clamp_min(torch.finfo(t.dtype).tiny ** 0.5)
    return rms.reshape((t.shape[0],) + (1,) * (t.dim() - 1))


class PropagationRuleNet(nn.Module):
    """Per-element rule coefficients ``c = gate · σ(h_θ(position) + w_θ · element)`` in (0, 1).

    For an element ``(n, k, u)`` of a layer with activation input ``a`` and incoming gradient
    ``g``, both divided by their per-example RMS over the layer (``â``, ``ĝ``; so one network
    serves layers of any width and scale):

    * ``h_θ`` is a small MLP (``hidden`` tanh units) of **per-position** features, the means over
      channels at ``u`` of ``â``, ``ĝ``, ``|ĝ|`` and ``f'(a)``: the per-pixel adaptive part, run
      once per position (not per channel), which keeps the cost low on wide layers;
    * ``w_θ · element`` is a linear term in the element's own ``â``, ``ĝ`` and ``1[g > 0]``.

    The network is shared by every layer and position, so it works on 1D, 2D and 3D layers and
    on rank-2 ``(N, K)`` ones. With ``keep_support=True`` (default) ``gate = f'(a)``: the rule
    only reweights the paths the ordinary gradient uses, and contains the plain gradient
    (σ → 1) and guided backpropagation (σ → 1[g > 0]) as limits. With ``keep_support=False``,
    ``c = σ(·)`` may pass gradient through inactive units too. The output layer and the element
    weights start at zero and the bias at ``init_bias``, so an untrained rule is
    ``σ(init_bias) · f'(a)`` (0.98 · the plain gradient for the default 4).
    """

    n_position_features = 4
    n_element_features = 3

    def __init__(self, hidden: int = 8, keep_support: bool = True, init_bias: float = 4.0) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be positive, got {hidden}.")
        self.hidden = int(hidden)
        self.keep_support = bool(keep_support)
        self.init_bias = float(init_bias)
        self.inner = nn.Linear(self.n_position_features, self.hidden)
        self.outer = nn.Linear(self.hidden, 1)
        self.element_weights = nn.Parameter(torch.zeros(self.n_element_features))
        nn.init.zeros_(self.outer.weight)
        nn.init.constant_(self.outer.bias, self.init_bias)

    def config(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "keep_support": self.keep_support,
            "init_bias": self.init_bias,
        }

    def forward(self, activation: Tensor, gradient: Tensor, derivative: Tensor) -> Tensor:
        """Coefficients shaped like ``activation``; the inputs are treated as constants.

        The rule computes in its parameters' dtype and returns the activation's dtype, so one
        float32 rule serves float64 and 16-bit models."""
        dtype = self.outer.weight.dtype
        out_dtype = activation.dtype
        activation, gradient = activation.to(dtype), gradient.to(dtype)
        derivative = derivative.to(dtype)
        a = activation.detach()
        a = a / _per_example_rms(a)
        g = gradient.detach()
        g = g / _per_example_rms(g)
        derivative = derivative.detach()
        position = torch.stack(
            [a.mean(1), g.mean(1), g.abs().mean(1), derivative.mean(1)], dim=-1
        )
        position_logit = self.outer(torch.tanh(self.inner(position))).squeeze(-1).unsqueeze(1)
        w = self.element_weights
        logits = position_logit + w[0] * a + w[1] * g + w[2] * (g > 0).to(g.dtype)
        coefficients = torch.sigmoid(logits)
        result = derivative * coefficients if self.keep_support else coefficients
        return result.to(out_dtype)


@contextmanager
def installed_rules(
    modules: Sequence[nn.Module], rule: PropagationRuleNet, calls: list[int]
) -> Iterator[None]:
    """Install ``rule`` on the backward pass of every module in ``modules``.

    Each forward call of a module (a module may run several times per forward pass, like the
    shared activation of EfficientNet) gets its own rewrite. ``calls`` is incremented once per
    rewritten call. Every hook is removed in ``finally``.
    """
    handles = []
    for module in modules:
        stash: list[Tensor] = []

        def keep_input(_module: nn.Module, args: tuple[Any, ...], _stash=stash) -> None:
            # clone: an in-place activation (ReLU(inplace=True)) overwrites its input.
            _stash.append(args[0].clone())

        def rewrite(_module: nn.Module, _args: Any, output: Tensor, _stash=stash) -> Tensor:
            a = _stash.pop()
            if not (isinstance(output, Tensor) and a.requires_grad):
                return output
            derivative = local_derivative(_module, a.detach())
            surrogate = output.detach() + (a - a.detach())

            def apply_rule(gradient: Tensor, _a=a, _d=derivative) -> Tensor:
                return rule(_a, gradient, _d) * gradient

            surrogate.register_hook(apply_rule)
            calls[0] += 1
            return surrogate

        handles.append(module.register_forward_pre_hook(keep_input))
        handles.append(module.register_forward_hook(rewrite))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
