"""A loss on any differentiable attribution: keep attribution mass out of a forbidden region
(or inside an allowed one).

This is the Right-for-the-Right-Reasons idea (Ross et al., IJCAI 2017) applied to the maps of
this package instead of input gradients: a layer method called with
``grad_kwargs={"create_graph": True}`` returns a map that backpropagates to the model's weights
(``relevance-and-learned-rules.md`` §6.1), so a penalty on the map trains the model.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext._captum import TargetType
from captum_ext.losses._common import (
    check_reduction,
    maps_at,
    reduce_per_example,
    spatial_mask_like,
)

__all__ = [
    "AttributionRegionLoss",
    "LogProbabilities",
    "attribution_region_penalty",
    "differentiable_attribution",
    "region_mass_fraction",
]

Explainer = Union[Any, Callable[[Tensor, TargetType], Tensor]]

_TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "abs": torch.abs,
    "relu": F.relu,
    "square": torch.square,
}
_NORMALIZATIONS = ("fraction", "sum", "mean")
_REGIONS = ("forbidden", "allowed")


class LogProbabilities(nn.Module):
    """``log_softmax(model(*inputs), dim=1)``: a forward function to explain ``log p_y``.

    Build the explainer of :class:`AttributionRegionLoss` on it, e.g.
    ``LayerGradCam(LogProbabilities(model), model.features[-1])``; ``model``'s layers stay
    submodules, so layer validation still works. Why: the gradient of ``log p_y`` is
    ``∇z_y − Σ_k p_k ∇z_k``, the direction the decision (and the cross-entropy) uses. A logit's
    map also carries what all classes share, which dilutes the share of the mass on a confounder
    that only *separates* the classes; on the confounded task, penalising logit maps left some
    seeds at 0.52-0.75 decorrelated accuracy, penalising log-probability maps fixed all four
    seeds tried (``benchmarks/results/losses.md``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: Any) -> Tensor:
        return F.log_softmax(self.model(*inputs), dim=1)


def differentiable_attribution(
    explainer: Explainer,
    inputs: Tensor,
    target: TargetType,
    attribute_kwargs: Optional[dict[str, Any]] = None,
) -> Tensor:
    """Call ``explainer`` so that its map keeps the graph to the model's weights.

    ``explainer`` is a Captum-style method instance (anything with ``attribute``: it is called as
    ``attribute(inputs, target=target, grad_kwargs={"create_graph": True}, **attribute_kwargs)``)
    or a callable ``(inputs, target) -> maps`` that returns differentiable maps itself.
    """
    kwargs = dict(attribute_kwargs or {})
    with torch.enable_grad():
        if hasattr(explainer, "attribute"):
            _check_accepts_grad_kwargs(explainer)
            grad_kwargs = {**kwargs.pop("grad_kwargs", {}), "create_graph": True}
            maps = explainer.attribute(inputs, target=target, grad_kwargs=grad_kwargs, **kwargs)
        elif callable(explainer):
            maps = explainer(inputs, target, **kwargs)
        else:
            raise TypeError(
                "explainer must be an attribution method (with .attribute) or a callable "
                f"(inputs, target) -> maps, got {type(explainer).__name__}."
            )
    if isinstance(maps, tuple):
        if len(maps) != 1:
            raise ValueError(
                f"the explainer returned {len(maps)} maps; a region loss needs one map per "
                "example. Explain a layer with a single output."
            )
        maps = maps[0]
    if not isinstance(maps, Tensor):
        raise TypeError(f"the explainer returned {type(maps).__name__}, not a tensor.")
    if not maps.requires_grad:
        raise ValueError(
            "the attribution is not differentiable (it does not require grad): use a method "
            "that honours grad_kwargs={'create_graph': True} (the layer CAMs of captum_ext, "
            "Captum's LayerGradCam), or a callable that keeps the graph; Captum's Saliency, "
            "IntegratedGradients and NoiseTunnel detach their results."
        )
    return maps


def _check_accepts_grad_kwargs(explainer: Any) -> None:
    method = getattr(explainer.attribute, "__wrapped__", explainer.attribute)
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    accepts = "grad_kwargs" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
    if not accepts:
        raise TypeError(
            f"{type(explainer).__name__}.attribute has no grad_kwargs argument, so its maps "
            "cannot keep the graph (create_graph=True). Use a layer method with grad_kwargs (the "
            "layer CAMs of captum_ext, Captum's LayerGradCam), or pass a callable "
            "(inputs, target) -> maps that keeps the graph (e.g. input gradients taken with "
            "torch.autograd.grad(..., create_graph=True))."
        )


def region_mass_fraction(maps: Tensor, region: Tensor, *, transform: str = "abs") -> Tensor:
    """Per-example share of the attribution mass inside ``region``: ``Σ R·φ(m) / Σ φ(m)``.

    ``maps`` is ``(N, 1, *s)`` at any resolution; it is resized to the region's resolution with
    :func:`captum_ext._tensor_ops.upsample` after ``φ = transform`` (``"abs"``, ``"relu"`` or
    ``"square"``). An all-zero map has no mass anywhere, and a share of 0.
    """
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {tuple(_TRANSFORMS)}, got {transform!r}.")
    region = spatial_mask_like(region, maps, name="region")
    mass = maps_at(_TRANSFORMS[transform](maps), region.shape[2:])
    inside = (region * mass).reshape(maps.shape[0], -1).sum(1)
    total = mass.reshape(maps.shape[0], -1).sum(1)
    return inside / total.clamp_min(torch.finfo(total.dtype).tiny)


