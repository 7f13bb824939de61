"""Small models for tests, tutorials and synthetic tasks (built in code, no weights needed)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ConvClassifier", "TinyViT"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOL = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class ConvClassifier(nn.Module):
    """``conv → ReLU → … → global average pooling → Linear`` for 1D, 2D or 3D inputs.

    ``model.features[-1]`` (the last ReLU) is the CAM layer: its output ``A`` is pooled straight
    into ``model.fc``, so the closed forms of ``cam-family.md`` hold there (CAM mean = logit −
    bias, Grad-CAM = CAM / Z, ...).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        channels: tuple[int, ...] = (6, 8),
        num_classes: int = 5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [_CONV[spatial_dims](previous, width, 3, padding=1, bias=bias), nn.ReLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = _POOL[spatial_dims](1)
        self.fc = nn.Linear(previous, num_classes, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class TinyViT(nn.Module):
    """A minimal vision transformer: patch embedding, a CLS token, encoder blocks, a linear head.

    ``model.blocks[-1]`` outputs tokens ``(N, 1 + h·w, dim)``; explain it with
    ``reshape_transform=captum_ext.attr.tokens_to_grid(n_prefix=1)``.
    """

    def __init__(
        self,
        image_size: int = 16,
        patch: int = 4,
        in_channels: int = 3,
        dim: int = 16,
        depth: int = 2,
        heads: int = 2,
        num_classes: int = 5,
    ) -> None:
        super().__init__()

        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        count = (image_size // patch) ** 2
        self.position = nn.Parameter(torch.randn(1, 1 + count, dim) * 0.02)
        self.blocks = nn.Sequential(
            *[
                nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, batch_first=True)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:

        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1)
        tokens = self.blocks(tokens + self.position)
        return self.head(self.norm(tokens[:, 0]))
