"""Relevance (LRP) rules as gradient modifications, composable with Captum's gradient methods.

Each rule keeps the forward value of the model and changes its backward pass so that the
gradient is LRP's "modified gradient" ``c = R / a``; relevance at any tensor ``a`` is then
``a ⊙ c`` (Gradient×Input), and Captum methods such as ``InputXGradient`` or
``LayerGradientXActivation`` compute LRP when run inside ``composite.context(model)``.

Rules: :class:`Epsilon`, :class:`Gamma`, :class:`ZPlus`, :class:`AlphaBeta`, :class:`AbsZ` (linear
and conv layers); :class:`IdentityRule`, :class:`NormRule` (element-wise activations and
normalisation); :class:`ProductRule`/:class:`HalfRule`, :class:`ConstantAttention` (products,
gates, attention); :class:`AbsoluteSum` (residual additions). Composition: :class:`Composite` and the presets :func:`epsilon_plus`,
:func:`epsilon_gamma`, :func:`transformer_rules`; canonizers: :class:`MergeBatchNorm`.

Licensing note (spec): LRP is described by its authors as patented for commercial use; get a
legal check before shipping LRP-based rules in a commercial product.
"""

from captum_ext.rules._core import FunctionalRule, OutputRule, Rule, RuleHandle
from captum_ext.rules.attention import ConstantAttention, HalfRule, ProductRule, explicit_attention
from captum_ext.rules.canonizers import Canonizer, MergeBatchNorm, find_batchnorm_pairs
from captum_ext.rules.composite import (
    Composite,
    epsilon_gamma,
    epsilon_plus,
    lrp_rules,
    transformer_rules,
)
from captum_ext.rules.sums import AbsoluteSum
from captum_ext.rules.elementwise import IdentityRule, NormRule
from captum_ext.rules.linear import AbsZ, AlphaBeta, Epsilon, Gamma, LinearLayerRule, ZPlus

__all__ = [
    "AbsoluteSum",
    "AbsZ",
    "AlphaBeta",
    "Canonizer",
    "Composite",
    "ConstantAttention",
    "Epsilon",
    "FunctionalRule",
    "Gamma",
    "HalfRule",
    "IdentityRule",
    "LinearLayerRule",
    "MergeBatchNorm",
    "NormRule",
    "OutputRule",
    "ProductRule",
    "Rule",
    "RuleHandle",
    "ZPlus",
    "epsilon_gamma",
    "epsilon_plus",
    "explicit_attention",
    "find_batchnorm_pairs",
    "lrp_rules",
    "transformer_rules",
]
