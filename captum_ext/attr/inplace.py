"""A context manager that turns off ``inplace`` on every module of a model, and back.

In-place activations (``nn.ReLU(inplace=True)``, ``nn.SiLU(inplace=True)``, ...) can modify the
tensor a Captum layer hook saved, or a view of it, and make the backward pass fail with
"a view ... is being modified inplace" (Captum issue #156; TorchRay disables ``inplace`` on every
module before hooking for this reason). Functional calls such as ``F.relu(x, inplace=True)``
inside a ``forward`` cannot be changed this way.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

__all__ = ["disable_inplace"]


@contextmanager
def disable_inplace(model: nn.Module) -> Iterator[nn.Module]:
    """Set ``inplace=False`` on every submodule whose ``inplace`` is True, and restore it in
    ``finally``."""
    changed = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    try:
        for module in changed:
            module.inplace = False
        yield model
    finally:
        for module in changed:
            module.inplace = True
