"""Explanation metrics in torch: they take attributions and return numbers, and never import a
specific method."""

from captum_ext.metrics.deletion_insertion import DeletionInsertionResult, deletion_insertion

__all__ = ["DeletionInsertionResult", "deletion_insertion"]
