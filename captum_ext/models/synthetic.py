"""Small trained models for the synthetic cue task (:mod:`captum_ext.datasets.synthetic`).

The weights ship as package data (``captum_ext/models/weights/synthetic_{2d,3d}.pt``, state
dicts only, a few dozen KB) and are produced by ``benchmarks/train_synthetic.py``. Each model is
a :class:`CueClassifier`: like :class:`~captum_ext.models.ConvClassifier` (convolutions, global
average pooling, a linear head, so every CAM method applies at ``model.features[-1]``), with
batch normalisation and 2× max pooling between blocks, which makes it train in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from captum_ext.datasets.synthetic import CUE_SHAPES

__all__ = [
    "CueClassifier",
    "SYNTHETIC_MODEL_CHANNELS",
    "build_synthetic_model",
    "load_synthetic_model",
]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_GAP = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class CueClassifier(nn.Module):
    """``[conv3 → BN → ReLU] → (maxpool2 → conv3 → BN → ReLU)* → GAP → Linear``, 1D/2D/3D.

    ``model.features[-1]`` (the last ReLU, at ``1/2^(len(channels)−1)`` of the input size) is
    the CAM layer; ``model.fc`` the linear head on its global average.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: tuple[int, ...] = (8, 16, 32),
        num_classes: int = 4,
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        layers: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(channels):
            if index > 0:
                layers.append(_MAX[spatial_dims](2))
            layers += [
                _CONV[spatial_dims](previous, width, 3, padding=1),
                _NORM[spatial_dims](width),
                nn.ReLU(),
            ]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = _GAP[spatial_dims](1)
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))

WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Convolution widths of the shipped models, per rank.
SYNTHETIC_MODEL_CHANNELS: dict[int, tuple[int, ...]] = {2: (8, 16, 32), 3: (8, 16, 32)}


def build_synthetic_model(spatial_dims: int = 2) -> CueClassifier:
    """An untrained model with the architecture of the shipped one (for training)."""
    if spatial_dims not in SYNTHETIC_MODEL_CHANNELS:
        raise ValueError(f"synthetic models exist for spatial_dims 2 and 3, got {spatial_dims}.")
    return CueClassifier(
        spatial_dims=spatial_dims,
        in_channels=1,
        channels=SYNTHETIC_MODEL_CHANNELS[spatial_dims],
        num_classes=len(CUE_SHAPES),
    )


def load_synthetic_model(spatial_dims: int = 2) -> CueClassifier:
    """The trained classifier for the synthetic cue task, in eval mode, on the CPU.

    It takes ``(N, 1, 32, 32)`` (2D) or ``(N, 1, 14, 14, 14)`` (3D) images from
    :func:`captum_ext.datasets.make_synthetic_cue_data` and returns 4 logits (plus, diagonal,
    frame, ball). The CAM layer is ``model.features[-1]`` (8×8 in 2D, 3×3×3 in 3D). Weights
    load with ``torch.load(weights_only=True)``.
    """
    model = build_synthetic_model(spatial_dims)
    path = WEIGHTS_DIR / f"synthetic_{spatial_dims}d.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; the package data was not installed. Re-install captum-ext, or "
            "train it with `python benchmarks/train_synthetic.py`."
        )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
