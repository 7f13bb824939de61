"""Structured explanations: Structured Attention Graphs (SAG), sub-explanation counting and
cross-testing, per example and dataset-wide (sharded with ``torch.distributed``)."""

from captum_ext.structures.counting import (
    SubExplanationCounts,
    count_sub_explanations,
    count_sub_explanations_dataset,
)
from captum_ext.structures.crosstest import (
    CrossTestResult,
    cross_test,
    cross_test_dataset,
    region_masks,
)
from captum_ext.structures.sag import (
    Explanation,
    SAGEdge,
    SAGNode,
    SAGResult,
    StructuredAttentionGraph,
)

__all__ = [
    "CrossTestResult",
    "Explanation",
    "SAGEdge",
    "SAGNode",
    "SAGResult",
    "StructuredAttentionGraph",
    "SubExplanationCounts",
    "count_sub_explanations",
    "count_sub_explanations_dataset",
    "cross_test",
    "cross_test_dataset",
    "region_masks",
]
