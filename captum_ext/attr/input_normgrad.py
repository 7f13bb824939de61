"""Input-level NormGrad: the two-phase framework applied to the model input itself.

Rebuffi, Fong, Ji and Vedaldi, CVPR 2020 (arXiv 2004.02866), spec §2: with ``A = x`` and
``G = ∇_x y^c``, plain NormGrad is ``s_u = ‖x_u‖ · ‖G_u‖`` (norms over the input channels).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union, cast

import torch
from captum.attr import GradientAttribution
from captum.log import log_usage
from torch import Tensor

from captum_ext._captum import (
    TargetType,
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    compute_gradients,
)
from captum_ext._validation import (
    GuardedForward,
    leaves_no_trace,
    validate_inputs,
    validate_target,
)
from captum_ext.attr._normgrad_ops import WindowGeometry, resolve_choice, saliency_map

__all__ = ["NormGrad"]


class NormGrad(GradientAttribution):
    r"""NormGrad at the input (Rebuffi et al., CVPR 2020): ``s_u = ‖x_u‖₂ · ‖∇_x y^c_u‖₂``.

    The same ``variant`` / ``phase1`` / ``phase2`` choices as
    :class:`~captum_ext.attr.LayerNormGrad`, except ``"proper"`` (the input has no layer).
    Each input tensor ``(N, C, *S)`` gets a map ``(N, 1, *S)``; the result has the tuple-ness of
    ``inputs``. One forward and one backward pass. ``multiplies_by_inputs`` is False.
    """

    def __init__(self, forward_func: Callable[..., Any]) -> None:
        GradientAttribution.__init__(self, forward_func)

    @log_usage(part_of_slo=False)
    @leaves_no_trace
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        variant: Optional[str] = None,
        phase1: Optional[str] = None,
        phase2: Optional[str] = None,
        gradient_pooling: Optional[str] = None,
        kernel_size: Union[int, Sequence[int]] = 3,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        """Maps ``(N, 1, *S)`` per input tensor (``(N, 1)`` for ``(N, C)`` inputs)."""
        is_tuple = _is_tuple(inputs)
        inputs_tuple = cast(tuple[Tensor, ...], _format_tensor_into_tuples(inputs))
        batch_size = validate_inputs(inputs_tuple, forward_func=self.forward_func)
        validate_target(target, batch_size)
        choice = resolve_choice(variant, phase1, phase2, gradient_pooling)
        if choice.phase1 == "proper":
            raise ValueError("variant 'proper' needs a conv layer; use LayerNormGrad.")
        leaves = tuple(t.detach().requires_grad_(True) for t in inputs_tuple)
        gradients = compute_gradients(
            GuardedForward(self.forward_func, [], target),
            leaves,
            target,
            _format_additional_forward_args(additional_forward_args),
        )
        maps = []
        with torch.no_grad():
            for x, gradient in zip(inputs_tuple, gradients):
                geometry = None
                if choice.phase1 == "patch":
                    if x.dim() < 3:
                        raise ValueError(
                            f"phase1='patch' needs (N, C, *S) inputs, got {tuple(x.shape)}."
                        )
                    geometry = WindowGeometry.centred(kernel_size, x.dim() - 2)
                maps.append(saliency_map(x.detach(), gradient, choice, geometry))
        return _format_output(is_tuple, tuple(maps))

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("NormGrad does not support attribute_future.")
