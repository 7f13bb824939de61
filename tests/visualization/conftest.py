"""Fixtures for the visualisation tests; the Agg backend is selected before pyplot can load."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def grey_image() -> torch.Tensor:
    return torch.full((3, 40, 40), 0.5)


@pytest.fixture
def photo_like() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    base = torch.stack([xx, yy, 0.5 * (xx + yy)])
    return (0.8 * base + 0.2 * torch.rand(3, 48, 64, generator=generator)).clamp(0, 1)
