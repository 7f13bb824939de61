"""Rendering helpers: draw figures headless (Agg) and read their pixels back."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def render(fig: Figure) -> np.ndarray:
    """The figure's RGBA pixels as floats in [0, 1], shape (rows, cols, 4)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).astype(np.float64) / 255.0


def axes_pixels(fig: Figure, ax: Axes, inset: int = 2) -> np.ndarray:
    """The rendered RGB pixels inside ``ax`` (its window extent, ``inset`` pixels in from the edge)."""
    pixels = render(fig)
    box = ax.get_window_extent()
    rows = pixels.shape[0]
    top, bottom = int(np.ceil(rows - box.y1)) + inset, int(np.floor(rows - box.y0)) - inset
    left, right = int(np.ceil(box.x0)) + inset, int(np.floor(box.x1)) - inset
    return pixels[top:bottom, left:right, :3]


def new_axes(ncols: int = 1, figsize: tuple[float, float] = (3.0, 3.0)) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=figsize, dpi=50)
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(1, ncols))


def half_map(size: int = 8, high_side: str = "left", low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """A (1, 1, size, size) map that is ``high`` on one half and ``low`` on the other."""
    cam = torch.full((1, 1, size, size), low)
    if high_side == "left":
        cam[..., : size // 2] = high
    else:
        cam[..., size // 2 :] = high
    return cam
