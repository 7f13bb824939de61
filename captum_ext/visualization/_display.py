"""Colour scaling and figure plumbing shared by the plotting functions (no pyplot).

Sign handling follows ``captum.attr.visualization`` (``positive``, ``negative``, ``absolute``,
``all``) plus ``auto``, which picks ``all`` for a signed map and the one sign present otherwise.
Signed maps use a diverging colormap centred at 0 (symmetric limits); one-signed maps use a
sequential one, brightest at the largest magnitude.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

SIGNS = ("auto", "positive", "negative", "absolute", "all")
_SIGN_ALIASES = {"absolute_value": "absolute"}  # Captum's spelling
DEFAULT_CMAPS = {"all": "RdBu_r", "positive": "inferno", "absolute": "inferno", "negative": "inferno_r"}
COLORBAR_LABELS = {
    "all": "attribution",
    "positive": "attribution (positive part)",
    "negative": "attribution (negative part)",
    "absolute": "|attribution|",
}
_ONE_SIGN_TOLERANCE = 1e-6  # opposite-sign values below this fraction of max |map| count as noise


@dataclass(frozen=True)
class Display:
    """What to draw for one map: the values after the sign rule, a colormap and a norm.

    ``norm`` is None when nothing is left to show (an all-zero map, or no value of the chosen
    sign); ``note`` then says why.
    """

    values: np.ndarray
    sign: str
    cmap: Colormap
    norm: Normalize | None
    note: str | None

    @property
    def magnitude(self) -> np.ndarray:
        return np.abs(self.values)

    @property
    def label(self) -> str:
        return COLORBAR_LABELS[self.sign]


def resolve_sign(raw: np.ndarray, sign: str) -> str:
    """The sign rule to apply: ``auto`` looks at the raw (layer-resolution) map."""
    sign = _SIGN_ALIASES.get(sign, sign)
    if sign not in SIGNS:
        raise ValueError(f"sign={sign!r} is not one of {', '.join(map(repr, SIGNS))}.")
    if sign != "auto":
        return sign
    peak = float(np.abs(raw).max()) if raw.size else 0.0
    tolerance = peak * _ONE_SIGN_TOLERANCE
    if float(raw.min()) >= -tolerance:
        return "positive"
    if float(raw.max()) <= tolerance:
        return "negative"
    return "all"


def _scale(magnitude: np.ndarray, outlier_perc: float) -> float:
    """The value shown at full colour: max |value|, or the |value| below which ``100 - outlier_perc``
    percent of the total attribution mass lies (Captum's outlier rule)."""
    if not 0 <= outlier_perc < 100:
        raise ValueError(f"outlier_perc must be in [0, 100), got {outlier_perc}.")
    if outlier_perc == 0:
        return float(magnitude.max())
    ordered = np.sort(magnitude.ravel())
    mass = np.cumsum(ordered)
    if mass[-1] == 0:
        return 0.0
    index = int(np.searchsorted(mass, mass[-1] * (1 - outlier_perc / 100.0)))
    return float(ordered[min(index, ordered.size - 1)])


def prepare_display(
    raw: np.ndarray,
    upsampled: np.ndarray,
    sign: str = "auto",
    cmap: str | Colormap | None = None,
    outlier_perc: float = 0.0,
) -> Display:
    """Apply the sign rule to ``upsampled`` (the rule is chosen on ``raw``) and build the colour norm."""
    resolved = resolve_sign(raw, sign)
    if resolved == "positive":
        values = np.maximum(upsampled, 0.0)
    elif resolved == "negative":
        values = np.minimum(upsampled, 0.0)
    elif resolved == "absolute":
        values = np.abs(upsampled)
    else:
        values = upsampled
    colormap = colormaps[cmap] if isinstance(cmap, str) else cmap
    if colormap is None:
        colormap = colormaps[DEFAULT_CMAPS[resolved]]
    scale = _scale(np.abs(values), outlier_perc)
    note = None
    if not scale > 0:
        note = "all-zero attribution" if not np.any(raw) else f"no {resolved} attribution"
        logger.info("nothing to draw: %s", note)
        return Display(values, resolved, colormap, None, note)
    low, high = {"all": (-scale, scale), "negative": (-scale, 0.0)}.get(resolved, (0.0, scale))
    return Display(values, resolved, colormap, Normalize(vmin=low, vmax=high, clip=True), None)


def top_region(display: Display, top_percent: float) -> np.ndarray | None:
    """Boolean mask of the top ``top_percent`` % of |values| (ties at the threshold included)."""
    if not 0 < top_percent <= 100:
        raise ValueError(f"contour_top_percent must be in (0, 100], got {top_percent}.")
    if display.norm is None:
        return None
    magnitude = display.magnitude
    threshold = np.quantile(magnitude, 1.0 - top_percent / 100.0)
    mask = (magnitude >= threshold) & (magnitude > 0)
    return mask if mask.any() and not mask.all() else None


def draw_contour(ax: Axes, mask: np.ndarray | None, color: str) -> None:
    """Outline a region given as a mask over an ``imshow``-ed array (pixel centres at integers)."""
    if mask is not None:
        ax.contour(mask.astype(np.float64), levels=[0.5], colors=[color], linewidths=1.5)


def draw_note(ax: Axes, note: str, fontsize: float = 9) -> None:
    """Write a note in the middle of an Axes (used for blank maps instead of raising)."""
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=fontsize,
            color="black", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})


