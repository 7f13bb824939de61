"""3D data: slices of a volume through the attribution's peak, with the attribution overlaid."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from captum_ext.visualization._convert import (
    MapLike,
    as_array,
    check_finite,
    map_to_tensor,
    rescale_unit,
    upsample_map,
)
from captum_ext.visualization._display import (
    clear_ticks,
    draw_contour,
    draw_note,
    panel_axes,
    prepare_display,
    top_region,
)

__all__ = ["plot_volume_attribution"]

_AXIS_NAMES = ("d", "h", "w")


def _volume_grey(volume: MapLike) -> np.ndarray:
    """``(D, H, W)``, ``(C, D, H, W)`` or ``(1, C, D, H, W)`` as a ``(D, H, W)`` array in [0, 1]."""
    array, _ = as_array(volume, "volume")
    shape = tuple(array.shape)
    if array.ndim == 5:
        if shape[0] != 1:
            raise ValueError(f"volume has shape {shape}, a batch of {shape[0]}: pass one volume (C, D, H, W).")
        array = array[0]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"volume has shape {shape}; expected (D, H, W), (C, D, H, W) or (1, C, D, H, W).")
    array = array.astype(np.float64)
    check_finite(array, "volume")
    return rescale_unit(array.mean(axis=0))


def _strip_indices(peak: int, size: int, count: int, step: int | None) -> list[int]:
    """``count`` slice indices ``step`` apart inside ``[0, size)``, one of them ``peak``, the strip
    as centred on the peak as the volume allows (``step`` shrinks if the strip cannot fit)."""
    count = min(count, size)
    step = max(1, size // count) if step is None else step
    while True:
        below_max = peak // step  # slices that fit before the peak
        below_min = count - 1 - (size - 1 - peak) // step  # slices that must go before it
        if max(below_min, 0) <= below_max or step == 1:
            below = min(max(count // 2, below_min, 0), below_max)
            return [peak + step * (k - below) for k in range(count)]
        step -= 1


def _slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(array, index, axis=axis)


def plot_volume_attribution(
    volume: MapLike,
    attribution: MapLike,
    ax: Axes | Sequence[Axes] | None = None,
    *,
    mode: str = "orthogonal",
    n_slices: int = 6,
    axis: int = 0,
    slice_step: int | None = None,
    interpolation: str = "trilinear",
    sign: str = "auto",
    cmap: str | Colormap | None = None,
    alpha: float = 0.5,
    colorbar: bool = True,
    contour_top_percent: float | None = None,
    contour_color: str = "white",
    outlier_perc: float = 0.0,
    crosshair: bool = True,
    title: str | None = None,
) -> Figure:
    """Show a volume with its attribution on slices through the attribution's peak.

    Args:
        volume: ``(D, H, W)``, ``(C, D, H, W)`` or ``(1, C, D, H, W)`` (channels are averaged and
            the volume is min-max rescaled for display, e.g. CT Hounsfield units).
        attribution: a layer map ``(1, 1, d, h, w)``, ``(1, d, h, w)`` or ``(d, h, w)`` (or an input
            attribution ``(C, D, H, W)``, channels summed), resized to ``(D, H, W)``.
        ax: one Axes (split into panels) or a sequence of Axes, one per panel (3 for
            ``"orthogonal"``, ``n_slices`` for ``"strip"``); a new Figure otherwise.
        mode: ``"orthogonal"``: the three axis-aligned slices through the peak (d, h and w fixed in
            turn); ``"strip"``: ``n_slices`` slices along ``axis`` (0 = d, 1 = h, 2 = w), ``slice_step``
            apart (default: spread over the volume), one of them through the peak.
        interpolation: ``"trilinear"`` (default), ``"nearest"`` or ``"area"``.
        sign, cmap, alpha, colorbar, contour_top_percent, contour_color, outlier_perc: as in
            :func:`overlay_heatmap`; the colour scale and the top-k% threshold are shared by all
            slices (computed on the whole volume).
        crosshair: mark the peak's position on the orthogonal slices.
        title: written above the panels.

    The peak is the voxel of largest |value| after the sign rule; an all-zero map is drawn through
    the volume's centre with a note.
    """
    if mode not in ("orthogonal", "strip"):
        raise ValueError(f"mode must be 'orthogonal' or 'strip', got {mode!r}.")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (d), 1 (h) or 2 (w), got {axis!r}.")
    if n_slices < 1 or (slice_step is not None and slice_step < 1):
        raise ValueError(f"n_slices and slice_step must be >= 1, got {n_slices} and {slice_step}.")
    grey = _volume_grey(volume)
    raw = map_to_tensor(attribution, 3)
    display = prepare_display(raw.numpy(), upsample_map(raw, grey.shape, interpolation), sign, cmap, outlier_perc)
    if display.norm is None:
        peak = tuple(size // 2 for size in grey.shape)
    else:
        peak = tuple(int(i) for i in np.unravel_index(int(np.argmax(display.magnitude)), grey.shape))
    region = top_region(display, contour_top_percent) if contour_top_percent is not None else None

    if mode == "orthogonal":
        views = [(dim, peak[dim], f"{_AXIS_NAMES[dim]} = {peak[dim]}") for dim in range(3)]
    else:
        views = [(axis, index, f"{_AXIS_NAMES[axis]} = {index}" + (" (peak)" if index == peak[axis] else ""))
                 for index in _strip_indices(peak[axis], grey.shape[axis], n_slices, slice_step)]
    panel_inches = 3.0 if mode == "orthogonal" else 2.2
    size = (panel_inches * len(views) + (1.0 if colorbar else 0.2), panel_inches + 0.8)
    fig, parent, panels, created = panel_axes(ax, len(views), size)

    heat = None
    for panel, (dim, index, label) in zip(panels, views):
        panel.imshow(_slice(grey, dim, index), cmap="gray", vmin=0.0, vmax=1.0)
        if display.norm is not None:
            heat = panel.imshow(_slice(display.values, dim, index), cmap=display.cmap, norm=display.norm,
                                alpha=alpha)
            if region is not None:
                draw_contour(panel, _slice(region, dim, index), contour_color)
        if crosshair and mode == "orthogonal":
            row, col = [peak[other] for other in range(3) if other != dim]
            panel.axhline(row, color="cyan", linewidth=0.7, linestyle="--")
            panel.axvline(col, color="cyan", linewidth=0.7, linestyle="--")
        clear_ticks(panel)
        panel.set_title(label, fontsize=9)
    if heat is None:
        draw_note(panels[0], display.note or "nothing to show")
    elif colorbar:
        bar = fig.colorbar(heat, ax=parent if parent is not None else list(panels), fraction=0.03, pad=0.02)
        bar.set_label(display.label)
        bar.solids.set_alpha(1.0)
    if title is not None:
        if parent is not None:
            parent.set_title(title, pad=20)
        elif created:
            fig.suptitle(title)
        else:
            middle = panels[len(panels) // 2]
            middle.set_title(f"{title}\n{middle.get_title()}", fontsize=9)
    return fig
