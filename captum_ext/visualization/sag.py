"""Drawing a Structured Attention Graph with matplotlib only (no Graphviz).

Layout: one column block per root (its subtree laid out by leaf order), one row per depth; each
node is the image with its revealed patches bright and the rest dimmed to 10 %, titled with its
relative confidence; the patch removed on the way from the parent is outlined in red, thicker for
larger confidence drops (spec §5.2: < 20, < 60, otherwise).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from captum_ext.visualization._convert import image_to_hwc

__all__ = ["plot_sag"]


def _image_hwc(image: Any) -> np.ndarray:
    # image_to_hwc keeps the colour channels (to_captum_hwc is for maps: it sums them)
    array = image_to_hwc(image, rescale=True) if isinstance(image, Tensor) else np.asarray(
        image, dtype=float)
    array = np.asarray(array, dtype=float)
    if array.ndim == 2:
        array = array[..., None]
    low, high = float(array.min()), float(array.max())
    array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., :3]


def _node_image(image: np.ndarray, patches: tuple[int, ...], grid: tuple[int, int]) -> np.ndarray:
    cells = torch.zeros(grid[0] * grid[1])
    if patches:
        cells[list(patches)] = 1.5
    up = torch.nn.functional.interpolate(cells.reshape(1, 1, *grid), size=image.shape[:2],
                                         mode="bilinear", align_corners=True)[0, 0].numpy()
    return np.clip(image * np.maximum(up, 0.1)[..., None], 0.0, 1.0)


def plot_sag(result: Any, image: Any, ax: Optional[Axes] = None, *, max_depth: Optional[int] = 2,
             node_size: float = 1.6, title: Optional[str] = None,
             background: str = "black") -> Figure:
    """Draw ``result`` (a :class:`~captum_ext.structures.SAGResult` of a 2D input) over ``image``
    (``(C, H, W)``/``(1, C, H, W)`` tensor or ``(H, W[, C])`` array; min-max scaled for display).

    Args:
        ax: an Axes to draw into (its figure is returned); ``None`` makes a new Agg figure.
        max_depth: levels of expansion drawn below the roots (``None``: all).
        node_size: inches per node on a new figure.
    """
    if len(result.grid_shape) != 2:
        raise ValueError(f"plot_sag draws 2D grids, got grid shape {result.grid_shape}.")
    grid = tuple(int(g) for g in result.grid_shape)
    picture = _image_hwc(image[0] if isinstance(image, Tensor) and image.dim() == 4 else image)
    nodes = {n.id: n for n in result.nodes}
    seen: set[int] = set()

    def children(node_id: int) -> list[tuple[int, int, float]]:
        node = nodes[node_id]
        if max_depth is not None and node.depth >= max_depth:
            return []
        return list(node.children)

    positions: dict[int, tuple[float, int]] = {}
    next_leaf = [0.0]

    def layout(node_id: int) -> float:
        kids = [c for c in children(node_id) if c[0] not in seen]
        seen.add(node_id)
        for c in kids:
            seen.add(c[0])
        if not kids:
            x = next_leaf[0]
            next_leaf[0] += 1.0
        else:
            xs = [layout(c[0]) for c in kids]
            x = (xs[0] + xs[-1]) / 2
        positions[node_id] = (x, nodes[node_id].depth)
        return x

    roots = [n.id for n in result.nodes if n.is_root]
    for root in roots:
        layout(root)
        next_leaf[0] += 0.3
    width = max(next_leaf[0] - 0.3, 1.0)
    depth = max((d for _, d in positions.values()), default=0) + 1
    if ax is None:
        fig = Figure(figsize=(node_size * width + 0.4, node_size * 1.25 * depth + 0.6))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92)
    fig = ax.figure
    ax.set_facecolor(background)
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(depth * 1.25 - 0.55, -0.75)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else
                 f"SAG, target {result.target}, p_full = {result.p_full:.2f}: {result.dnf}",
                 fontsize=8, color="white" if background == "black" else "black")
    height, width_px = picture.shape[:2]
    for node_id, (x, d) in positions.items():
        node = nodes[node_id]
        y = d * 1.25
        extent = (x - 0.45, x + 0.45, y + 0.45, y - 0.45)
        ax.imshow(_node_image(picture, node.patches, grid), extent=extent, zorder=2)
        ax.add_patch(Rectangle((x - 0.45, y - 0.45), 0.9, 0.9, fill=False, zorder=3,
                               edgecolor="white", linewidth=3 if node.is_root else 1))
        ax.text(x, y - 0.5, f"{node.percent}%", ha="center", va="bottom", color="white",
                fontsize=8, zorder=4, bbox=dict(facecolor="black", edgecolor="none", pad=0.5))
        for child_id, removed, drop in children(node_id):
            if child_id not in positions:
                continue
            cx, cd = positions[child_id]
            ax.annotate("", xy=(cx, cd * 1.25 - 0.52), xytext=(x, y + 0.47), zorder=1,
                        arrowprops=dict(arrowstyle="->", color="white", linewidth=1))
            row, col = divmod(removed, grid[1])
            cell_w, cell_h = 0.9 / grid[1], 0.9 / grid[0]
            thickness = 1.0 if drop < 20 else 2.0 if drop < 60 else 3.5
            ax.add_patch(Rectangle((cx - 0.45 + col * cell_w, cd * 1.25 - 0.45 + row * cell_h),
                                   cell_w, cell_h, fill=False, edgecolor="red",
                                   linewidth=thickness, zorder=5))
    return fig