def new_figure(figsize: tuple[float, float], **kwargs: Any) -> Figure:
    """A Figure with an Agg canvas: no pyplot, no GUI backend, ``fig.canvas.draw()`` works."""
    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def root_figure(ax: Axes) -> Figure:
    fig: Any = ax.figure
    while not isinstance(fig, Figure):  # an Axes in a SubFigure
        fig = fig.figure
    return fig


def check_axes(ax: Any, name: str = "ax") -> Axes:
    if not isinstance(ax, Axes):
        raise TypeError(f"{name} must be a matplotlib Axes, got {type(ax)}.")
    return ax


def panel_axes(
    ax: Axes | Sequence[Axes] | None,
    count: int,
    figsize: tuple[float, float],
    *,
    vertical: bool = False,
    ratios: Sequence[float] | None = None,
) -> tuple[Figure, Axes | None, list[Axes], bool]:
    """Axes for a multi-panel plot: returns ``(figure, parent, panels, created)``.

    ``ax=None`` makes a new figure with ``count`` panels (``created`` is True); one Axes is split
    into ``count`` inset panels (the parent is hidden, and colorbars attach to it); a sequence of
    ``count`` Axes is used as is (parent None).
    """
    if ax is None:
        fig = new_figure(figsize, layout="constrained")
        shape = (count, 1) if vertical else (1, count)
        ratio_key = "height_ratios" if vertical else "width_ratios"
        grid = fig.subplots(*shape, squeeze=False, sharex=vertical, gridspec_kw={ratio_key: ratios})
        return fig, None, list(grid.ravel()), True
    if not isinstance(ax, Axes):
        panels = list(np.asarray(ax, dtype=object).ravel())
        if len(panels) != count:
            raise ValueError(f"ax has {len(panels)} Axes; this plot needs {count} (or one Axes to split).")
        for panel in panels:
            check_axes(panel)
        return root_figure(panels[0]), None, panels, False
    parent = ax
    parent.set_axis_off()
    weights = np.asarray(ratios if ratios is not None else [1.0] * count, dtype=np.float64)
    edges = np.concatenate([[0.0], np.cumsum(weights / weights.sum())])
    gap = 0.06 if vertical else 0.04
    panels = []
    for index in range(count):
        start, stop = edges[index], edges[index + 1]
        if vertical:  # first panel on top
            bounds = [0.0, 1.0 - stop + gap / 2, 1.0, stop - start - gap]
        else:
            bounds = [start + gap / 2, 0.0, stop - start - gap, 0.9]
        panels.append(parent.inset_axes(bounds))
    if vertical:
        for panel in panels[1:]:
            panel.sharex(panels[0])
    return root_figure(parent), parent, panels, False


def clear_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
