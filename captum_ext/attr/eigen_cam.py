"""Eigen-CAM (Bany Muhammad & Yeasin, IJCNN 2020, arXiv 2008.00299) and EigenGrad-CAM.

Both project a ``Z × K`` matrix (rows: the ``Z = |S|`` positions, columns: the ``K`` channels) on
its first principal direction, batched over the examples with ``torch.linalg``.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from captum.log import log_usage
from torch import Tensor

from captum_ext._captum import TargetType
from captum_ext.attr._cam_base import LayerCamBase

__all__ = ["LayerEigenCam", "LayerEigenGradCam", "principal_projection"]


def principal_projection(maps: Tensor, center: bool = False) -> Tensor:
    r"""Project ``(N, K, *S)`` maps on their first principal direction: ``(N, 1, *S)``.

    Per example, ``M ∈ R^{Z×K}`` holds one position per row. With the thin SVD
    ``M = U Σ Vᵀ`` the projection is ``p = M v₁ = σ₁ u₁``. It is computed from the top
    eigenpair of the smaller Gram matrix (``MᵀM``, ``K × K``, when ``K ≤ Z``, else ``MMᵀ``,
    ``Z × Z``) with ``torch.linalg.eigh``, batched over ``N``: ``O(Z·K·min(Z, K))``, never a
    full SVD (pytorch-grad-cam's ``full_matrices=True`` costs ``O(Z²)`` memory).

    **Sign rule.** ``v₁`` is defined up to sign. With the channel-sum map ``r_u = Σ_k M[u, k]``,
    ``p`` is flipped so that ``cov(p, r) ≥ 0``; when that covariance is zero (to 1e-6 of
    ``|p|·|r|``), so that ``Σ_u p_u ≥ 0``. For non-negative activations (Perron–Frobenius)
    ``p`` is then entirely ``≥ 0``.

    ``center=True`` subtracts each channel's spatial mean first (pytorch-grad-cam's choice); the
    map is then two-signed. Half precision is computed in float32.
    """
    batch, channels = maps.shape[:2]
    spatial = maps.shape[2:]
    work_dtype = maps.dtype if maps.dtype in (torch.float32, torch.float64) else torch.float32
    matrix = maps.reshape(batch, channels, -1).transpose(1, 2).to(work_dtype)  # (N, Z, K)
    if center:
        matrix = matrix - matrix.mean(1, keepdim=True)
    positions = matrix.shape[1]
    if channels <= positions:
        _, vectors = torch.linalg.eigh(matrix.transpose(1, 2) @ matrix)  # ascending
        projection = (matrix @ vectors[:, :, -1:]).squeeze(-1)  # M v₁
    else:
        values, vectors = torch.linalg.eigh(matrix @ matrix.transpose(1, 2))
        sigma = values[:, -1:].clamp(min=0).sqrt()
        projection = vectors[:, :, -1] * sigma  # σ₁ u₁
    projection = projection * _sign(projection, matrix.sum(2)).unsqueeze(1)
    return projection.to(maps.dtype).reshape((batch, 1) + tuple(spatial))


def _sign(projection: Tensor, channel_sum: Tensor) -> Tensor:
    """+1 or -1 per row: the sign that makes ``cov(p, r) ≥ 0`` (else ``Σ p ≥ 0``)."""
    p = projection - projection.mean(1, keepdim=True)
    r = channel_sum - channel_sum.mean(1, keepdim=True)
    covariance = (p * r).sum(1)
    scale = p.norm(dim=1) * r.norm(dim=1)
    negligible = covariance.abs() <= 1e-6 * scale
    decider = torch.where(negligible, projection.sum(1), covariance)
    return torch.where(decider < 0, -1.0, 1.0).to(projection.dtype)


class LayerEigenCam(LayerCamBase):
    r"""Eigen-CAM: the layer activation projected on its first principal component.

    .. math:: L = \mathrm{reshape}_S(M v_1) = σ_1 u_1,\qquad M = A^\top \in R^{Z×K},
              \; M = U Σ V^\top

    No gradient and no class: the map is **class-agnostic** and ``target`` is ignored (it is
    still validated). One forward pass, then a batched symmetric eigendecomposition
    (see :func:`principal_projection`), with the deterministic sign rule of the spec: the map
    correlates positively with the channel-sum map. No official code exists; the reference
    implementation is pytorch-grad-cam, which centres the columns (``center=True`` here) and
    uses a full SVD. The paper's form, uncentred, is the default.
    ``relu_attributions=False`` (Captum's convention) returns the raw projection.
    """

    needs_gradients = False

    @log_usage(part_of_slo=False)
    def attribute(  # type: ignore[override]
        self,
        inputs: Union[Tensor, tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = False,
        grad_kwargs: Optional[dict[str, Any]] = None,
        center: bool = False,
    ) -> Union[Tensor, tuple[Tensor, ...]]:
        """As :meth:`LayerCamBase.attribute`; ``center`` subtracts each channel's spatial mean
        before the decomposition (default False, the paper's form)."""
        return self._attribute_cam(
            inputs,
            target,
            additional_forward_args,
            attribute_to_layer_input,
            relu_attributions,
            grad_kwargs,
            center=bool(center),
        )

    def _combine(self, activation: Tensor, stats: Any, center: bool = False, **_: Any) -> Tensor:
        return _project(self._projected(activation, stats), center)

    def _projected(self, activation: Tensor, stats: Any) -> Tensor:
        """The ``(N, K, *S)`` tensor whose principal direction is taken."""
        return activation


class LayerEigenGradCam(LayerEigenCam):
    r"""EigenGrad-CAM (pytorch-grad-cam's variant, no paper): Eigen-CAM on ``g ⊙ A``.

    .. math:: L = \mathrm{reshape}_S(M' v_1'),\qquad M' = (g ⊙ A)^\top,\; g = ∂y^c/∂A

    Class-specific (one forward and one backward pass); same sign rule and ``center`` option as
    :class:`LayerEigenCam`. Explain a logit, not a probability.
    """

    needs_gradients = True

    def _projected(self, activation: Tensor, stats: Any) -> Tensor:
        return activation * stats


def _project(maps: Tensor, center: bool) -> Tensor:
    """:func:`principal_projection` for ``(N, K, *S)``; a rank-2 ``(N, K)`` layer is one
    position per example and gives ``(N, 1)``."""
    if maps.dim() == 2:
        return principal_projection(maps.unsqueeze(-1), center).squeeze(-1)
    return principal_projection(maps, center)