def attribution_region_penalty(
    maps: Tensor,
    mask: Tensor,
    *,
    region: str = "forbidden",
    transform: str = "abs",
    normalization: str = "fraction",
) -> Tensor:
    r"""Per-example penalty on attribution mass in the wrong place.

    With ``φ = transform(maps)`` resized to the mask and ``B = mask`` (``region="forbidden"``)
    or ``B = 1 − mask`` (``region="allowed"``):

    * ``normalization="fraction"``: ``Σ B·φ / Σ φ``, the share of the mass in the wrong place
      (in [0, 1], independent of the map's scale);
    * ``"sum"``: ``Σ B·φ`` (like Ross et al.'s squared-gradient penalty, scale-dependent);
    * ``"mean"``: ``Σ B·φ / |S|``.
    """
    if region not in _REGIONS:
        raise ValueError(f"region must be one of {_REGIONS}, got {region!r}.")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}."
        )
    bad = spatial_mask_like(mask, maps)
    if region == "allowed":
        bad = 1.0 - bad
    if normalization == "fraction":
        return region_mass_fraction(maps, bad, transform=transform)
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {tuple(_TRANSFORMS)}, got {transform!r}.")
    mass = maps_at(_TRANSFORMS[transform](maps), bad.shape[2:])
    inside = (bad * mass).reshape(maps.shape[0], -1)
    return inside.sum(1) if normalization == "sum" else inside.mean(1)


class AttributionRegionLoss(nn.Module):
    r"""Penalise attribution mass inside a forbidden region (or outside an allowed one).

    .. math::
        L = λ \cdot \frac{\sum_u B_u \, φ(\mathrm{up}(M))_u}{\sum_u φ(\mathrm{up}(M))_u},
        \qquad M = \text{explainer}(x, \text{target}) \text{ with } create\_graph

    where ``up`` resizes the ``(N, 1, *s)`` map to the mask with
    :func:`captum_ext._tensor_ops.upsample` (bilinear/trilinear/linear by rank), ``φ`` is
    ``transform`` (``"abs"`` by default: a negative contribution of the confounder is reliance on
    it too) and ``B`` is the forbidden mask (or ``1 − allowed``). ``normalization`` chooses the
    mass share (default), the raw sum or the mean (see :func:`attribution_region_penalty`).

    Args:
        explainer: a method instance of this package or Captum with ``grad_kwargs`` support
            (``LayerGradCam``, ``LayerHiResCam``, ``LayerGradCamPlusPlus``, ...), built on the
            model being trained; or a callable ``(inputs, target) -> maps`` that keeps the graph.
        lambda_explanation: the weight λ.
        region: ``"forbidden"`` (the mask marks where attribution must not be) or ``"allowed"``
            (the mask marks where it may be).
        attribute_kwargs: extra keyword arguments for ``attribute`` (e.g.
            ``attribute_to_layer_input=True``).

    ``forward(inputs, target, mask)`` returns only the weighted explanation term: add your task
    loss to it. ``target`` is usually the true labels (explain the class the model must get right
    for the right reason). A model can move reliance on the confounder into *other* classes'
    scores, which the target's map does not show; Ross et al. avoid this by explaining the sum of
    all log-probabilities. With a layer method, do the same by building the explainer on
    ``lambda x: model(x).log_softmax(1).sum(1)`` (and ``target=None``), or use several targets.

    **Cost per step**: the explainer runs its own forward pass and one backward pass to the layer
    *with a graph*; ``loss.backward()`` then differentiates through that backward graph (double
    backpropagation). With the task loss's own forward/backward this is about 2 forwards and
    3-4 backward-equivalents, 2-3x a plain step for a small CNN (measured by
    ``benchmarks/bench_losses.py``). The call itself changes nothing on the model: parameters
    move only when your optimizer steps.
    """

    def __init__(
        self,
        explainer: Explainer,
        *,
        lambda_explanation: float = 1.0,
        region: str = "forbidden",
        transform: str = "abs",
        normalization: str = "fraction",
        reduction: str = "mean",
        attribute_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        for name, value, allowed in (
            ("region", region, _REGIONS),
            ("transform", transform, tuple(_TRANSFORMS)),
            ("normalization", normalization, _NORMALIZATIONS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
        if lambda_explanation < 0:
            raise ValueError(f"lambda_explanation must be non-negative, got {lambda_explanation}.")
        self.__dict__["explainer"] = explainer  # not registered: the loss owns no parameters
        self.lambda_explanation = float(lambda_explanation)
        self.region = region
        self.transform = transform
        self.normalization = normalization
        self.reduction = reduction
        self.attribute_kwargs = dict(attribute_kwargs or {})

    def forward(self, inputs: Tensor, target: TargetType, mask: Tensor) -> Tensor:
        """``λ ×`` the reduced region penalty of the maps of ``target`` for ``inputs``."""
        differentiable = torch.is_grad_enabled()
        maps = differentiable_attribution(self.explainer, inputs, target, self.attribute_kwargs)
        penalty = attribution_region_penalty(
            maps,
            mask,
            region=self.region,
            transform=self.transform,
            normalization=self.normalization,
        )
        loss = self.lambda_explanation * reduce_per_example(penalty, self.reduction)
        return loss if differentiable else loss.detach()

    def extra_repr(self) -> str:
        return (
            f"lambda_explanation={self.lambda_explanation}, region={self.region!r}, "
            f"transform={self.transform!r}, normalization={self.normalization!r}"
        )
