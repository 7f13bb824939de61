"""The original CAM (Zhou et al., "Learning Deep Features for Discriminative Localization",
CVPR 2016, arXiv 1512.04150)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_ext._captum import TargetType
from captum_ext._validation import _target_rows
from captum_ext.attr._cam_base import LayerCamBase, ReshapeTransform

__all__ = ["LayerClassActivationMap"]


class LayerClassActivationMap(LayerCamBase):
    r"""CAM: the classifier's weights as channel weights, with no backward pass.

    .. math:: L^c = \sum_k W[c, k]\, A^k

    for an architecture ``A → global average pooling → Linear(W, b)`` (or a 1×1 convolution
    classifier followed by pooling). The bias is ignored, so ``mean_u L^c_u = y^c − b_c``.
    On such a head Grad-CAM = HiResCAM = XGrad-CAM = CAM / Z (``Z`` = number of positions).

    Not to be confused with Layer-CAM (Jiang et al. 2021), which is
    :class:`~captum_ext.attr.LayerLayerCam`.

    Args:
        forward_func: the model.
        layer: the feature layer whose output is pooled into the classifier.
        classifier: the ``nn.Linear`` head, a 1×1 ``nn.Conv*d`` classifier, or its weight
            tensor ``(num_classes, K)``. Given explicitly: torchcam guesses it by looking for a
            single Linear layer, which fails silently on models with several.
        device_ids: as in Captum.
        reshape_transform: as in :class:`LayerCamBase`.
    """

    needs_gradients = False

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module,
        classifier: Union[nn.Module, Tensor],
        device_ids: Union[None, list[int]] = None,
        *,
        reshape_transform: Optional[ReshapeTransform] = None,
    ) -> None:
        super().__init__(forward_func, layer, device_ids, reshape_transform=reshape_transform)
        weight = classifier.weight if isinstance(classifier, nn.Module) else classifier
        if not isinstance(weight, Tensor):
            raise TypeError("classifier must be an nn.Linear, a 1x1 conv, or a weight tensor.")
        if weight.dim() > 2:
            if any(size != 1 for size in weight.shape[2:]):
                raise ValueError(
                    f"a convolutional classifier must have a 1x1 kernel, got weight shape "
                    f"{tuple(weight.shape)}."
                )
            weight = weight.reshape(weight.shape[0], weight.shape[1])
        if weight.dim() != 2:
            raise ValueError(f"classifier weight must be (num_classes, K), got {tuple(weight.shape)}.")
        self.classifier_weight = weight

    @log_usage(part_of_slo=False)
    def attribute(
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        grad_kwargs: Optional[dict[str, Any]] = None,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        """As :meth:`LayerCamBase.attribute`. ``target`` must be a class index (an int, or one
        per example); ``grad_kwargs={"create_graph": True}`` keeps the map differentiable."""
        if target is None:
            raise ValueError("CAM needs a class index: pass target=... (e.g. output.argmax(1)).")
        return self._attribute_cam(
            inputs, target, additional_forward_args, attribute_to_layer_input,
            relu_attributions, grad_kwargs,
        )

    def _weights(self, activation: Tensor, stats: Any, target: TargetType = None, **_: Any) -> Tensor:
        weight = self.classifier_weight
        if weight.shape[1] != activation.shape[1]:
            raise ValueError(
                f"the classifier takes {weight.shape[1]} features but the layer has "
                f"{activation.shape[1]} channels; pass the head that pools this layer."
            )
        rows = _target_rows(target, activation.shape[0])
        if any(len(row) != 1 for row in rows):
            raise ValueError("CAM targets must be single class indices, not tuples.")
        classes = torch.tensor([row[0] for row in rows], device=weight.device)
        if bool((classes >= weight.shape[0]).any()):
            raise ValueError(
                f"target {classes.max().item()} is out of range for a classifier with "
                f"{weight.shape[0]} classes."
            )
        return weight[classes].to(device=activation.device, dtype=activation.dtype)
