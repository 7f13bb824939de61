"""Explanation metrics in torch: batched, per example, for 1D, 2D and 3D data.

Metrics take a model and/or precomputed attributions (or an ``explain`` callable) and return
numbers; they never import a specific attribution method.
"""

from captum_ext.metrics.confidence import (
    ADCCResult,
    ConfidenceScores,
    adcc,
    average_drop,
    average_increase,
    confidence_scores,
    increase_in_confidence,
)
from captum_ext.metrics.deletion_insertion import DeletionInsertionResult, deletion_insertion
from captum_ext.metrics.distributed import distributed_session, evaluate_dataset
from captum_ext.metrics.localisation import (
    energy_pointing_game,
    per_class_mean,
    pointing_game,
    pointing_game_chance,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from captum_ext.metrics.randomisation import (
    RandomisationResult,
    model_parameter_randomisation,
    spearman_correlation,
)
from captum_ext.metrics.road import RoadResult, noisy_linear_imputation, road

__all__ = [
    "ADCCResult",
    "ConfidenceScores",
    "DeletionInsertionResult",
    "RandomisationResult",
    "RoadResult",
    "adcc",
    "average_drop",
    "average_increase",
    "confidence_scores",
    "deletion_insertion",
    "distributed_session",
    "energy_pointing_game",
    "evaluate_dataset",
    "increase_in_confidence",
    "model_parameter_randomisation",
    "noisy_linear_imputation",
    "per_class_mean",
    "pointing_game",
    "pointing_game_chance",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "road",
    "spearman_correlation",
]
