"""Models that work offline: the pretrained EfficientNet-Lite0 and small synthetic-task models."""

from captum_ext.models.toy import ConvClassifier, TinyViT
from captum_ext.models.efficientnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_efficientnet_lite0,
    preprocess_imagenet,
)

__all__ = [
    "ConvClassifier",
    "TinyViT","IMAGENET_MEAN", "IMAGENET_STD", "load_efficientnet_lite0", "preprocess_imagenet"]
