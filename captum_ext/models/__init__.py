"""Models that work offline: the pretrained EfficientNet-Lite0 and small synthetic-task models."""

from captum_ext.models.toy import ConvClassifier, TinyViT
from captum_ext.models.efficientnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_efficientnet_lite0,
    preprocess_imagenet,
)
from captum_ext.models.synthetic import CueClassifier, load_synthetic_model

__all__ = [
    "ConvClassifier",
    "CueClassifier",
    "TinyViT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_efficientnet_lite0",
    "load_synthetic_model",
    "preprocess_imagenet",
]
