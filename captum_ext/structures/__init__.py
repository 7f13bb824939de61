"""Structured explanations: Structured Attention Graphs (SAG), sub-explanation counting and
cross-testing, per example and dataset-wide (sharded with ``torch.distributed``)."""

from captum_ext.structures.sag import (
    Explanation,
    SAGEdge,
    SAGNode,
    SAGResult,
    StructuredAttentionGraph,
)

__all__ = ["Explanation", "SAGEdge", "SAGNode", "SAGResult", "StructuredAttentionGraph"]
