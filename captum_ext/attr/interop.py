"""Bridges from layer maps to Captum's input-space tools (``sensitivity_max``, ``infidelity``,
``captum.attr.visualization``).

Captum's metrics pass ``inputs`` as a tuple and iterate over the returned attributions without
re-tupling them, and ``infidelity`` asserts that attributions have exactly the input shape. A
layer CAM returns a bare ``(N, 1, *S)`` tensor, so it needs to be upsampled, expanded over the
input channels and tupled first; :func:`input_space_explanation` does all three.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from captum.attr import Attribution
from torch import Tensor

from captum_ext._captum import _format_tensor_into_tuples
from captum_ext._tensor_ops import upsample

__all__ = ["input_space_explanation", "upsample_to_input"]


def upsample_to_input(
    attribution: Tensor,
    input_tensor: Tensor,
    interpolate_mode: Optional[str] = None,
    align_corners: Optional[bool] = None,
) -> Tensor:
    """Upsample ``(N, 1, *S)`` to ``input_tensor``'s spatial size and expand over its channels.

    ``interpolate_mode=None`` picks linear, bilinear or trilinear by rank (Captum's
    ``LayerAttribution.interpolate`` defaults to nearest).
    """
    if attribution.dim() != input_tensor.dim():
        raise ValueError(
            f"the map {tuple(attribution.shape)} and the input {tuple(input_tensor.shape)} have "
            "different ranks; only maps of convolutional layers can be upsampled to the input."
        )
    if attribution.shape[0] != input_tensor.shape[0]:
        raise ValueError(
            f"the map has batch {attribution.shape[0]} but the input has {input_tensor.shape[0]}."
        )
    resized = upsample(attribution, input_tensor.shape[2:], interpolate_mode, align_corners)
    # contiguous: Captum's metrics call .view() on the attributions.
    return resized.expand(-1, input_tensor.shape[1], *([-1] * (input_tensor.dim() - 2))).contiguous()


def input_space_explanation(
    method: Union[Attribution, Callable[..., Any]],
    interpolate_mode: Optional[str] = None,
) -> Callable[..., tuple[Tensor, ...]]:
    """Wrap a layer method so that it returns input-shaped attributions as a tuple.

    Example::

        from captum.metrics import sensitivity_max
        explain = input_space_explanation(LayerGradCamPlusPlus(model, model.layer4))
        sens = sensitivity_max(explain, x, target=3)

    The returned function takes ``(inputs, **attribute_kwargs)``; every input tensor whose rank
    matches the map receives the upsampled map, broadcast over its channels.
    """
    attribute = method.attribute if isinstance(method, Attribution) else method

    def explain(inputs: Union[Tensor, tuple[Tensor, ...]], **kwargs: Any) -> tuple[Tensor, ...]:
        inputs_tuple = _format_tensor_into_tuples(inputs)
        attribution = attribute(inputs, **kwargs)
        if isinstance(attribution, tuple):
            if len(attribution) != 1:
                raise ValueError(
                    "the layer produced several maps; explain a layer with a single output."
                )
            attribution = attribution[0]
        return tuple(
            upsample_to_input(attribution, x, interpolate_mode) for x in inputs_tuple
        )

    return explain
