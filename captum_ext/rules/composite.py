"""Composites: which rule goes on which module, attached by a context manager that always restores.

A :class:`Composite` is an ordered list of ``(matcher, rule)`` entries plus optional canonizers.
A matcher is a module type, a tuple of types, a name pattern (``fnmatch`` style, matched against
``model.named_modules()`` names) or a predicate ``(name, module) -> bool``; the first entry that
matches a module decides its rule (``None`` = leave the module alone). Any module can match, not
only leaves, so that an attention module (functional rules) and its inner ``nn.Linear`` layers
(output rules) are handled together.

``with composite.context(model):`` applies the canonizers, attaches the rules, yields the model
and, in ``finally``, removes every hook, restores every wrapped forward and every parameter, even
when the body raises.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, Union

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from captum_ext.rules._core import Rule, RuleHandle
from captum_ext.rules.attention import ConstantAttention, ProductRule
from captum_ext.rules.canonizers import Canonizer, MergeBatchNorm
from captum_ext.rules.elementwise import IdentityRule, NormRule
from captum_ext.rules.linear import Epsilon, Gamma, ZPlus

__all__ = [
    "Composite",
    "epsilon_gamma",
    "epsilon_plus",
    "lrp_rules",
    "transformer_rules",
]

Matcher = Union[type, tuple, str, Callable[[str, nn.Module], bool]]

_CONVS = (_ConvNd,)
_SMOOTH_ACTIVATIONS = (nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.Softplus, nn.Tanh, nn.Sigmoid, nn.ReLU6)


def _matches(matcher: Matcher, name: str, module: nn.Module) -> bool:
    if isinstance(matcher, str):
        return fnmatch.fnmatchcase(name, matcher)
    if isinstance(matcher, type) or (
        isinstance(matcher, tuple) and all(isinstance(m, type) for m in matcher)
    ):
        return isinstance(module, matcher)
    if callable(matcher):
        return bool(matcher(name, module))
    raise TypeError(
        f"a composite matcher must be a type, a tuple of types, a name pattern or a "
        f"predicate (name, module) -> bool; got {matcher!r}."
    )


class Composite:
    """Maps modules (by type, name pattern or predicate) to rules, plus optional canonizers."""

    def __init__(
        self,
        rules: Sequence[tuple[Matcher, Rule | None]] | dict[Any, Rule | None] = (),
        canonizers: Sequence[Canonizer] = (),
    ) -> None:
        entries = list(rules.items()) if isinstance(rules, dict) else list(rules)
        for matcher, rule in entries:
            if rule is not None and not isinstance(rule, Rule):
                raise TypeError(f"the rule for {matcher!r} must be a Rule or None, got {rule!r}.")
        self.entries = entries
        self.canonizers = list(canonizers)

    def rule_for(self, name: str, module: nn.Module) -> Rule | None:
        for matcher, rule in self.entries:
            if _matches(matcher, name, module):
                return rule
        return None

    def assignments(self, model: nn.Module) -> list[tuple[str, nn.Module, Rule]]:
        """The ``(name, module, rule)`` triples this composite would attach to ``model``."""
        found = []
        for name, module in model.named_modules():
            rule = self.rule_for(name, module)
            if rule is not None:
                found.append((name, module, rule))
        return found

    @contextmanager
    def context(self, model: nn.Module) -> Iterator[nn.Module]:
        """Attach the rules for the body of the ``with`` block; always restore the model."""
        handles: list[RuleHandle] = []
        try:
            for canonizer in self.canonizers:
                handles.append(canonizer.apply(model))
            for _, module, rule in self.assignments(model):
                handles.append(rule.attach(module))
            yield model
        finally:
            errors = []
            for handle in reversed(handles):
                try:
                    handle.remove()
                except Exception as error:  # pragma: no cover - restoring must go on
                    errors.append(error)
            if errors:  # pragma: no cover
                raise errors[0]

    def __repr__(self) -> str:
        lines = [f"    {m!r}: {r!r}" for m, r in self.entries]
        return "Composite(\n" + "\n".join(lines) + f"\n  canonizers={self.canonizers!r})"


def lrp_rules(model: nn.Module, composite: Composite):  # type: ignore[no-untyped-def]
    """``with lrp_rules(model, composite):`` is ``with composite.context(model):``."""
    return composite.context(model)


def epsilon_plus(
    epsilon: float = 1e-6, stabilizer: float = 1e-6, merge_batchnorm: bool = True
) -> Composite:
    """zennit's EpsilonPlus preset: ε for dense layers, z⁺ (stabiliser ``stabilizer``) for
    convolutions, batch norms folded
    into the preceding layer when they are consecutive in an ``nn.Sequential``, identity rule for
    smooth activations."""
    return Composite(
        [
            (nn.Linear, Epsilon(epsilon)),
            (_CONVS, ZPlus(stabilizer)),
            (_SMOOTH_ACTIVATIONS, IdentityRule()),
            (_BatchNorm, None if merge_batchnorm else IdentityRule()),
        ],
        canonizers=[MergeBatchNorm()] if merge_batchnorm else [],
    )


def epsilon_gamma(
    epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6, merge_batchnorm: bool = True
) -> Composite:
    """ε for dense layers, γ = 0.25 for convolutions (the recommended VGG setting, spec §1.1)."""
    return Composite(
        [
            (nn.Linear, Epsilon(epsilon)),
            (_CONVS, Gamma(gamma, stabilizer)),
            (_SMOOTH_ACTIVATIONS, IdentityRule()),
            (_BatchNorm, None if merge_batchnorm else IdentityRule()),
        ],
        canonizers=[MergeBatchNorm()] if merge_batchnorm else [],
    )


def _is_activation_module(name: str, module: nn.Module) -> bool:
    cls = type(module).__name__
    return isinstance(module, _SMOOTH_ACTIVATIONS) or (
        len(list(module.children())) == 0
        and (cls.endswith("Activation") or cls in {"NewGELUActivation", "GELUTanh", "QuickGELU"})
    )


def _is_norm_module(name: str, module: nn.Module) -> bool:
    rms = getattr(nn, "RMSNorm", None)
    kinds = (nn.LayerNorm,) + ((rms,) if rms else ())
    return isinstance(module, kinds)


def transformer_rules(
    *,
    attention: Sequence[nn.Module] | Matcher | None = None,
    gates: Sequence[nn.Module] | Matcher | None = None,
    constant_attention: bool = False,
    uniform_attention: bool = False,
) -> Composite:
    """RelP's default rule set (Jafari et al. 2025): LN-rule, identity rule, half rule.

    * LayerNorm/RMSNorm → :class:`NormRule`;
    * element-wise activations (torch's GELU, SiLU, ..., and leaf modules whose class name ends
      in ``Activation``, as in HuggingFace) → :class:`IdentityRule`;
    * ``gates`` (modules computing ``act(gate) * up``) → :class:`~captum_ext.rules.HalfRule`;
    * ``attention`` modules: untouched by default (RelP), :class:`ConstantAttention` with
      ``constant_attention=True`` (the AH-rule), :class:`ProductRule` with
      ``uniform_attention=True`` (AttnLRP's products). Linear layers keep the plain gradient (the
      0-rule).
    """
    entries: list[tuple[Matcher, Rule | None]] = []

    def matcher_of(spec: Any) -> Matcher:
        if isinstance(spec, (list, tuple)) and all(isinstance(m, nn.Module) for m in spec):
            ids = {id(m) for m in spec}
            return lambda name, module: id(module) in ids
        return spec

    if attention is not None and (constant_attention or uniform_attention):
        if constant_attention and uniform_attention:
            entries.append((matcher_of(attention), _Both()))
        elif constant_attention:
            entries.append((matcher_of(attention), ConstantAttention()))
        else:
            entries.append((matcher_of(attention), ProductRule()))
    elif constant_attention or uniform_attention:
        raise ValueError("constant_attention/uniform_attention need the attention modules: attention=...")
    if gates is not None:
        entries.append((matcher_of(gates), ProductRule()))
    entries += [(_is_norm_module, NormRule()), (_is_activation_module, IdentityRule())]
    return Composite(entries)


class _Both(Rule):
    """ConstantAttention and ProductRule on one module."""

    def attach(self, module: nn.Module) -> RuleHandle:
        first = ProductRule().attach(module)
        try:
            second = ConstantAttention().attach(module)
        except BaseException:
            first.remove()
            raise

        def undo() -> None:
            second.remove()
            first.remove()

        return RuleHandle(undo)
