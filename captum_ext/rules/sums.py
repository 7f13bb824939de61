"""Rules for sums of activations (residual additions), applied to functional calls.

In the modified-gradient form the plain gradient of ``a + b`` already splits relevance in
proportion to the summands (LRP-0 / the ε-rule with ε → 0 on the sum, spec §1.2):
``R_a = a/(a+b)·R``. When the summands nearly cancel this explodes (``R_a`` and ``R_b`` large and
opposite). :class:`AbsoluteSum` splits in proportion to the absolute values instead,
``R_a = |a| / (|a| + |b|) · R``, which conserves relevance and never amplifies it (the |z|-rule
applied to an addition). Attach it to the module whose forward adds (a residual block, or the
whole model): it rewrites ``torch.add``/``+``/``+=`` of two same-shaped activations (``+=`` is
computed out of place).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from captum_ext._tensor_ops import safe_divide
from captum_ext.rules._core import FunctionalRule, grad_tensors, value_preserving

__all__ = ["AbsoluteSum"]


class AbsoluteSum(FunctionalRule):
    """Split the relevance of ``a + b`` (two activations) as ``|a| : |b|``."""

    intercepts = frozenset({"add", "add_", "__add__", "__iadd__", "__radd__"})

    def rewrite(
        self, name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        operands = [a for a in args[:2] if isinstance(a, Tensor)]
        if (
            len(operands) != 2
            or len(grad_tensors(operands)) != 2
            or kwargs.get("alpha", 1) != 1
            or operands[0].shape != operands[1].shape
        ):
            return func(*args, **kwargs)
        a, b = operands
        magnitude = a.abs() + b.abs()
        # An in-place ``a += b`` is computed out of place (``a`` is saved for the backward pass);
        # Python rebinds the name to the returned tensor.
        output = torch.add(a, b) if name in ("add_", "__iadd__") else func(*args, **kwargs)
        return value_preserving(output, magnitude * safe_divide(output, magnitude).detach())
