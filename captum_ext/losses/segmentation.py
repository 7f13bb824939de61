"""Segmentation-style losses for heatmaps against pixel labels.

After Yu et al., "Model Guidance via Explanations Turns Image Classifiers into Segmentation
Models" (TW-autoencoder, World Conference on XAI 2024, arXiv 2407.03009): class heatmaps are
trained like segmentation logits with a pixel cross-entropy over classes (ignore index −1).
TW-autoencoder obtains its heatmaps from an unrolled LRP decoder; here they come from any
differentiable attribution of this package (``relevance-and-learned-rules.md`` §6, the generic
alternative §7.4 names). Only the idea is taken; no code.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_ext.losses._common import check_reduction, maps_at, reduce_per_example
from captum_ext.losses.attribution import Explainer, differentiable_attribution

__all__ = ["HeatmapSegmentationLoss", "class_heatmaps", "heatmap_segmentation_loss"]

_KINDS = ("cross_entropy", "bce", "dice", "bce_dice")
_NORMALIZATIONS = ("max", "sigmoid")


def class_heatmaps(
    explainer: Explainer,
    inputs: Tensor,
    classes: Sequence[int],
    attribute_kwargs: Optional[dict[str, Any]] = None,
) -> Tensor:
    """Differentiable heatmaps ``(N, len(classes), *s)``, one attribution call per class.

    TW-autoencoder runs one decoder pass per class; here each class costs one forward and one
    backward pass with a graph (``create_graph=True``).
    """
    maps = [
        differentiable_attribution(explainer, inputs, int(c), attribute_kwargs) for c in classes
    ]
    return torch.cat(maps, dim=1)


def normalize_heatmap(heatmaps: Tensor, normalization: str = "max") -> Tensor:
    """Heatmaps to pixel probabilities in [0, 1].

    ``"max"``: ``ReLU(h) / max_u ReLU(h)`` per example and channel (scale-free; an all-negative
    map gives 0 everywhere). ``"sigmoid"``: ``σ(h)``, for heatmaps already on a logit scale.
    """
    if normalization == "sigmoid":
        return torch.sigmoid(heatmaps)
    if normalization != "max":
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}.")
    positive = F.relu(heatmaps)
    flat = positive.reshape(positive.shape[0], positive.shape[1], -1)
    peak = flat.amax(-1).clamp_min(torch.finfo(positive.dtype).eps)
    return positive / peak.reshape(peak.shape + (1,) * (positive.dim() - 2))


def heatmap_segmentation_loss(
    heatmaps: Tensor,
    labels: Tensor,
    *,
    kind: str = "cross_entropy",
    normalization: str = "max",
    ignore_index: int = -1,
    smooth: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Per-pixel loss of heatmaps against pixel labels; heatmaps are resized to the labels.

    * ``kind="cross_entropy"`` (TW-autoencoder): ``heatmaps`` ``(N, C, *s)`` holds one heatmap
      per class and ``labels`` ``(N, *S)`` integer class indices; the loss is
      ``−log softmax_c(h)_{y_u}`` averaged over the labelled pixels (``ignore_index`` skipped),
      the heatmaps acting as segmentation logits.
    * ``"bce"``, ``"dice"``, ``"bce_dice"``: ``heatmaps`` ``(N, 1, *s)`` (or ``(N, C, *s)``
      against ``(N, C, *S)``) and binary ``labels`` in {0, 1} (``ignore_index`` skipped); the
      heatmap becomes ``p`` = :func:`normalize_heatmap` and the loss is the binary cross-entropy
      ``−[y log p + (1−y) log(1−p)]`` averaged over labelled pixels, the soft Dice loss
      ``1 − (2 Σ p y + s) / (Σ p + Σ y + s)`` per example (smoothing ``s = smooth``), or their sum.

    Returns the loss reduced over examples (``reduction`` ``"mean"``, ``"sum"`` or ``"none"``).
    """
    check_reduction(reduction)
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}.")
    spatial_rank = heatmaps.dim() - 2
    if spatial_rank < 1:
        raise ValueError(f"heatmaps must be (N, C, *S), got shape {tuple(heatmaps.shape)}.")
    if kind == "cross_entropy":
        if labels.dim() != spatial_rank + 1 or labels.is_floating_point():
            raise ValueError(
                f"kind='cross_entropy' needs integer labels (N, *S) for heatmaps (N, C, *S); got "
                f"labels of shape {tuple(labels.shape)} and dtype {labels.dtype}."
            )
        logits = maps_at(heatmaps, labels.shape[1:])
        labels = labels.to(logits.device).long()
        pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
        valid = (labels != ignore_index).to(pixel.dtype)
        per_example = _masked_mean(pixel, valid)
        return reduce_per_example(per_example, reduction)
    if labels.dim() == spatial_rank + 1:
        labels = labels.unsqueeze(1)
    if labels.dim() != heatmaps.dim():
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match heatmaps {tuple(heatmaps.shape)}."
        )
    labels = labels.to(device=heatmaps.device, dtype=heatmaps.dtype)
    probabilities = normalize_heatmap(maps_at(heatmaps, labels.shape[2:]), normalization)
    valid = (labels != ignore_index).to(heatmaps.dtype)
    target = labels.clamp(0, 1) * valid
    per_example = torch.zeros(heatmaps.shape[0], dtype=heatmaps.dtype, device=heatmaps.device)
    if kind in ("bce", "bce_dice"):
        clamped = probabilities.clamp(1e-6, 1 - 1e-6)
        pixel = -(target * clamped.log() + (1 - target) * (1 - clamped).log())
        per_example = per_example + _masked_mean(pixel, valid)
    if kind in ("dice", "bce_dice"):
        p = (probabilities * valid).reshape(heatmaps.shape[0], -1)
        y = target.reshape(heatmaps.shape[0], -1)
        dice = (2 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)
        per_example = per_example + (1 - dice)
    return reduce_per_example(per_example, reduction)


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    flat_values = (values * valid).reshape(values.shape[0], -1).sum(1)
    count = valid.reshape(valid.shape[0], -1).sum(1)
    return flat_values / count.clamp_min(1.0)


class HeatmapSegmentationLoss(nn.Module):
    """:func:`heatmap_segmentation_loss` as a module: ``forward(heatmaps, labels)``.

    TW-autoencoder's full objective is this pixel cross-entropy plus ``β ×`` a multilabel
    soft-margin loss on the logits (``F.multilabel_soft_margin_loss``); add your classification
    term yourself. Produce differentiable heatmaps with :func:`class_heatmaps` (one attribution
    call per class) or with one method call with ``grad_kwargs={"create_graph": True}``.

    **Cost per step**: the loss itself is a few element-wise operations; the cost is in the
    heatmaps: per class, one forward and one backward with a graph, and ``loss.backward()``
    differentiates through each of those backward graphs (double backpropagation).
    """

    def __init__(
        self,
        *,
        kind: str = "cross_entropy",
        normalization: str = "max",
        ignore_index: int = -1,
        smooth: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}.")
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}."
            )
        self.kind = kind
        self.normalization = normalization
        self.ignore_index = ignore_index
        self.smooth = smooth
        self.reduction = reduction

    def forward(self, heatmaps: Tensor, labels: Tensor) -> Tensor:
        return heatmap_segmentation_loss(
            heatmaps,
            labels,
            kind=self.kind,
            normalization=self.normalization,
            ignore_index=self.ignore_index,
            smooth=self.smooth,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, normalization={self.normalization!r}"
