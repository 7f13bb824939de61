"""Data that works offline: real sample photos shipped by installed packages, and synthetic
ground-truth generators."""

from captum_ext.datasets.photos import SAMPLE_PHOTOS, load_photo, load_sample_photos

__all__ = ["SAMPLE_PHOTOS", "load_photo", "load_sample_photos"]
from captum_ext.datasets.confounded import (  # noqa: E402
    CONFOUNDER_COLOURS,
    ConfoundedShapes,
    confounded_splits,
)

__all__ += ["CONFOUNDER_COLOURS", "ConfoundedShapes", "confounded_splits"]
