"""Data that works offline: real sample photos shipped by installed packages, and synthetic
ground-truth generators."""

from captum_ext.datasets.photos import SAMPLE_PHOTOS, load_photo, load_sample_photos

__all__ = ["SAMPLE_PHOTOS", "load_photo", "load_sample_photos"]
