"""The two kinds of rule, and the helpers they share.

A relevance rule is written as a *gradient modification*: the forward value of the model is left
unchanged, and the backward pass computes the "modified gradient" ``c = R / a`` of LRP, so that
relevance is ``R = a ⊙ c`` at any tensor ``a`` (spec §1.2). Attribution is then ordinary
Gradient×Input (or ``Δa ⊙ ∇̃a`` for relevance patching), and every Captum gradient method composes
with the rules.

* :class:`OutputRule` rewrites a module's output in a forward hook with the value-preserving
  surrogate ``out = y.detach() + (t − t.detach())``: its value is exactly ``y`` (bit for bit) and its
  gradient is that of ``t``, a function of the module input that each rule defines (for the ε-rule
  ``t = z(a) ⊙ sg(y / (z + ε sign z))``, Montavon et al. 2019's "4-step recipe").
* :class:`FunctionalRule` rewrites functional calls (``softmax``, ``matmul``,
  ``scaled_dot_product_attention``, ``mul``) made *inside* a module's forward, through a
  ``torch.overrides.TorchFunctionMode`` that is active only while that module runs. The module's
  forward is wrapped for the duration of the context and restored afterwards.

Rules hold no per-module state, so one instance can be attached to many modules.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "FunctionalRule",
    "OutputRule",
    "Rule",
    "RuleHandle",
    "grad_tensors",
    "sign0",
    "stabilize",
    "value_preserving",
]


def sign0(t: Tensor) -> Tensor:
    """``sign(t)`` with ``sign(0) := +1`` (the LRP stabiliser convention)."""
    return torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + ε·sign₀(z)``: moves every denominator at least ε away from zero."""
    return z + epsilon * sign0(z)


def value_preserving(output: Tensor, surrogate: Tensor) -> Tensor:
    """A tensor equal to ``output`` (exactly) whose gradient is the gradient of ``surrogate``."""
    return output.detach() + (surrogate - surrogate.detach())


class RuleHandle:
    """Undoes one attachment of a rule; ``remove()`` is idempotent."""

    def __init__(self, undo: Callable[[], None]) -> None:
        self._undo: Callable[[], None] | None = undo

    def remove(self) -> None:
        if self._undo is not None:
            undo, self._undo = self._undo, None
            undo()


class Rule:
    """A relevance rule that can be attached to a module. Subclasses define ``attach``."""

    def attach(self, module: nn.Module) -> RuleHandle:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class OutputRule(Rule):
    """A rule applied by a forward hook that replaces the module output by a surrogate.

    Subclasses implement :meth:`surrogate`, returning ``t`` (a function of the module inputs whose
    gradient is the rule's modified gradient); the hook returns ``y.detach() + t − t.detach()``.
    ``check`` may raise ``TypeError`` for modules the rule does not apply to.
    """

    def check(self, module: nn.Module) -> None:
        """Raise ``TypeError`` if the rule cannot be applied to ``module``."""

    def surrogate(self, module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        raise NotImplementedError  # pragma: no cover - interface

    def attach(self, module: nn.Module) -> RuleHandle:
        self.check(module)
        busy: list[bool] = [False]

        def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
            # Rules recompute the module with modified parameters (torch.func.functional_call),
            # which runs this hook again: the flag makes the inner call a plain forward.
            if busy[0] or not torch.is_grad_enabled() or not isinstance(output, Tensor):
                return None
            if not any(isinstance(x, Tensor) and x.requires_grad for x in inputs):
                return None
            busy[0] = True
            try:
                t = self.surrogate(mod, inputs, output)
            finally:
                busy[0] = False
            return value_preserving(output, t)

        handle = module.register_forward_hook(hook)
        return RuleHandle(handle.remove)


class _InterceptMode(TorchFunctionMode):
    def __init__(self, rule: "FunctionalRule") -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in self.rule.intercepts:
            return self.rule.rewrite(name, func, args, kwargs)
        return func(*args, **kwargs)


class FunctionalRule(Rule):
    """A rule that rewrites functional calls made inside one module's forward.

    ``intercepts`` names the torch functions (by ``__name__``) that :meth:`rewrite` handles; the
    others run unchanged. The module's ``forward`` is replaced by a wrapper (an instance attribute)
    that runs the original forward inside a ``TorchFunctionMode``; ``remove()`` restores it.
    """

    intercepts: frozenset[str] = frozenset()

    def rewrite(
        self, name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        raise NotImplementedError  # pragma: no cover - interface

    def attach(self, module: nn.Module) -> RuleHandle:
        had_own = "forward" in vars(module)
        previous = vars(module).get("forward")
        original = module.forward

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return original(*args, **kwargs)
            with _InterceptMode(self):
                return original(*args, **kwargs)

        module.forward = forward  # type: ignore[method-assign]

        def undo() -> None:
            if had_own:
                module.forward = previous  # type: ignore[method-assign]
            else:
                del module.forward

        return RuleHandle(undo)


def grad_tensors(values: Any) -> list[Tensor]:
    """The tensors among ``values`` that carry a gradient from the attributed input."""
    return [
        v for v in values
        if isinstance(v, Tensor) and v.requires_grad and not isinstance(v, nn.Parameter)
    ]
