"""Rules for attention, softmax and multiplicative gates, applied to functional calls (spec §2).

* :class:`ProductRule` (the **uniform rule**; with two factors RelP's **half rule** for gates):
  a product of ``n`` activations (``gate * up``, ``q @ kᵀ``, ``P @ V``) gives each factor the
  share ``1/n`` of its relevance. Surrogate: the product's gradient is scaled by ``1/n`` with the
  value unchanged. Inside attention this gives ``q``, ``k`` a quarter and ``V`` a half, as in
  AttnLRP/LXT. Factors that are parameters or constants do not count (``x * weight`` is linear).
* :class:`ConstantAttention` (the **AH-rule** / CP-LRP of Ali et al., ICML 2022): the attention
  pattern ``softmax(q kᵀ/√d)`` is a constant, so relevance flows only through the values.
* **Softmax** (AttnLRP): in the Gradient×Input form the DTD-derived softmax rule equals the plain
  softmax VJP, ``R_in = x ⊙ (R_out − s·ΣR_out)``, so no rewrite is needed (leave softmax alone).

Both rules intercept calls made inside the module's forward (``torch.matmul``, ``@``, ``bmm``,
``mul``, ``*``, ``einsum``, ``softmax``, ``F.scaled_dot_product_attention``); a fused
``scaled_dot_product_attention`` is decomposed into ``softmax(q kᵀ·scale + mask) @ V`` so that the
rules can apply (this costs the memory of the explicit pattern). The rules compose: attach both
to the same module for AttnLRP products with a constant pattern.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_ext.rules._core import FunctionalRule, grad_tensors, value_preserving

__all__ = ["ConstantAttention", "HalfRule", "ProductRule", "explicit_attention"]

_PRODUCTS = frozenset({"mul", "__mul__", "matmul", "__matmul__", "bmm", "einsum"})
_SDPA = "scaled_dot_product_attention"


def explicit_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    product: Callable[[Tensor, Tensor], Tensor] = torch.matmul,
    pattern_hook: Callable[[Tensor], Tensor] = lambda p: p,
) -> Tensor:
    """``F.scaled_dot_product_attention`` written out, with hooks for the two products and the pattern."""
    if enable_gqa:
        raise NotImplementedError("attention rules do not support enable_gqa=True yet.")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = product(query, key.transpose(-2, -1)) * scale
    if is_causal:
        lq, lk = scores.shape[-2], scores.shape[-1]
        causal = torch.ones(lq, lk, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    pattern = pattern_hook(torch.softmax(scores, dim=-1))
    if dropout_p > 0:
        pattern = F.dropout(pattern, p=dropout_p)
    return product(pattern, value)


class ProductRule(FunctionalRule):
    """The uniform rule: each of the ``n`` activation factors of a product receives ``R / n``.

    Attach it to the module whose forward computes the product (an attention module, or a gated
    MLP's ``act(gate) * up``). Products with fewer than two activation factors are untouched.
    """

    intercepts = _PRODUCTS | {_SDPA}

    def rewrite(
        self, name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if name == _SDPA:
            return explicit_attention(*args, **kwargs, product=self._split)
        output = func(*args, **kwargs)
        operands = args[1:] if name == "einsum" else args
        if name == "einsum" and len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = tuple(operands[0])
        factors = len(grad_tensors(operands))
        if factors < 2 or not isinstance(output, Tensor):
            return output
        return value_preserving(output, output / factors)

    @staticmethod
    def _split(a: Tensor, b: Tensor) -> Tensor:
        output = torch.matmul(a, b)
        if len(grad_tensors((a, b))) < 2:
            return output
        return value_preserving(output, output / 2)


class HalfRule(ProductRule):
    """RelP's half rule for multiplicative gates (``act(gate) * up``): the uniform rule with n = 2."""


class ConstantAttention(FunctionalRule):
    """The AH-rule / CP-LRP: every softmax inside the module is treated as a constant pattern."""

    intercepts = frozenset({"softmax", _SDPA})

    def rewrite(
        self, name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if name == _SDPA:
            return explicit_attention(*args, **kwargs, pattern_hook=lambda p: p.detach())
        return func(*args, **kwargs).detach()
