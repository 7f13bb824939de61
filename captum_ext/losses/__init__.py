"""Losses that train models through their explanations.

* :class:`RightForTheRightReasonsLoss`: Ross et al. (IJCAI 2017), a penalty on input gradients
  of the summed log-probabilities inside annotated regions.
* :class:`AttributionRegionLoss`: the same idea on any differentiable attribution of this
  package (layer CAMs called with ``grad_kwargs={"create_graph": True}``), penalising mass
  inside a forbidden region or outside an allowed one.
* :class:`HeatmapSegmentationLoss`: heatmaps trained against pixel labels (cross-entropy over
  class heatmaps as in TW-autoencoder, or BCE/soft-Dice on normalised heatmaps).

Each plugs into an ordinary training loop; each docstring gives its cost per step, and
``benchmarks/bench_losses.py`` measures it.
"""

from captum_ext.losses._common import ExplanationLossTerms
from captum_ext.losses.attribution import (
    AttributionRegionLoss,
    LogProbabilities,
    attribution_region_penalty,
    differentiable_attribution,
    region_mass_fraction,
)
from captum_ext.losses.right_reasons import (
    RightForTheRightReasonsLoss,
    input_gradient_penalty,
    right_for_the_right_reasons,
)
from captum_ext.losses.segmentation import (
    HeatmapSegmentationLoss,
    class_heatmaps,
    heatmap_segmentation_loss,
    normalize_heatmap,
)

__all__ = [
    "AttributionRegionLoss",
    "ExplanationLossTerms",
    "HeatmapSegmentationLoss",
    "LogProbabilities",
    "RightForTheRightReasonsLoss",
    "attribution_region_penalty",
    "class_heatmaps",
    "differentiable_attribution",
    "heatmap_segmentation_loss",
    "input_gradient_penalty",
    "normalize_heatmap",
    "region_mass_fraction",
    "right_for_the_right_reasons",
]
