"""Data that works offline: real sample photos shipped by installed packages, and synthetic
ground-truth generators."""

from captum_ext.datasets.confounded import CONFOUNDER_COLOURS, ConfoundedShapes, confounded_splits
from captum_ext.datasets.photos import SAMPLE_PHOTOS, load_photo, load_sample_photos
from captum_ext.datasets.synthetic import (
    CUE_SHAPES,
    SyntheticCueData,
    SyntheticCueDataset,
    make_synthetic_cue_data,
)

__all__ = [
    "CONFOUNDER_COLOURS",
    "CUE_SHAPES",
    "SAMPLE_PHOTOS",
    "ConfoundedShapes",
    "SyntheticCueData",
    "SyntheticCueDataset",
    "confounded_splits",
    "load_photo",
    "load_sample_photos",
    "make_synthetic_cue_data",
]
