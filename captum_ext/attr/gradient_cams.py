"""Gradient CAMs on the shared base: Grad-CAM++, XGrad-CAM, HiResCAM and Layer-CAM.

Notation (``../shared/reference/cam-family.md``): ``A`` is the layer activation ``(N, K, *S)``,
``g = ∂y^c/∂A`` its gradient for the target logit ``y^c``, ``u, v`` spatial positions and
``Z = |S|``. Each map is ``L = Σ_k W_k ⊙ A_k``, returned raw; ``relu_attributions=True``
applies the papers' final ReLU.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from captum.log import log_usage
from torch import Tensor

from captum_ext._captum import TargetType
from captum_ext._tensor_ops import safe_divide, spatial_sum, upsample
from captum_ext.attr._cam_base import LayerCamBase

__all__ = [
    "LayerGradCamPlusPlus",
    "LayerHiResCam",
    "LayerLayerCam",
    "LayerXGradCam",
    "fuse_layer_cams",
    "grad_cam_pp_weights",
]


def grad_cam_pp_weights(
    activation: Tensor,
    first: Tensor,
    second: Tensor,
    third: Tensor,
    alpha_normalization: bool = False,
) -> Tensor:
    """Grad-CAM++ channel weights from the first three derivative terms.

    ``α^k_u = D2 / (2·D2 + (Σ_v A^k_v)·D3)`` and ``w_k = Σ_u α^k_u · ReLU(D1^k_u)``, where
    ``D1, D2, D3`` are ``g, g², g³`` (Grad-CAM++), or their means over noisy inputs (Smooth
    Grad-CAM++). α is computed only where ``D1 > 0``, the only positions that enter ``w``, and
    set to 0 where the denominator vanishes (signed activations can make it 0 or negative).

    With ``alpha_normalization=True``, α is divided by ``Σ_{v: D1_v > 0} α_v`` per channel, as
    the official code (adityac94/Grad_CAM_plus_plus) does; the paper equation has no such step.
    """
    activation_sums = spatial_sum(activation).reshape(
        activation.shape[:2] + (1,) * (activation.dim() - 2)
    )
    positive = first > 0
    denominator = 2.0 * second + activation_sums * third
    alpha = torch.where(positive, safe_divide(second, denominator), 0.0)
    if alpha_normalization:
        norm = spatial_sum(alpha)
        norm = torch.where(norm == 0, torch.ones_like(norm), norm)
        alpha = alpha / norm.reshape(norm.shape + (1,) * (alpha.dim() - 2))
    return spatial_sum(alpha * F.relu(first))


class LayerGradCamPlusPlus(LayerCamBase):
    r"""Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv 1710.11063).

    .. math::
        α^k_u = \frac{g_u^2}{2 g_u^2 + (\sum_v A^k_v)\, g_u^3},\quad
        w_k = \sum_u α^k_u \,\mathrm{ReLU}(g^k_u),\quad L = \sum_k w_k A^k

    This is the paper's closed form after the exponential trick (``Y = exp(y^c)``), the same
    form pytorch-grad-cam implements. The trick is exact only when the path from the layer to
    the logit is piecewise linear (ReLU, pooling, conv, linear, eval-mode BatchNorm); with
    GELU/SiLU, attention or LayerNorm it is a heuristic, and with signed activations the
    denominator can vanish (α is then 0). Always explain a logit, never a probability.

    ``alpha_normalization=True`` reproduces the official TF code (α divided by its sum over the
    positive-gradient positions). Unlike torchcam 0.5.0, α is actually divided (torchcam's
    in-place division on a boolean-indexed copy is a no-op). ``multiplies_by_inputs`` is False.
    """

    @log_usage(part_of_slo=False)
    def attribute(  # type: ignore[override]
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        grad_kwargs: Optional[dict[str, Any]] = None,
        alpha_normalization: bool = False,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        """As :meth:`LayerCamBase.attribute`; ``alpha_normalization`` selects the official
        code's α normalisation (default False: the paper equation)."""
        return self._attribute_cam(
            inputs,
            target,
            additional_forward_args,
            attribute_to_layer_input,
            relu_attributions,
            grad_kwargs,
            alpha_normalization=alpha_normalization,
        )

    def _weights(
        self, activation: Tensor, stats: Tensor, alpha_normalization: bool = False, **_: Any
    ) -> Tensor:
        gradient = stats
        squared = gradient * gradient
        return grad_cam_pp_weights(
            activation, gradient, squared, squared * gradient, alpha_normalization
        )


class LayerXGradCam(LayerCamBase):
    r"""XGrad-CAM (Fu et al., "Axiom-based Grad-CAM", BMVC 2020, arXiv 2008.02312).

    .. math:: w_k = \frac{\sum_u A^k_u g^k_u}{\sum_v A^k_v},\quad L = \sum_k w_k A^k

    The weights follow from the sensitivity and conservation axioms. A channel whose activation
    sums to (almost) zero gets weight 0 instead of a blown-up ratio (pytorch-grad-cam adds 1e-7
    to the denominator; on non-negative activations the two agree to ~1e-7 relative). On a
    global-average-pooling plus linear head XGrad-CAM equals Grad-CAM and conserves
    ``Σ_u L_u / Z = y^c − b_c``.
    """

    def _weights(self, activation: Tensor, stats: Tensor, **_: Any) -> Tensor:
        return safe_divide(spatial_sum(activation * stats), spatial_sum(activation), tiny=1e-7)


class LayerHiResCam(LayerCamBase):
    r"""HiResCAM (Draelos & Carin, arXiv 2011.08891): pixel-wise gradient weights.

    .. math:: L_u = \sum_k g^k_u A^k_u

    It equals Captum's ``LayerGradientXActivation`` summed over channels. If the layer is
    followed only by flatten and one Linear layer, ``Σ_u L_u = y^c − b_c`` exactly.
    """

    def _weights(self, activation: Tensor, stats: Tensor, **_: Any) -> Tensor:
        return stats


class LayerLayerCam(LayerCamBase):
    r"""LayerCAM (Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization", IEEE TIP 2021): positive gradients as pixel-wise weights.

    .. math:: L_u = \sum_k \mathrm{ReLU}(g^k_u)\, A^k_u

    Not to be confused with the original CAM of Zhou et al., which is
    :class:`~captum_ext.attr.LayerClassActivationMap`. The paper applies a final ReLU
    (``relu_attributions=True``); multi-layer fusion is :func:`~captum_ext.attr.fuse_layer_cams`.
    """

    def _weights(self, activation: Tensor, stats: Tensor, **_: Any) -> Tensor:
        return F.relu(stats)


def fuse_layer_cams(maps: list[Tensor], gamma: float = 2.0) -> Tensor:
    """Fuse Layer-CAM maps from several layers (Jiang et al. 2021, §III-C).

    Each map is ReLU'd and rescaled by ``tanh(γ · L / max L)`` per example (γ = 2, the paper's
    value), upsampled to the largest map's size, and fused by an element-wise maximum (as
    torchcam does). Returns ``(N, 1, *S_max)``.
    """
    if not maps:
        raise ValueError("fuse_layer_cams needs at least one map.")
    largest = max(maps, key=lambda m: m[0, 0].numel())
    size = largest.shape[2:]
    fused = []
    for cam in maps:
        cam = F.relu(cam)
        peak = cam.flatten(1).amax(1).reshape((-1,) + (1,) * (cam.dim() - 1))
        scaled = torch.tanh(gamma * safe_divide(cam, peak.expand_as(cam)))
        fused.append(upsample(scaled, size) if scaled.shape[2:] != size else scaled)
    return torch.stack(fused).amax(0)
